//! `load batch`: durable consumes over HTTP in batches of N (`POST /v1/batch`), side by side with
//! Redis running the same Lua consume pipelined N deep (`redis-benchmark -P N`, `appendfsync
//! always`). Issue 17.
//!
//! Both sides: `conns` connections in a closed loop, consumes of 1 spread uniformly over `users`
//! users (each holding a billion credits), one ledger row per event. Depth 1 on the vevee side is
//! the single `POST /v1/consume`, the path a batch replaces. A consume counts when its answer says
//! `committed`; the figure is consumes per second, not requests.

use crate::procs::{ProcWatch, clock_ticks, pid_from_file};
use crate::redis_lua::REDIS_LUA;
use crate::vevee::{HttpConn, http_connect, start_vevee, vevee_catalog};
use crate::workload::ms;
use crate::{BALANCE, new_hist};
use anyhow::{Context, Result, bail};
use clap::Args;
use hyper::Method;
use hyper::body::Bytes;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Clone)]
pub struct BatchArgs {
    /// The vevee server binary (`cargo build --release` makes it).
    #[arg(long, default_value = "target/release/vevee")]
    vevee_bin: PathBuf,
    /// Where vevee's data goes (a temp dir is made inside).
    #[arg(long, default_value = "/tmp")]
    work_dir: PathBuf,
    /// Comma list of operations per request.
    #[arg(long, default_value = "1,10,100,1000")]
    depths: String,
    /// Users the consumes are spread over.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Connections, for vevee and for redis-benchmark (`-c`).
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Seconds measured per cell.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Unmeasured seconds before each vevee cell.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Redis with `appendonly yes` and `appendfsync always`, as host:port; skipped without it.
    #[arg(long)]
    redis_always: Option<String>,
    #[arg(long)]
    redis_always_pid_file: Option<PathBuf>,
    #[arg(long, default_value = "redis-benchmark")]
    redis_benchmark: PathBuf,
    /// Writes the markdown table here.
    #[arg(long)]
    out_md: Option<PathBuf>,
}

/// One measured cell.
struct Cell {
    consumes_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    cpu_pct: Option<f64>,
    failed: u64,
}

