//! The targets side by side: which one a run talks to (`Kind`), how to reach it (`Spec`) and one
//! connection to it (`Conn`), whose steps go to the target's own file (`vevee.rs` for vevee and
//! the do-nothing endpoint, `postgres.rs`, `redis_lua.rs`).

use crate::REQUEST_TIMEOUT;
use crate::postgres::PgConn;
use crate::redis_lua::RedisConn;
use crate::vevee::{HttpConn, http_connect};
use anyhow::{Result, anyhow, bail};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Vevee,
    Noop,
    PgLock,
    PgCond,
    RedisAlways,
    RedisEverysec,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Vevee => "vevee",
            Kind::Noop => "noop",
            Kind::PgLock => "pg-lock",
            Kind::PgCond => "pg-cond",
            Kind::RedisAlways => "redis-always",
            Kind::RedisEverysec => "redis-everysec",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Vevee => "vevee (HTTP, durable)",
            Kind::Noop => "axum endpoint that does nothing (HTTP ceiling)",
            Kind::PgLock => "PostgreSQL, SELECT … FOR UPDATE + UPDATE + INSERT",
            Kind::PgCond => "PostgreSQL, one conditional UPDATE … RETURNING",
            Kind::RedisAlways => "Redis Lua, appendfsync always (durable)",
            Kind::RedisEverysec => "Redis Lua, appendfsync everysec (loses up to 1 s)",
        }
    }
}

/// Where a target listens; `connect` opens one more connection to it.
#[derive(Clone)]
pub struct Spec {
    pub kind: Kind,
    pub http: Option<SocketAddr>,
    pub auth: String,
    pub pg: String,
    pub redis: String,
    pub script: Arc<redis::Script>,
}

/// A reservation as the target names it.
pub enum ResId {
    Http(String),
    Num(i64),
}

pub enum Conn {
    Http(HttpConn),
    Pg(Box<PgConn>),
    Redis(RedisConn),
}

impl Spec {
    pub async fn connect(&self) -> Result<Conn> {
        Ok(match self.kind {
            Kind::Vevee | Kind::Noop => {
                Conn::Http(http_connect(self.http.expect("http address"), &self.auth).await?)
            }
            Kind::PgLock | Kind::PgCond => Conn::Pg(Box::new(
                PgConn::connect(&self.pg, self.kind == Kind::PgLock).await?,
            )),
            Kind::RedisAlways | Kind::RedisEverysec => {
                Conn::Redis(RedisConn::connect(&self.redis, self.script.clone()).await?)
            }
        })
    }
}

impl Conn {
    pub async fn reserve(&mut self, user: &str) -> Result<ResId> {
        match self {
            Conn::Http(h) => h.reserve(user).await,
            Conn::Pg(p) => Ok(ResId::Num(p.reserve(user).await?)),
            Conn::Redis(r) => Ok(ResId::Num(r.reserve(user).await?)),
        }
    }

    pub async fn commit(&mut self, id: ResId) -> Result<()> {
        match (self, id) {
            (Conn::Http(h), ResId::Http(id)) => h.commit(&id).await,
            (Conn::Pg(p), ResId::Num(id)) => p.commit(id).await,
            (Conn::Redis(r), ResId::Num(id)) => r.commit(id).await,
            _ => bail!("reservation id of another target"),
        }
    }

    /// A reserve and commit in one request; PostgreSQL has no such step here.
    pub async fn consume(&mut self, user: &str) -> Result<()> {
        match self {
            Conn::Http(h) => h.consume(user).await,
            Conn::Pg(_) => bail!("the consume workload has no PostgreSQL variant"),
            Conn::Redis(r) => r.consume(user).await,
        }
    }

    pub async fn usage(&mut self, user: &str) -> Result<()> {
        match self {
            Conn::Http(h) => h.usage(user).await,
            Conn::Pg(p) => p.usage(user).await,
            Conn::Redis(r) => r.usage(user).await,
        }
    }

    /// A grant: vevee grants the `bench` pack (one balance of 10^9 `image.*`), the baselines add
    /// as much to the user's balance; `external_ref` makes it idempotent everywhere.
    pub async fn grant(&mut self, user: &str, external_ref: &str) -> Result<()> {
        match self {
            Conn::Http(h) => h.grant(user, external_ref).await,
            Conn::Pg(p) => p.grant(user, external_ref).await,
            Conn::Redis(r) => r.grant(user, external_ref).await,
        }
    }
}

pub async fn timed<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| anyhow!("timed out after {REQUEST_TIMEOUT:?}"))?
}
