//! Targets `redis-always` and `redis-everysec`: Redis with `appendonly yes` and `appendfsync
//! always` (durable) or `everysec` (loses up to a second). One Lua script per step
//! (`benches/baselines/vevee.lua`, EVALSHA): check, hold, commit, a ledger entry (`XADD`).

use crate::suite::user_of;
use crate::{BALANCE, REQUEST_TIMEOUT};
use anyhow::{Result, bail};
use std::sync::Arc;
use std::time::Duration;

pub const REDIS_LUA: &str = include_str!("../../../benches/baselines/vevee.lua");

pub struct RedisConn {
    conn: redis::aio::MultiplexedConnection,
    script: Arc<redis::Script>,
}

impl RedisConn {
    pub async fn connect(addr: &str, script: Arc<redis::Script>) -> Result<RedisConn> {
        let client = redis::Client::open(format!("redis://{addr}/"))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(REQUEST_TIMEOUT))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(RedisConn { conn, script })
    }

    pub async fn reserve(&mut self, user: &str) -> Result<i64> {
        let id: i64 = self
            .script
            .key(format!("b:{user}"))
            .arg("reserve")
            .arg(user)
            .arg(1)
            .invoke_async(&mut self.conn)
            .await?;
        if id < 0 {
            bail!("denied ({id})");
        }
        Ok(id)
    }

    pub async fn commit(&mut self, id: i64) -> Result<()> {
        let n: i64 = self
            .script
            .key(format!("res:{id}"))
            .arg("commit")
            .arg(id)
            .invoke_async(&mut self.conn)
            .await?;
        if n != 1 {
            bail!("commit {id}: {n}");
        }
        Ok(())
    }

    /// Hold and commit in one script, two ledger rows (as vevee's `POST /v1/consume`).
    pub async fn consume(&mut self, user: &str) -> Result<()> {
        let id: i64 = self
            .script
            .key(format!("b:{user}"))
            .arg("consume")
            .arg(1)
            .invoke_async(&mut self.conn)
            .await?;
        if id < 0 {
            bail!("denied ({id})");
        }
        Ok(())
    }

    pub async fn usage(&mut self, user: &str) -> Result<()> {
        let _: (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(format!("b:{user}"))
            .arg("remaining")
            .arg("reserved")
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }

    pub async fn grant(&mut self, user: &str, external_ref: &str) -> Result<()> {
        let _: i64 = self
            .script
            .key(format!("b:{user}"))
            .arg("grant")
            .arg(user)
            .arg(external_ref)
            .arg(BALANCE)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(())
    }
}

/// Empties the server, checks its fsync policy, and gives `users` users (and the hot one) a
/// billion each.
pub async fn redis_reset(addr: &str, users: u64, expect_fsync: &str) -> Result<()> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    let aof: (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async::<Vec<String>>(&mut conn)
        .await
        .map(|v| (v[0].clone(), v.get(1).cloned().unwrap_or_default()))?;
    let appendonly: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(&mut conn)
        .await?;
    println!(
        "  redis {addr}: appendonly = {}, appendfsync = {}",
        appendonly.get(1).map(String::as_str).unwrap_or("?"),
        aof.1
    );
    if aof.1 != expect_fsync || appendonly.get(1).map(String::as_str) != Some("yes") {
        bail!("redis at {addr} must run with appendonly yes, appendfsync {expect_fsync}");
    }
    let mut i = 0;
    while i <= users {
        let mut pipe = redis::pipe();
        for j in i..(i + 5000).min(users + 1) {
            pipe.cmd("HSET")
                .arg(format!("b:{}", user_of(j, users)))
                .arg("remaining")
                .arg(BALANCE)
                .arg("reserved")
                .arg(0)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        i += 5000;
    }
    Ok(())
}