pub async fn run(args: BatchArgs) -> Result<()> {
    let depths: Vec<usize> = args
        .depths
        .split(',')
        .map(|d| {
            d.trim()
                .parse()
                .context("--depths is a comma list of numbers")
        })
        .collect::<Result<_>>()?;
    if depths.iter().any(|&d| d == 0 || d > 1000) {
        bail!("each depth must be from 1 to 1000");
    }
    println!("{}", crate::suite::machine_line());
    let work = args
        .work_dir
        .join(format!("vevee-batch-{}", std::process::id()));
    let vevee = vevee_cells(&args, &work, &depths).await;
    let _ = std::fs::remove_dir_all(&work);
    let vevee = vevee?;
    let redis = match &args.redis_always {
        Some(addr) => Some(redis_cells(&args, addr, &depths).await?),
        None => None,
    };
    let md = table(&args, &depths, &vevee, redis.as_deref());
    println!("\n{md}");
    if let Some(p) = &args.out_md {
        std::fs::write(p, &md)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// vevee

async fn vevee_cells(args: &BatchArgs, work: &Path, depths: &[usize]) -> Result<Vec<Cell>> {
    let (guard, addr) = start_vevee(&args.vevee_bin, &work.join("vevee")).await?;
    vevee_catalog(addr).await?;
    seed_vevee(addr, args.users).await?;
    let watch = ProcWatch {
        pid: guard.0.id(),
        group: false,
    };
    let mut cells = Vec::new();
    for &depth in depths {
        let bodies = Arc::new(bodies(depth, args.users));
        let path = if depth == 1 {
            "/v1/consume"
        } else {
            "/v1/batch"
        };
        closed_loop(addr, args.conns, path, &bodies, args.warmup, None).await?;
        let cell = closed_loop(addr, args.conns, path, &bodies, args.secs, Some(&watch)).await?;
        println!(
            "  vevee depth {depth}: {:.0} consumes/s, request p50 {} ms p99 {} ms, cpu {:.0} %, failed {}",
            cell.consumes_per_s,
            ms(cell.p50_us),
            ms(cell.p99_us),
            cell.cpu_pct.unwrap_or(0.0),
            cell.failed
        );
        cells.push(cell);
    }
    drop(guard);
    Ok(cells)
}

fn user(i: u64) -> String {
    format!("b{i}")
}

async fn seed_vevee(addr: SocketAddr, users: u64) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let lanes = 16u64;
    for lane in 0..lanes {
        tasks.spawn(async move {
            let mut h = http_connect(addr, "sk_live_bench").await?;
            let mut i = lane;
            while i < users {
                let body = format!(
                    r#"{{"userId":"{}","packId":"bench","externalRef":"seed","source":"grant"}}"#,
                    user(i)
                );
                h.expect(Method::POST, "/v1/credits/grants", body, &[200, 201])
                    .await?;
                i += lanes;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// A few request bodies per depth, cycled: building a 1000-operation body per request would
/// charge the load generator, which shares the machine, for work that is not vevee's.
fn bodies(depth: usize, users: u64) -> Vec<Bytes> {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_user = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        user(rng % users)
    };
    (0..32)
        .map(|_| {
            if depth == 1 {
                let u = next_user();
                return Bytes::from(format!(
                    r#"{{"userId":"{u}","model":"image.x","amount":1}}"#
                ));
            }
            let mut s = String::from(r#"{"operations":["#);
            for i in 0..depth {
                if i > 0 {
                    s.push(',');
                }
                let u = next_user();
                let _ = write!(
                    s,
                    r#"{{"op":"consume","userId":"{u}","model":"image.x","amount":1}}"#
                );
            }
            s.push_str("]}");
            Bytes::from(s)
        })
        .collect()
}

/// Consumes an answer reports as done: each committed reservation says so once.
fn committed_in(body: &[u8]) -> u64 {
    let needle = br#""status":"committed""#;
    body.windows(needle.len()).filter(|w| *w == needle).count() as u64
}

async fn closed_loop(
    addr: SocketAddr,
    conns: usize,
    path: &'static str,
    bodies: &Arc<Vec<Bytes>>,
    secs: f64,
    watch: Option<&ProcWatch>,
) -> Result<Cell> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let cpu_before = watch.map(|w| w.cpu_ticks());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conns {
        let bodies = bodies.clone();
        tasks.spawn(async move {
            let mut h: HttpConn = http_connect(addr, "sk_live_bench").await?;
            let mut hist = new_hist();
            let (mut done, mut sent_ops) = (0u64, 0u64);
            let mut k = c;
            while Instant::now() < end {
                let body = bodies[k % bodies.len()].clone();
                k += 1;
                let ops = if path == "/v1/batch" {
                    ops_in(&body)
                } else {
                    1
                };
                let t = Instant::now();
                let (status, answer) = h.call_bytes(Method::POST, path, body).await?;
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                sent_ops += ops;
                if status.is_success() {
                    done += committed_in(&answer);
                }
            }
            anyhow::Ok((hist, done, sent_ops))
        });
    }
    let mut hist = new_hist();
    let (mut done, mut sent) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (h, d, s) = r??;
        hist.add(h)?;
        done += d;
        sent += s;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_pct = watch.zip(cpu_before).map(|(w, before)| {
        (w.cpu_ticks() - before) as f64 / clock_ticks() as f64 / elapsed * 100.0
    });
    Ok(Cell {
        consumes_per_s: done as f64 / elapsed,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        cpu_pct,
        failed: sent - done,
    })
}

/// The number of operations in a batch body.
fn ops_in(body: &[u8]) -> u64 {
    let needle = br#""op":"#;
    body.windows(needle.len()).filter(|w| *w == needle).count() as u64
}

// ---------------------------------------------------------------------------------------------
// Redis

async fn redis_cells(args: &BatchArgs, addr: &str, depths: &[usize]) -> Result<Vec<Cell>> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let fsync: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async(&mut conn)
        .await?;
    let aof: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(&mut conn)
        .await?;
    if fsync.get(1).map(String::as_str) != Some("always")
        || aof.get(1).map(String::as_str) != Some("yes")
    {
        bail!("redis at {addr} must run with appendonly yes and appendfsync always");
    }
    let (host, port) = addr
        .rsplit_once(':')
        .context("--redis-always is host:port")?;
    let watch = match &args.redis_always_pid_file {
        Some(p) => Some(ProcWatch {
            pid: pid_from_file(p)?,
            group: false,
        }),
        None => None,
    };
    let mut cells = Vec::new();
    for &depth in depths {
        // A fresh keyspace per depth: the ledger stream of the last cell does not slow this one.
        let () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
        let mut pipe = redis::pipe();
        for i in 0..args.users {
            // redis-benchmark's `-r` writes `__rand_int__` as 12 digits.
            pipe.cmd("HSET")
                .arg(format!("b:{i:012}"))
                .arg("remaining")
                .arg(BALANCE)
                .arg("committed")
                .arg(0)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(REDIS_LUA)
            .query_async(&mut conn)
            .await?;
        let bench = |n: u64| redis_benchmark(args, host, port, &sha, depth, n);
        // A short run to size the measured one to about `secs`.
        let probe_n = (depth * args.conns * 4).max(20_000) as u64;
        let probe = bench(probe_n)?;
        let n = ((probe.0 * args.secs) as u64).max(probe_n);
        let before = watch.as_ref().map(|w| w.cpu_ticks());
        let t = Instant::now();
        let (rps, p50_ms, p99_ms) = bench(n)?;
        let elapsed = t.elapsed().as_secs_f64();
        let cpu_pct = watch
            .as_ref()
            .zip(before)
            .map(|(w, b)| (w.cpu_ticks() - b) as f64 / clock_ticks() as f64 / elapsed * 100.0);
        let committed: u64 = redis::cmd("XLEN")
            .arg("ledger")
            .query_async(&mut conn)
            .await?;
        // Two ledger rows per consume, as in vevee.
        let expected = 2 * (probe_n + n);
        let cell = Cell {
            consumes_per_s: rps,
            p50_us: (p50_ms * 1000.0) as u64,
            p99_us: (p99_ms * 1000.0) as u64,
            cpu_pct,
            failed: expected.saturating_sub(committed) / 2,
        };
        println!(
            "  redis-always depth {depth}: {:.0} consumes/s (n {n}), p50 {} ms p99 {} ms, cpu {:.0} %, failed {}",
            cell.consumes_per_s,
            ms(cell.p50_us),
            ms(cell.p99_us),
            cell.cpu_pct.unwrap_or(0.0),
            cell.failed
        );
        cells.push(cell);
    }
    Ok(cells)
}

/// `redis-benchmark -P depth` of the consume script: (requests/s, p50 ms, p99 ms).
fn redis_benchmark(
    args: &BatchArgs,
    host: &str,
    port: &str,
    sha: &str,
    depth: usize,
    n: u64,
) -> Result<(f64, f64, f64)> {
    let out = Command::new(&args.redis_benchmark)
        .args(["-h", host, "-p", port, "--csv"])
        .args(["-c", &args.conns.to_string()])
        .args(["-n", &n.to_string()])
        .args(["-P", &depth.to_string()])
        .args(["-r", &args.users.to_string()])
        .args(["EVALSHA", sha, "1", "b:__rand_int__", "consume", "1"])
        .output()
        .with_context(|| format!("running {}", args.redis_benchmark.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The last line: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
    // "p95_latency_ms","p99_latency_ms","max_latency_ms".
    let line = text
        .lines()
        .rfind(|l| l.starts_with("\"EVALSHA"))
        .with_context(|| format!("no result from redis-benchmark: {text}"))?;
    let fields: Vec<f64> = line
        .split("\",\"")
        .skip(1)
        .map(|f| f.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    match fields.as_slice() {
        [rps, _avg, _min, p50, _p95, p99, ..] => Ok((*rps, *p50, *p99)),
        _ => bail!("unexpected redis-benchmark line: {line}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn table(args: &BatchArgs, depths: &[usize], vevee: &[Cell], redis: Option<&[Cell]>) -> String {
    let mut md = format!(
        "Durable consumes of 1 over {} users, {} connections, closed loop, {} s per cell. vevee \
         request latency is per HTTP request (a whole batch); Redis's is redis-benchmark's, per \
         pipelined command.\n\n\
         | depth | vevee consumes/s | vevee p50 / p99 ms | vevee CPU | Redis `always` consumes/s | \
         Redis p50 / p99 ms | Redis CPU | vevee ÷ Redis |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        args.users, args.conns, args.secs
    );
    let cpu = |c: &Cell| c.cpu_pct.map_or("–".into(), |p| format!("{p:.0} %"));
    for (i, depth) in depths.iter().enumerate() {
        let v = &vevee[i];
        let label = if *depth == 1 {
            "1 (`/v1/consume`)".to_string()
        } else {
            depth.to_string()
        };
        let (r_rate, r_lat, r_cpu, ratio) = match redis.map(|r| &r[i]) {
            Some(r) => (
                format!("{:.0}", r.consumes_per_s),
                format!("{} / {}", ms(r.p50_us), ms(r.p99_us)),
                cpu(r),
                format!("{:.2}×", v.consumes_per_s / r.consumes_per_s),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        let failed = if v.failed > 0 {
            format!(" ({} failed)", v.failed)
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {label} | {:.0}{failed} | {} / {} | {} | {r_rate} | {r_lat} | {r_cpu} | {ratio} |",
            v.consumes_per_s,
            ms(v.p50_us),
            ms(v.p99_us),
            cpu(v),
        );
    }
    md
}
