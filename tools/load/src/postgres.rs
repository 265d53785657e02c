//! Targets `pg-lock` and `pg-cond`: PostgreSQL with `synchronous_commit = on`.
//! - `pg-lock`: `SELECT … FOR UPDATE` + `UPDATE` + `INSERT`s per step, in a transaction;
//! - `pg-cond`: one conditional `UPDATE … WHERE remaining >= $n RETURNING` statement per step, with
//!   the reservation and ledger inserts in the same statement.
//!
//! Schema: `benches/baselines/schema.sql`.

use crate::{BALANCE, HOT_USER};
use anyhow::{Context, Result, anyhow, bail};

const SCHEMA_SQL: &str = include_str!("../../../benches/baselines/schema.sql");

struct PgStatements {
    lock_balance: tokio_postgres::Statement,
    hold: tokio_postgres::Statement,
    insert_res: tokio_postgres::Statement,
    insert_ledger: tokio_postgres::Statement,
    lock_res: tokio_postgres::Statement,
    settle: tokio_postgres::Statement,
    mark_committed: tokio_postgres::Statement,
    insert_grant: tokio_postgres::Statement,
    add_credit: tokio_postgres::Statement,
    cond_reserve: tokio_postgres::Statement,
    cond_commit: tokio_postgres::Statement,
    cond_grant: tokio_postgres::Statement,
    usage: tokio_postgres::Statement,
}

pub struct PgConn {
    client: tokio_postgres::Client,
    st: PgStatements,
    lock: bool,
}

