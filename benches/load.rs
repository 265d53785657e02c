//! Load harness: vevee over HTTP against what users would pick instead, side by side in one run.
//!
//! Targets, each doing the same steps (check, hold, commit, a ledger row per step):
//! - `vevee`: `target/release/vevee serve` with a temp config, HTTP/1.1 keep-alive over loopback;
//! - `pg-lock`: PostgreSQL, `SELECT … FOR UPDATE` + `UPDATE` + `INSERT`s per step in a transaction;
//! - `pg-cond`: PostgreSQL, one conditional `UPDATE … WHERE remaining >= $n RETURNING` statement
//!   (with the reservation and ledger inserts in the same statement) per step;
//! - `redis-always` / `redis-everysec`: Redis, one Lua script per step via EVALSHA, AOF with
//!   `appendfsync always` (durable) or `everysec` (loses up to a second);
//! - `noop`: an axum endpoint that does nothing (the HTTP ceiling), run as a child process of this
//!   binary so that its CPU and memory are measured apart from the load generator.
//!
//! Workloads: `uniform` (reserve+commit pairs over 100k users), `hot` (the same, one user taking
//! half the pairs), `mix` (80 % pairs, 15 % usage reads, 5 % grants). Modes: closed loop (each
//! connection sends its next request when the last one answered) and open loop at a fixed rate, with
//! latency measured from the intended send time (HdrHistogram, coordinated omission corrected).
//!
//! `cargo bench --bench load -- suite --help` lists the options; `benches/baselines/run-all.sh`
//! installs and starts PostgreSQL and Redis on loopback and runs everything.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Every single request gives up after this long (and counts as an error).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Open loop: ops not started this long after the end of the schedule are dropped and recorded
/// with the latency they had reached (a lower bound).
const OPEN_GRACE: Duration = Duration::from_secs(2);
const BALANCE: i64 = 1_000_000_000;
const HOT_USER: &str = "hot";
const SCHEMA_SQL: &str = include_str!("baselines/schema.sql");
const REDIS_LUA: &str = include_str!("baselines/vevee.lua");

#[derive(Parser)]
#[command(about = "Load harness: vevee against PostgreSQL, Redis and a do-nothing endpoint")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing buys nothing
enum Cmd {
    /// Runs every target and workload, calibration before and after, and the memory probe.
    Suite(SuiteArgs),
    /// Measures fdatasync latency of 4 KiB appends in a directory.
    Calibrate {
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// Batches of consumes over HTTP against Redis pipelining the same Lua consume (issue 17).
    Batch(batch::BatchArgs),
    /// Serves the do-nothing endpoint (used by `suite` as a child process).
    NoopServe {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(Args, Clone)]
struct SuiteArgs {
    /// The vevee server binary (`cargo build --release` makes it).
    #[arg(long, default_value = "target/release/vevee")]
    vevee_bin: PathBuf,
    /// A tokio-postgres connection string; the PostgreSQL rows are skipped without it.
    #[arg(long)]
    pg: Option<String>,
    /// PostgreSQL's `postmaster.pid`, for the server's CPU and memory (postmaster and children).
    #[arg(long)]
    pg_pid_file: Option<PathBuf>,
    /// Redis with `appendfsync always`, as host:port.
    #[arg(long)]
    redis_always: Option<String>,
    #[arg(long)]
    redis_always_pid_file: Option<PathBuf>,
    /// Redis with `appendfsync everysec`, as host:port.
    #[arg(long)]
    redis_everysec: Option<String>,
    #[arg(long)]
    redis_everysec_pid_file: Option<PathBuf>,
    /// Where vevee's data and the calibration file go (a temp dir is made inside).
    #[arg(long, default_value = "/tmp")]
    work_dir: PathBuf,
    /// Comma list of targets to run: vevee, pg-lock, pg-cond, redis-always, redis-everysec, noop.
    #[arg(
        long,
        default_value = "vevee,pg-lock,pg-cond,redis-always,redis-everysec,noop"
    )]
    targets: String,
    /// Seconds measured per cell.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Unmeasured closed-loop seconds before each cell.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Users in the uniform workloads.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Connections (one task each) for the closed-loop cells.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Connections for the extra closed-loop uniform cell (maximum throughput: with a slow
    /// fsync, a durable server needs many requests in flight to fill its group commits).
    #[arg(long, default_value_t = 256)]
    wide_conns: usize,
    /// Connections for the open-loop cells (enough to keep the schedule when each answer waits
    /// for an fsync).
    #[arg(long, default_value_t = 256)]
    open_conns: usize,
    /// The high open-loop rate, requests per second (uniform workload).
    #[arg(long, default_value_t = 20_000.0)]
    rate: f64,
    /// The low open-loop rate, requests per second (every workload).
    #[arg(long, default_value_t = 2_000.0)]
    low_rate: f64,
    /// Users created (each a subscription and two balances) by the memory probe; 0 skips it.
    #[arg(long, default_value_t = 200_000)]
    mem_users: u64,
    /// Load generator threads: 1 is a current-thread tokio runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Appends one JSON object per row here.
    #[arg(long)]
    out_json: Option<PathBuf>,
    /// Writes the final markdown tables here.
    #[arg(long)]
    out_md: Option<PathBuf>,
    /// Records a `perf` profile of vevee during its closed-loop uniform cell into this file.
    #[arg(long)]
    perf_out: Option<PathBuf>,
}

#[path = "load/batch.rs"]
mod batch;