const PG_SQL: &[(&str, &str)] = &[
    (
        "lock_balance",
        "SELECT remaining FROM balances WHERE user_id = $1 FOR UPDATE",
    ),
    (
        "hold",
        "UPDATE balances SET remaining = remaining - $2, reserved = reserved + $2 WHERE user_id = $1",
    ),
    (
        "insert_res",
        "INSERT INTO reservations (user_id, amount, status) VALUES ($1, $2, 'pending') RETURNING id",
    ),
    (
        "insert_ledger",
        "INSERT INTO ledger (user_id, type, amount, reservation_id) VALUES ($1, $2, $3, $4)",
    ),
    (
        "lock_res",
        "SELECT user_id, amount, status FROM reservations WHERE id = $1 FOR UPDATE",
    ),
    (
        "settle",
        "UPDATE balances SET reserved = reserved - $2 WHERE user_id = $1",
    ),
    (
        "mark_committed",
        "UPDATE reservations SET status = 'committed' WHERE id = $1",
    ),
    (
        "insert_grant",
        "INSERT INTO grants (user_id, external_ref, amount) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    ),
    (
        "add_credit",
        "UPDATE balances SET remaining = remaining + $2 WHERE user_id = $1",
    ),
    (
        "cond_reserve",
        "WITH b AS (UPDATE balances SET remaining = remaining - $2, reserved = reserved + $2 \
           WHERE user_id = $1 AND remaining >= $2 RETURNING user_id), \
         r AS (INSERT INTO reservations (user_id, amount, status) \
           SELECT user_id, $2, 'pending' FROM b RETURNING id, user_id), \
         l AS (INSERT INTO ledger (user_id, type, amount, reservation_id) \
           SELECT user_id, 'usage.reserved', $2, id FROM r) \
         SELECT id FROM r",
    ),
    (
        "cond_commit",
        "WITH r AS (UPDATE reservations SET status = 'committed' \
           WHERE id = $1 AND status = 'pending' RETURNING user_id, amount), \
         b AS (UPDATE balances SET reserved = balances.reserved - r.amount FROM r \
           WHERE balances.user_id = r.user_id RETURNING balances.user_id), \
         l AS (INSERT INTO ledger (user_id, type, amount, reservation_id) \
           SELECT user_id, 'usage.committed', amount, $1 FROM r) \
         SELECT user_id FROM b",
    ),
    (
        "cond_grant",
        "WITH g AS (INSERT INTO grants (user_id, external_ref, amount) VALUES ($1, $2, $3) \
           ON CONFLICT DO NOTHING RETURNING user_id), \
         b AS (UPDATE balances SET remaining = remaining + $3 FROM g \
           WHERE balances.user_id = g.user_id RETURNING balances.user_id), \
         l AS (INSERT INTO ledger (user_id, type, amount) \
           SELECT user_id, 'credits.granted', $3 FROM b) \
         SELECT 1",
    ),
    (
        "usage",
        "SELECT remaining, reserved FROM balances WHERE user_id = $1",
    ),
];

async fn pg_connect(conn_str: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl PgConn {
    /// Connects and prepares every statement; `lock` picks the `pg-lock` variant.
    pub async fn connect(conn_str: &str, lock: bool) -> Result<PgConn> {
        let client = pg_connect(conn_str).await?;
        let mut st = Vec::new();
        for (_, sql) in PG_SQL {
            st.push(client.prepare(sql).await.with_context(|| sql.to_string())?);
        }
        let mut st = st.into_iter();
        let mut next = || st.next().expect("statement");
        let st = PgStatements {
            lock_balance: next(),
            hold: next(),
            insert_res: next(),
            insert_ledger: next(),
            lock_res: next(),
            settle: next(),
            mark_committed: next(),
            insert_grant: next(),
            add_credit: next(),
            cond_reserve: next(),
            cond_commit: next(),
            cond_grant: next(),
            usage: next(),
        };
        Ok(PgConn { client, st, lock })
    }

    pub async fn reserve(&mut self, user: &str) -> Result<i64> {
        let (p, amount) = (self, 1i64);
        if p.lock {
            let tx = p.client.transaction().await?;
            let row = tx
                .query_opt(&p.st.lock_balance, &[&user])
                .await?
                .ok_or_else(|| anyhow!("no balance for {user}"))?;
            let remaining: i64 = row.get(0);
            if remaining < amount {
                tx.rollback().await?;
                bail!("denied: remaining {remaining}");
            }
            tx.execute(&p.st.hold, &[&user, &amount]).await?;
            let id: i64 = tx
                .query_one(&p.st.insert_res, &[&user, &amount])
                .await?
                .get(0);
            tx.execute(
                &p.st.insert_ledger,
                &[&user, &"usage.reserved", &amount, &Some(id)],
            )
            .await?;
            tx.commit().await?;
            Ok(id)
        } else {
            match p
                .client
                .query_opt(&p.st.cond_reserve, &[&user, &amount])
                .await?
            {
                Some(row) => Ok(row.get(0)),
                None => bail!("denied"),
            }
        }
    }

    pub async fn commit(&mut self, id: i64) -> Result<()> {
        let p = self;
        if p.lock {
            let tx = p.client.transaction().await?;
            let row = tx
                .query_opt(&p.st.lock_res, &[&id])
                .await?
                .ok_or_else(|| anyhow!("no reservation {id}"))?;
            let user: String = row.get(0);
            let amount: i64 = row.get(1);
            let status: String = row.get(2);
            if status != "pending" {
                tx.rollback().await?;
                bail!("reservation {id} is {status}");
            }
            tx.query_one(&p.st.lock_balance, &[&user]).await?;
            tx.execute(&p.st.settle, &[&user, &amount]).await?;
            tx.execute(&p.st.mark_committed, &[&id]).await?;
            tx.execute(
                &p.st.insert_ledger,
                &[&user, &"usage.committed", &amount, &Some(id)],
            )
            .await?;
            tx.commit().await?;
        } else if p
            .client
            .query_opt(&p.st.cond_commit, &[&id])
            .await?
            .is_none()
        {
            bail!("reservation {id} not pending");
        }
        Ok(())
    }

    pub async fn usage(&mut self, user: &str) -> Result<()> {
        self.client
            .query_opt(&self.st.usage, &[&user])
            .await?
            .ok_or_else(|| anyhow!("no balance for {user}"))?;
        Ok(())
    }

    /// Adds a pack's worth to the user's one balance row, once per `external_ref`.
    pub async fn grant(&mut self, user: &str, external_ref: &str) -> Result<()> {
        let p = self;
        if p.lock {
            let tx = p.client.transaction().await?;
            let n = tx
                .execute(&p.st.insert_grant, &[&user, &external_ref, &BALANCE])
                .await?;
            if n == 1 {
                tx.query_one(&p.st.lock_balance, &[&user]).await?;
                tx.execute(&p.st.add_credit, &[&user, &BALANCE]).await?;
                tx.execute(
                    &p.st.insert_ledger,
                    &[&user, &"credits.granted", &BALANCE, &None::<i64>],
                )
                .await?;
            }
            tx.commit().await?;
        } else {
            p.client
                .query_one(&p.st.cond_grant, &[&user, &external_ref, &BALANCE])
                .await?;
        }
        Ok(())
    }
}

/// Recreates the schema with `users` users (and the hot one) holding a billion each, and checks
/// that the server commits durably.
pub async fn pg_reset(conn_str: &str, users: u64) -> Result<()> {
    let client = pg_connect(conn_str).await?;
    client.batch_execute(SCHEMA_SQL).await?;
    client
        .execute(
            "INSERT INTO balances (user_id, remaining, reserved) \
             SELECT 'u' || g, $1::bigint, 0 FROM generate_series(0, $2::bigint - 1) g",
            &[&BALANCE, &(users as i64)],
        )
        .await?;
    client
        .execute(
            "INSERT INTO balances (user_id, remaining, reserved) VALUES ($1, $2::bigint, 0)",
            &[&HOT_USER, &BALANCE],
        )
        .await?;
    client.batch_execute("VACUUM ANALYZE").await?;
    client.batch_execute("CHECKPOINT").await?;
    let sc: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .get(0);
    let fsync: String = client.query_one("SHOW fsync", &[]).await?.get(0);
    println!("  postgres: synchronous_commit = {sc}, fsync = {fsync}");
    if sc != "on" || fsync != "on" {
        bail!("PostgreSQL must run with synchronous_commit = on and fsync = on");
    }
    Ok(())
}