fn main() -> Result<()> {
    // `cargo bench` appends `--bench` to the arguments of a harness = false binary.
    let args = std::env::args().filter(|a| a != "--bench");
    let cli = Cli::parse_from(args);
    match cli.command {
        Cmd::NoopServe { listen } => noop_serve(listen),
        Cmd::Batch(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(batch::run(args)),
        Cmd::Calibrate { dir, secs } => {
            for overwrite in [false, true] {
                println!("{}", fsync_calibration(&dir, secs, overwrite)?.line());
            }
            Ok(())
        }
        Cmd::Suite(args) => {
            let runtime = if args.client_threads <= 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(args.client_threads)
                    .enable_all()
                    .build()?
            };
            runtime.block_on(suite(args))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The do-nothing endpoint.

fn noop_serve(listen: SocketAddr) -> Result<()> {
    use axum::Router;
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::{get, post};
    const JSON: [(axum::http::HeaderName, &str); 1] = [(CONTENT_TYPE, "application/json")];
    let app = Router::new()
        .route(
            "/v1/reservations",
            post(|| async { (JSON, r#"{"reservationId":"res_noop","allowed":true}"#) }),
        )
        .route(
            "/v1/reservations/{id}/commit",
            post(|| async { (JSON, "{}") }),
        )
        .route("/v1/users/{user}/usage", get(|| async { (JSON, "{}") }))
        .route(
            "/v1/credits/grants",
            post(|| async { (StatusCode::CREATED, JSON, "{}") }),
        )
        .route(
            "/v1/credit-packs",
            post(|| async { (StatusCode::CREATED, JSON, "{}") }),
        )
        .route("/readyz", get(|| async { "ok" }));
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Calibration: fdatasync of 4 KiB appends.

struct Calibration {
    dir: PathBuf,
    overwrite: bool,
    count: u64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Calibration {
    fn line(&self) -> String {
        format!(
            "fdatasync of 4 KiB {} in {}: {} writes, p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            if self.overwrite {
                "overwrites of a preallocated file"
            } else {
                "appends"
            },
            self.dir.display(),
            self.count,
            self.p50,
            self.p99,
            self.p999,
            self.max
        )
    }
}

/// fdatasync latency of 4 KiB writes: appends (each also commits the file's new size, as a log
/// that grows does) or overwrites of a preallocated, already synced file (data only).
fn fsync_calibration(dir: &Path, secs: f64, overwrite: bool) -> Result<Calibration> {
    use std::io::{Seek, SeekFrom};
    let path = dir.join(format!("fsync-calibration-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).with_context(|| format!("{}", path.display()))?;
    let block = [0x5au8; 4096];
    const SLOTS: u64 = 1024;
    if overwrite {
        for _ in 0..SLOTS {
            file.write_all(&block)?;
        }
        file.sync_all()?;
    }
    let mut hist = new_hist();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end && hist.len() < 20_000 {
        if overwrite {
            file.seek(SeekFrom::Start((hist.len() % SLOTS) * 4096))?;
        }
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        hist.saturating_record(t.elapsed().as_micros() as u64);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Calibration {
        dir: dir.to_path_buf(),
        overwrite,
        count: hist.len(),
        p50: hist.value_at_quantile(0.5),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        max: hist.max(),
    })
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

// ---------------------------------------------------------------------------------------------
// Server processes: CPU and memory from /proc.

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// (ppid, utime + stime) from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn status_kib(path: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[derive(Clone)]
struct ProcWatch {
    pid: u32,
    /// PostgreSQL: the postmaster and all its children, memory as the sum of PSS.
    group: bool,
}

impl ProcWatch {
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid];
        if self.group
            && let Ok(dir) = std::fs::read_dir("/proc")
        {
            for e in dir.flatten() {
                if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                    && proc_stat(pid).is_some_and(|(ppid, _)| ppid == self.pid)
                {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    fn cpu_ticks(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|p| proc_stat(p).map(|(_, t)| t))
            .sum()
    }

    fn mem_bytes(&self) -> u64 {
        if self.group {
            self.pids()
                .into_iter()
                .filter_map(|p| status_kib(&format!("/proc/{p}/smaps_rollup"), "Pss:"))
                .sum::<u64>()
                * 1024
        } else {
            status_kib(&format!("/proc/{}/status", self.pid), "VmRSS:").unwrap_or(0) * 1024
        }
    }
}

fn pid_from_file(path: &Path) -> Result<u32> {
    let s = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    s.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow!("no pid in {}", path.display()))
}

/// A child process that is killed when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------
// Clients.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Vevee,
    Noop,
    PgLock,
    PgCond,
    RedisAlways,
    RedisEverysec,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Vevee => "vevee",
            Kind::Noop => "noop",
            Kind::PgLock => "pg-lock",
            Kind::PgCond => "pg-cond",
            Kind::RedisAlways => "redis-always",
            Kind::RedisEverysec => "redis-everysec",
        }
    }

    fn label(self) -> &'static str {
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

#[derive(Clone)]
struct Spec {
    kind: Kind,
    http: Option<SocketAddr>,
    auth: String,
    pg: String,
    redis: String,
    script: Arc<redis::Script>,
}

enum ResId {
    Http(String),
    Num(i64),
}

struct HttpConn {
    sender: http1::SendRequest<Full<Bytes>>,
    auth: String,
}

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

struct PgConn {
    client: tokio_postgres::Client,
    st: PgStatements,
    lock: bool,
}

struct RedisConn {
    conn: redis::aio::MultiplexedConnection,
    script: Arc<redis::Script>,
}

enum Conn {
    Http(HttpConn),
    Pg(Box<PgConn>),
    Redis(RedisConn),
}

async fn http_connect(addr: SocketAddr, auth: &str) -> Result<HttpConn> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(HttpConn {
        sender,
        auth: format!("Bearer {auth}"),
    })
}

impl HttpConn {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: String,
    ) -> Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// A request with a body already encoded (the batch bench cycles a few).
    async fn call_bytes(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    async fn expect(
        &mut self,
        method: Method,
        path: &str,
        body: String,
        ok: &[u16],
    ) -> Result<Bytes> {
        let (status, bytes) = self.call(method, path, body).await?;
        if !ok.contains(&status.as_u16()) {
            bail!(
                "{path}: {status} {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
        Ok(bytes)
    }
}

fn json_str<'a>(body: &'a [u8], field: &str) -> Option<&'a str> {
    let s = std::str::from_utf8(body).ok()?;
    let key = format!("\"{field}\":\"");
    let start = s.find(&key)? + key.len();
    let end = s[start..].find('"')?;
    Some(&s[start..start + end])
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

impl Spec {
    async fn connect(&self) -> Result<Conn> {
        match self.kind {
            Kind::Vevee | Kind::Noop => Ok(Conn::Http(
                http_connect(self.http.expect("http address"), &self.auth).await?,
            )),
            Kind::PgLock | Kind::PgCond => {
                let client = pg_connect(&self.pg).await?;
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
                Ok(Conn::Pg(Box::new(PgConn {
                    client,
                    st,
                    lock: self.kind == Kind::PgLock,
                })))
            }
            Kind::RedisAlways | Kind::RedisEverysec => {
                let client = redis::Client::open(format!("redis://{}/", self.redis))?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(REQUEST_TIMEOUT))
                    .set_connection_timeout(Some(Duration::from_secs(5)));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Conn::Redis(RedisConn {
                    conn,
                    script: self.script.clone(),
                }))
            }
        }
    }
}

impl Conn {
    async fn reserve(&mut self, user: &str) -> Result<ResId> {
        match self {
            Conn::Http(h) => {
                let body = format!(r#"{{"userId":"{user}","model":"image.x","amount":1}}"#);
                let bytes = h
                    .expect(Method::POST, "/v1/reservations", body, &[200, 201])
                    .await?;
                match json_str(&bytes, "reservationId") {
                    Some(id) => Ok(ResId::Http(id.to_string())),
                    None => bail!("denied: {}", String::from_utf8_lossy(&bytes)),
                }
            }
            Conn::Pg(p) => {
                let amount: i64 = 1;
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
                    Ok(ResId::Num(id))
                } else {
                    match p
                        .client
                        .query_opt(&p.st.cond_reserve, &[&user, &amount])
                        .await?
                    {
                        Some(row) => Ok(ResId::Num(row.get(0))),
                        None => bail!("denied"),
                    }
                }
            }
            Conn::Redis(r) => {
                let id: i64 = r
                    .script
                    .key(format!("b:{user}"))
                    .arg("reserve")
                    .arg(user)
                    .arg(1)
                    .invoke_async(&mut r.conn)
                    .await?;
                if id < 0 {
                    bail!("denied ({id})");
                }
                Ok(ResId::Num(id))
            }
        }
    }

    async fn commit(&mut self, id: ResId) -> Result<()> {
        match (self, id) {
            (Conn::Http(h), ResId::Http(id)) => {
                let path = format!("/v1/reservations/{id}/commit");
                h.expect(Method::POST, &path, "{}".into(), &[200]).await?;
                Ok(())
            }
            (Conn::Pg(p), ResId::Num(id)) => {
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
            (Conn::Redis(r), ResId::Num(id)) => {
                let n: i64 = r
                    .script
                    .key(format!("res:{id}"))
                    .arg("commit")
                    .arg(id)
                    .invoke_async(&mut r.conn)
                    .await?;
                if n != 1 {
                    bail!("commit {id}: {n}");
                }
                Ok(())
            }
            _ => bail!("reservation id of another target"),
        }
    }

    async fn usage(&mut self, user: &str) -> Result<()> {
        match self {
            Conn::Http(h) => {
                let path = format!("/v1/users/{user}/usage");
                h.expect(Method::GET, &path, String::new(), &[200]).await?;
            }
            Conn::Pg(p) => {
                p.client
                    .query_opt(&p.st.usage, &[&user])
                    .await?
                    .ok_or_else(|| anyhow!("no balance for {user}"))?;
            }
            Conn::Redis(r) => {
                let _: (Option<i64>, Option<i64>) = redis::cmd("HMGET")
                    .arg(format!("b:{user}"))
                    .arg("remaining")
                    .arg("reserved")
                    .query_async(&mut r.conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// A grant: vevee grants the `bench` pack (one balance of 10^9 `image.*`), the baselines add
    /// as much to the user's balance; `external_ref` makes it idempotent everywhere.
    async fn grant(&mut self, user: &str, external_ref: &str) -> Result<()> {
        match self {
            Conn::Http(h) => {
                let body = format!(
                    r#"{{"userId":"{user}","packId":"bench","externalRef":"{external_ref}","source":"grant"}}"#
                );
                h.expect(Method::POST, "/v1/credits/grants", body, &[200, 201])
                    .await?;
            }
            Conn::Pg(p) => {
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
            }
            Conn::Redis(r) => {
                let _: i64 = r
                    .script
                    .key(format!("b:{user}"))
                    .arg("grant")
                    .arg(user)
                    .arg(external_ref)
                    .arg(BALANCE)
                    .invoke_async(&mut r.conn)
                    .await?;
            }
        }
        Ok(())
    }
}

async fn timed<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| anyhow!("timed out after {REQUEST_TIMEOUT:?}"))?
}

// ---------------------------------------------------------------------------------------------
// Workloads and the load loop.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Uniform,
    Hot,
    Mix,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Uniform => "uniform",
            Workload::Hot => "hot",
            Workload::Mix => "mix",
        }
    }

    /// Mean requests per op (a pair is two).
    fn requests_per_op(self) -> f64 {
        match self {
            Workload::Uniform | Workload::Hot => 2.0,
            Workload::Mix => 0.8 * 2.0 + 0.2,
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Op {
    Pair(String),
    Usage(String),
    Grant(String, String),
}

fn pick(workload: Workload, rng: &mut Rng, users: u64, grant_seq: &AtomicU64) -> Op {
    let uniform = |rng: &mut Rng| format!("u{}", rng.below(users));
    match workload {
        Workload::Uniform => Op::Pair(uniform(rng)),
        Workload::Hot => {
            if rng.below(2) == 0 {
                Op::Pair(HOT_USER.to_string())
            } else {
                Op::Pair(uniform(rng))
            }
        }
        Workload::Mix => match rng.below(100) {
            0..80 => Op::Pair(uniform(rng)),
            80..95 => Op::Usage(uniform(rng)),
            _ => {
                let n = grant_seq.fetch_add(1, Ordering::Relaxed);
                Op::Grant(uniform(rng), format!("mix-{n}"))
            }
        },
    }
}

impl Op {
    fn requests(&self) -> u64 {
        match self {
            Op::Pair(_) => 2,
            _ => 1,
        }
    }
}

#[derive(Clone)]
enum Schedule {
    Closed {
        deadline: Instant,
    },
    Open {
        t0: Instant,
        interval: Duration,
        next: Arc<AtomicU64>,
        deadline: Instant,
    },
}

struct WorkerOut {
    conn: Option<Conn>,
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    dropped: u64,
    first_error: Option<String>,
}

/// Runs one op, recording each request's latency from `start` (the first request) or from the end
/// of the previous request. Returns the number of successful requests.
async fn run_op(conn: &mut Conn, op: Op, start: Instant, hist: &mut Histogram<u64>) -> Result<u64> {
    match op {
        Op::Pair(user) => {
            let id = timed(conn.reserve(&user)).await?;
            let t1 = Instant::now();
            hist.saturating_record((t1 - start).as_micros() as u64);
            timed(conn.commit(id)).await?;
            hist.saturating_record(t1.elapsed().as_micros() as u64);
            Ok(2)
        }
        Op::Usage(user) => {
            timed(conn.usage(&user)).await?;
            hist.saturating_record(start.elapsed().as_micros() as u64);
            Ok(1)
        }
        Op::Grant(user, r) => {
            timed(conn.grant(&user, &r)).await?;
            hist.saturating_record(start.elapsed().as_micros() as u64);
            Ok(1)
        }
    }
}

async fn worker(
    spec: Arc<Spec>,
    mut conn: Conn,
    workload: Workload,
    users: u64,
    seed: u64,
    schedule: Schedule,
    grant_seq: Arc<AtomicU64>,
) -> WorkerOut {
    let mut out = WorkerOut {
        conn: None,
        hist: new_hist(),
        ok: 0,
        errors: 0,
        dropped: 0,
        first_error: None,
    };
    let mut rng = Rng(seed);
    loop {
        let op = pick(workload, &mut rng, users, &grant_seq);
        let start = match &schedule {
            Schedule::Closed { deadline } => {
                let now = Instant::now();
                if now >= *deadline {
                    break;
                }
                now
            }
            Schedule::Open {
                t0,
                interval,
                next,
                deadline,
            } => {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let intended = *t0 + interval.mul_f64(k as f64);
                if intended >= *deadline {
                    break;
                }
                let now = Instant::now();
                if now > *deadline + OPEN_GRACE {
                    // Never sent: recorded with the wait it had reached, a lower bound.
                    for _ in 0..op.requests() {
                        out.hist
                            .saturating_record((now - intended).as_micros() as u64);
                    }
                    out.dropped += op.requests();
                    continue;
                }
                if intended > now {
                    // This connection was idle: the timer's wake-up slack (tokio's timer has
                    // 1 ms granularity) belongs to the generator, not the server.
                    tokio::time::sleep_until(intended.into()).await;
                    Instant::now()
                } else {
                    // Behind schedule because every connection was busy: measure from the
                    // intended send time (coordinated omission).
                    intended
                }
            }
        };
        match run_op(&mut conn, op, start, &mut out.hist).await {
            Ok(n) => out.ok += n,
            Err(e) => {
                out.errors += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(format!("{e:#}"));
                }
                // The connection may be mid-request: start a new one.
                match timed(spec.connect()).await {
                    Ok(c) => conn = c,
                    Err(e) => {
                        out.first_error = Some(format!("reconnect: {e:#}"));
                        return out;
                    }
                }
            }
        }
    }
    out.conn = Some(conn);
    out
}

#[derive(Clone, Copy)]
enum Mode {
    Closed,
    Open(f64),
}

impl Mode {
    fn label(self, conns: usize) -> String {
        match self {
            Mode::Closed => format!("closed, {conns} conns"),
            Mode::Open(rate) => format!("open {rate:.0}/s"),
        }
    }
}

struct Row {
    target: Kind,
    workload: Workload,
    mode: String,
    secs: f64,
    ok: u64,
    errors: u64,
    dropped: u64,
    rps: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    saturated: bool,
    server_cpu: f64,
    server_mem: u64,
    client_cpu: f64,
    first_error: Option<String>,
}

struct Target {
    spec: Arc<Spec>,
    conns: Vec<Conn>,
    watch: Option<ProcWatch>,
}

struct Ctx {
    args: SuiteArgs,
    ticks: u64,
    grant_seq: Arc<AtomicU64>,
    seed: AtomicU64,
}

async fn run_cell(
    ctx: &Ctx,
    target: &mut Target,
    workload: Workload,
    mode: Mode,
    conns: usize,
    secs: f64,
) -> Result<Row> {
    while target.conns.len() < conns {
        target.conns.push(timed(target.spec.connect()).await?);
    }
    let spare = target.conns.split_off(conns);
    let n = target.conns.len();
    let self_watch = ProcWatch {
        pid: std::process::id(),
        group: false,
    };
    let cpu0 = target.watch.as_ref().map(|w| w.cpu_ticks()).unwrap_or(0);
    let self0 = self_watch.cpu_ticks();
    let t0 = Instant::now() + Duration::from_millis(20);
    let deadline = t0 + Duration::from_secs_f64(secs);
    let schedule = match mode {
        Mode::Closed => Schedule::Closed { deadline },
        Mode::Open(rate) => Schedule::Open {
            t0,
            interval: Duration::from_secs_f64(workload.requests_per_op() / rate),
            next: Arc::new(AtomicU64::new(0)),
            deadline,
        },
    };
    let mut set = tokio::task::JoinSet::new();
    for conn in target.conns.drain(..) {
        let seed = ctx.seed.fetch_add(0x1234_5678_9abc, Ordering::Relaxed);
        set.spawn(worker(
            target.spec.clone(),
            conn,
            workload,
            ctx.args.users,
            seed,
            schedule.clone(),
            ctx.grant_seq.clone(),
        ));
    }
    let mut hist = new_hist();
    let (mut ok, mut errors, mut dropped) = (0, 0, 0);
    let mut first_error = None;
    while let Some(out) = set.join_next().await {
        let out = out?;
        hist.add(&out.hist).expect("same histogram bounds");
        ok += out.ok;
        errors += out.errors;
        dropped += out.dropped;
        if first_error.is_none() {
            first_error = out.first_error;
        }
        if let Some(c) = out.conn {
            target.conns.push(c);
        }
    }
    let elapsed = (Instant::now() - t0).as_secs_f64().max(secs);
    while target.conns.len() < n {
        target.conns.push(timed(target.spec.connect()).await?);
    }
    target.conns.extend(spare);
    let ticks = ctx.ticks as f64;
    let server_cpu = target
        .watch
        .as_ref()
        .map(|w| (w.cpu_ticks() - cpu0) as f64 / ticks / elapsed * 100.0)
        .unwrap_or(f64::NAN);
    let client_cpu = (self_watch.cpu_ticks() - self0) as f64 / ticks / elapsed * 100.0;
    let server_mem = target.watch.as_ref().map(|w| w.mem_bytes()).unwrap_or(0);
    // Throughput counts what was answered within the schedule's span (plus the drain).
    let rps = ok as f64 / elapsed;
    let saturated = match mode {
        Mode::Closed => false,
        Mode::Open(rate) => dropped > 0 || rps < 0.95 * rate,
    };
    Ok(Row {
        target: target.spec.kind,
        workload,
        mode: mode.label(conns),
        secs: elapsed,
        ok,
        errors,
        dropped,
        rps,
        p50: hist.value_at_quantile(0.5),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        max: hist.max(),
        saturated,
        server_cpu,
        server_mem,
        client_cpu,
        first_error,
    })
}

fn ms(us: u64) -> String {
    if us >= 100_000 {
        format!("{:.0}", us as f64 / 1000.0)
    } else if us >= 10_000 {
        format!("{:.1}", us as f64 / 1000.0)
    } else {
        format!("{:.2}", us as f64 / 1000.0)
    }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

fn row_line(r: &Row) -> String {
    format!(
        "{:<15} {:<8} {:<12} {:>9.0} req/s  p50 {:>7} p99 {:>7} p99.9 {:>7} max {:>7} ms  err {} drop {}  server cpu {:>4.0}% mem {}  loadgen cpu {:>3.0}%{}{}",
        r.target.name(),
        r.workload.name(),
        r.mode,
        r.rps,
        ms(r.p50),
        ms(r.p99),
        ms(r.p999),
        ms(r.max),
        r.errors,
        r.dropped,
        r.server_cpu,
        mib(r.server_mem),
        r.client_cpu,
        if r.saturated {
            "  SATURATED (latency is a lower bound)"
        } else {
            ""
        },
        r.first_error
            .as_ref()
            .map(|e| format!("  first error: {e}"))
            .unwrap_or_default()
    )
}

fn row_json(r: &Row) -> String {
    serde_json::json!({
        "target": r.target.name(),
        "workload": r.workload.name(),
        "mode": r.mode,
        "secs": r.secs,
        "ok": r.ok,
        "errors": r.errors,
        "dropped": r.dropped,
        "rps": r.rps,
        "p50_us": r.p50,
        "p99_us": r.p99,
        "p999_us": r.p999,
        "max_us": r.max,
        "saturated": r.saturated,
        "server_cpu_pct": r.server_cpu,
        "server_mem_bytes": r.server_mem,
        "loadgen_cpu_pct": r.client_cpu,
        "first_error": r.first_error,
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// Target setup.

type OpFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// Runs `count` setup steps over all connections: step `i` is `step(conn, i)`.
async fn setup_steps(
    conns: &mut Vec<Conn>,
    count: u64,
    step: fn(&mut Conn, u64) -> OpFuture<'_>,
) -> Result<()> {
    let n = conns.len() as u64;
    let mut set = tokio::task::JoinSet::new();
    for (w, mut conn) in conns.drain(..).enumerate() {
        set.spawn(async move {
            let mut i = w as u64;
            while i < count {
                if let Err(e) = timed(step(&mut conn, i)).await {
                    return (conn, Err(e.context(format!("setup step {i}"))));
                }
                i += n;
            }
            (conn, Ok(()))
        });
    }
    let mut result = Ok(());
    while let Some(j) = set.join_next().await {
        let (conn, r) = j?;
        conns.push(conn);
        if result.is_ok() {
            result = r;
        }
    }
    result
}

fn user_of(i: u64, users: u64) -> String {
    if i == users {
        HOT_USER.to_string()
    } else {
        format!("u{i}")
    }
}

async fn connect_all(spec: &Arc<Spec>, n: usize) -> Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(timed(spec.connect()).await?);
    }
    Ok(conns)
}

fn vevee_config(dir: &Path, port: u16) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nsandbox_requests_per_second = 100000000\n\
         [storage]\ndata_dir = \"{}\"\nsnapshot_dir = \"{}\"\n\
         [[apps]]\nid = \"bench\"\nsecret_key_live = \"sk_live_bench\"\nseed_demo_catalog = false\n",
        dir.join("data").display(),
        dir.join("snapshots").display()
    )
}

async fn wait_ready(addr: SocketAddr, child: &mut ChildGuard) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if let Some(status) = child.0.try_wait()? {
            bail!("server exited during startup: {status}");
        }
        if let Ok(mut h) = http_connect(addr, "").await
            && let Ok(Ok((status, _))) = tokio::time::timeout(
                Duration::from_secs(2),
                h.call(Method::GET, "/readyz", String::new()),
            )
            .await
            && status.is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("server at {addr} not ready after 60 s")
}

/// Starts vevee with a fresh data directory; the guard kills it.
async fn start_vevee(vevee_bin: &Path, dir: &Path) -> Result<(ChildGuard, SocketAddr)> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let config = dir.join("config.toml");
    std::fs::write(&config, vevee_config(dir, port))?;
    let log = std::fs::File::create(dir.join("vevee.log"))?;
    let child = Command::new(vevee_bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", vevee_bin.display()))?;
    let mut guard = ChildGuard(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    wait_ready(addr, &mut guard).await?;
    Ok((guard, addr))
}

async fn vevee_catalog(addr: SocketAddr) -> Result<()> {
    let mut h = http_connect(addr, "sk_live_bench").await?;
    h.expect(
        Method::POST,
        "/v1/credit-packs",
        r#"{"id":"bench","name":"Bench","items":[{"id":"i","match":"image.*","amount":1000000000,"unit":"count"}]}"#.into(),
        &[200, 201, 409],
    )
    .await?;
    // VEVEE_BENCH_WEBHOOK_URL subscribes an endpoint to every event (BENCHMARKS.md, "Webhooks
    // out"): the same run with the deliverer busy.
    if let Ok(url) = std::env::var("VEVEE_BENCH_WEBHOOK_URL") {
        let body = serde_json::json!({"url": url, "events": ["*"]}).to_string();
        h.expect(Method::POST, "/v1/webhook-endpoints", body, &[200])
            .await?;
    }
    Ok(())
}

fn seed_grant(conn: &mut Conn, i: u64) -> OpFuture<'_> {
    Box::pin(async move {
        let users = SEED_USERS.load(Ordering::Relaxed);
        conn.grant(&user_of(i, users), "seed").await
    })
}

static SEED_USERS: AtomicU64 = AtomicU64::new(0);

async fn pg_reset(conn_str: &str, users: u64) -> Result<()> {
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

async fn redis_reset(addr: &str, users: u64, expect_fsync: &str) -> Result<()> {
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

// ---------------------------------------------------------------------------------------------
// The suite.

async fn suite(args: SuiteArgs) -> Result<()> {
    let work = args
        .work_dir
        .join(format!("vevee-load-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = suite_in(args, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = status_kib("/proc/meminfo", "MemTotal:").unwrap_or(0);
    format!(
        "{cores} cores ({cpu}), {:.0} GiB memory",
        mem as f64 / 1024.0 / 1024.0
    )
}

async fn suite_in(args: SuiteArgs, work: &Path) -> Result<()> {
    let mut json = match &args.out_json {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let ctx = Ctx {
        args: args.clone(),
        ticks: clock_ticks(),
        grant_seq: Arc::new(AtomicU64::new(0)),
        seed: AtomicU64::new(0x5eed),
    };
    SEED_USERS.store(args.users, Ordering::Relaxed);
    println!("machine: {}", machine_line());
    let cal_before = [
        fsync_calibration(work, 2.0, false)?,
        fsync_calibration(work, 2.0, true)?,
    ];
    for c in &cal_before {
        println!("calibration before: {}", c.line());
    }
    let wanted: Vec<&str> = args.targets.split(',').map(str::trim).collect();
    let script = Arc::new(redis::Script::new(REDIS_LUA));
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let kinds = [
        Kind::Vevee,
        Kind::PgLock,
        Kind::PgCond,
        Kind::RedisAlways,
        Kind::RedisEverysec,
        Kind::Noop,
    ];
    for kind in kinds {
        if !wanted.contains(&kind.name()) {
            continue;
        }
        println!("== {}", kind.label());
        let started = Instant::now();
        match run_target(&ctx, kind, work, &script, &mut rows, &mut json).await {
            Ok(()) => println!(
                "   ({} done in {:.0} s)",
                kind.name(),
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                let note = format!("{}: skipped or cut short: {e:#}", kind.name());
                println!("   {note}");
                notes.push(note);
            }
        }
    }
    let memory = if args.mem_users > 0 && wanted.contains(&"vevee") {
        match memory_probe(&args, work).await {
            Ok(m) => Some(m),
            Err(e) => {
                notes.push(format!("memory probe failed: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    let cal_after = [
        fsync_calibration(work, 2.0, false)?,
        fsync_calibration(work, 2.0, true)?,
    ];
    for c in &cal_after {
        println!("calibration after: {}", c.line());
    }

    let md = report(
        &args,
        &rows,
        &cal_before,
        &cal_after,
        memory.as_deref(),
        &notes,
    );
    println!("\n{md}");
    if let Some(p) = &args.out_md {
        std::fs::write(p, &md)?;
    }
    Ok(())
}

async fn run_target(
    ctx: &Ctx,
    kind: Kind,
    work: &Path,
    script: &Arc<redis::Script>,
    rows: &mut Vec<Row>,
    json: &mut Option<std::fs::File>,
) -> Result<()> {
    let args = &ctx.args;
    let mut spec = Spec {
        kind,
        http: None,
        auth: "sk_live_bench".into(),
        pg: String::new(),
        redis: String::new(),
        script: script.clone(),
    };
    let mut _guard = None;
    let watch;
    let t = Instant::now();
    match kind {
        Kind::Vevee => {
            let (guard, addr) = start_vevee(&args.vevee_bin, &work.join("vevee")).await?;
            watch = Some(ProcWatch {
                pid: guard.0.id(),
                group: false,
            });
            _guard = Some(guard);
            spec.http = Some(addr);
            vevee_catalog(addr).await?;
        }
        Kind::Noop => {
            let port = free_port()?;
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
            let child = Command::new(std::env::current_exe()?)
                .arg("noop-serve")
                .arg("--listen")
                .arg(addr.to_string())
                .stdin(Stdio::null())
                .spawn()?;
            let mut guard = ChildGuard(child);
            wait_ready(addr, &mut guard).await?;
            watch = Some(ProcWatch {
                pid: guard.0.id(),
                group: false,
            });
            _guard = Some(guard);
            spec.http = Some(addr);
        }
        Kind::PgLock | Kind::PgCond => {
            let Some(pg) = &args.pg else {
                bail!("no --pg connection string")
            };
            spec.pg = pg.clone();
            watch = match &args.pg_pid_file {
                Some(p) => Some(ProcWatch {
                    pid: pid_from_file(p)?,
                    group: true,
                }),
                None => None,
            };
            pg_reset(pg, args.users).await?;
        }
        Kind::RedisAlways | Kind::RedisEverysec => {
            let (addr, pid_file, fsync) = if kind == Kind::RedisAlways {
                (&args.redis_always, &args.redis_always_pid_file, "always")
            } else {
                (
                    &args.redis_everysec,
                    &args.redis_everysec_pid_file,
                    "everysec",
                )
            };
            let Some(addr) = addr else {
                bail!("no --{} address", kind.name())
            };
            spec.redis = addr.clone();
            watch = match pid_file {
                Some(p) => Some(ProcWatch {
                    pid: pid_from_file(p)?,
                    group: false,
                }),
                None => None,
            };
            redis_reset(addr, args.users, fsync).await?;
        }
    }
    let spec = Arc::new(spec);
    let mut conns = connect_all(&spec, args.conns).await?;
    if kind == Kind::Vevee || kind == Kind::Noop {
        // vevee's users get their balance through the API: one durable grant each.
        let t = Instant::now();
        setup_steps(&mut conns, args.users + 1, seed_grant).await?;
        println!(
            "  setup: {} grants in {:.1} s ({:.0}/s)",
            args.users + 1,
            t.elapsed().as_secs_f64(),
            (args.users + 1) as f64 / t.elapsed().as_secs_f64()
        );
    }
    println!("  ready in {:.1} s", t.elapsed().as_secs_f64());
    let mut target = Target { spec, conns, watch };
    let (c, w, o) = (args.conns, args.wide_conns, args.open_conns);
    let cells = [
        (Workload::Uniform, Mode::Closed, c),
        (Workload::Hot, Mode::Closed, c),
        (Workload::Mix, Mode::Closed, c),
        (Workload::Uniform, Mode::Closed, w),
        (Workload::Uniform, Mode::Open(args.rate), o),
        (Workload::Uniform, Mode::Open(args.low_rate), o),
        (Workload::Hot, Mode::Open(args.low_rate), o),
        (Workload::Mix, Mode::Open(args.low_rate), o),
    ];
    for (workload, mode, conns) in cells {
        if args.warmup > 0.0 {
            run_cell(ctx, &mut target, workload, Mode::Closed, conns, args.warmup).await?;
        }
        let perf = match (&args.perf_out, kind, workload, mode) {
            (Some(out), Kind::Vevee, Workload::Uniform, Mode::Closed) => {
                let pid = target.watch.as_ref().map(|w| w.pid).unwrap_or(0);
                Command::new("perf")
                    .args(["record", "-F", "499", "-g", "-o"])
                    .arg(out)
                    .args(["-p", &pid.to_string(), "--", "sleep"])
                    .arg(format!("{}", args.secs))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()
                    .map(ChildGuardWait)
            }
            _ => None,
        };
        let row = run_cell(ctx, &mut target, workload, mode, conns, args.secs).await?;
        drop(perf);
        println!("  {}", row_line(&row));
        if let Some(f) = json {
            writeln!(f, "{}", row_json(&row))?;
        }
        rows.push(row);
    }
    Ok(())
}

/// A child that is waited for (not killed) when dropped: `perf record … sleep N` ends by itself.
struct ChildGuardWait(Child);

impl Drop for ChildGuardWait {
    fn drop(&mut self) {
        let _ = self.0.wait();
    }
}

/// vevee's resident memory per user, each user a subscription and two balances.
async fn memory_probe(args: &SuiteArgs, work: &Path) -> Result<String> {
    println!(
        "== memory: {} users, each a subscription and two balances",
        args.mem_users
    );
    let (guard, addr) = start_vevee(&args.vevee_bin, &work.join("vevee-mem")).await?;
    let watch = ProcWatch {
        pid: guard.0.id(),
        group: false,
    };
    let mut h = http_connect(addr, "sk_live_bench").await?;
    h.expect(
        Method::POST,
        "/v1/plans",
        r#"{"id":"pro","name":"Pro","price":{"amount":900,"currency":"usd","interval":"month"},"limits":[{"id":"images","name":"Images","match":["image.*"],"limit":40,"unit":"count","period":"month"}]}"#.into(),
        &[200, 201],
    )
    .await?;
    h.expect(
        Method::POST,
        "/v1/credit-packs",
        r#"{"id":"duo","name":"Duo","items":[{"id":"img","match":"image.*","amount":100,"unit":"count"},{"id":"vid","match":"video.*","amount":60,"unit":"seconds"}]}"#.into(),
        &[200, 201],
    )
    .await?;
    let spec = Arc::new(Spec {
        kind: Kind::Vevee,
        http: Some(addr),
        auth: "sk_live_bench".into(),
        pg: String::new(),
        redis: String::new(),
        script: Arc::new(redis::Script::new(REDIS_LUA)),
    });
    let mut conns = connect_all(&spec, args.conns).await?;
    let n = args.mem_users;
    let half = n / 2;
    let base = watch.mem_bytes();
    let t = Instant::now();
    MEM_OFFSET.store(0, Ordering::Relaxed);
    setup_steps(&mut conns, half, mem_user).await?;
    let at_half = watch.mem_bytes();
    MEM_OFFSET.store(half, Ordering::Relaxed);
    setup_steps(&mut conns, n - half, mem_user).await?;
    let at_full = watch.mem_bytes();
    let secs = t.elapsed().as_secs_f64();
    drop(conns);
    drop(guard);
    let per_user_all = (at_full.saturating_sub(base)) as f64 / n as f64;
    let per_user_marginal = (at_full.saturating_sub(at_half)) as f64 / (n - half) as f64;
    let gib = 1024.0 * 1024.0 * 1024.0;
    let text = format!(
        "{n} users created over HTTP in {secs:.0} s ({:.0} users/s, 2 durable requests each). \
         vevee RSS: {} after startup, {} at {half} users, {} at {n} users. \
         Per user: {per_user_all:.0} bytes (whole run), {per_user_marginal:.0} bytes (second half, \
         the marginal cost). Users per GiB: {:.0} (whole run), {:.0} (marginal); 1M users \
         extrapolated: {:.2} GiB resident (marginal slope from the {n}-user point).",
        n as f64 / secs,
        mib(base),
        mib(at_half),
        mib(at_full),
        gib / per_user_all,
        gib / per_user_marginal,
        (at_full as f64 + per_user_marginal * (1_000_000u64.saturating_sub(n)) as f64) / gib,
    );
    println!("  {text}");
    Ok(text)
}

static MEM_OFFSET: AtomicU64 = AtomicU64::new(0);

fn mem_user(conn: &mut Conn, i: u64) -> OpFuture<'_> {
    Box::pin(async move {
        let user = format!("m{}", i + MEM_OFFSET.load(Ordering::Relaxed));
        let Conn::Http(h) = conn else {
            bail!("memory probe needs HTTP")
        };
        h.expect(
            Method::PUT,
            &format!("/v1/users/{user}/subscription"),
            r#"{"planId":"pro"}"#.into(),
            &[200],
        )
        .await?;
        h.expect(
            Method::POST,
            "/v1/credits/grants",
            format!(r#"{{"userId":"{user}","packId":"duo","externalRef":"m","source":"grant"}}"#),
            &[200, 201],
        )
        .await?;
        Ok(())
    })
}

fn report(
    args: &SuiteArgs,
    rows: &[Row],
    before: &[Calibration],
    after: &[Calibration],
    memory: Option<&str>,
    notes: &[String],
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "Machine: {}.", machine_line());
    let _ = writeln!(
        md,
        "Cells: {:.0} s measured after {:.0} s of warm-up, {} users, open loop on {} \
         connections, load generator on {} thread(s) of the same machine. Latency per request \
         in ms; open loop measures from the intended send time.\n",
        args.secs, args.warmup, args.users, args.open_conns, args.client_threads
    );
    for c in before {
        let _ = writeln!(md, "- calibration before: {}", c.line());
    }
    for c in after {
        let _ = writeln!(md, "- calibration after: {}", c.line());
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| target | workload | mode | req/s | × vevee | p50 | p99 | p99.9 | max | p99 × vevee | server CPU | server mem | loadgen CPU | errors |"
    );
    let _ = writeln!(
        md,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let base = rows
            .iter()
            .find(|b| b.target == Kind::Vevee && b.workload == r.workload && b.mode == r.mode);
        let (tput, p99) = match base {
            Some(b) if b.rps > 0.0 && b.p99 > 0 => (
                format!("{:.2}", r.rps / b.rps),
                format!("{:.2}", r.p99 as f64 / b.p99 as f64),
            ),
            _ => ("–".into(), "–".into()),
        };
        let sat = if r.saturated { " (saturated)" } else { "" };
        let _ = writeln!(
            md,
            "| {} | {} | {}{} | {:.0} | {} | {} | {} | {} | {} | {} | {:.0}% | {} | {:.0}% | {} |",
            r.target.name(),
            r.workload.name(),
            r.mode,
            sat,
            r.rps,
            tput,
            ms(r.p50),
            ms(r.p99),
            ms(r.p999),
            ms(r.max),
            p99,
            r.server_cpu,
            mib(r.server_mem),
            r.client_cpu,
            r.errors + r.dropped,
        );
    }
    if let Some(m) = memory {
        let _ = writeln!(md, "\nMemory: {m}");
    }
    for n in notes {
        let _ = writeln!(md, "\nNote: {n}");
    }
    md
}
