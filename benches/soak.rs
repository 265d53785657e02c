//! Bounded state (issue 11): what vevee keeps in memory, on disk and at restart as its history
//! grows, measured black-box against `target/release/vevee serve` over HTTP/1.1 keep-alive.
//!
//! Subcommands (`cargo bench --bench soak -- <cmd> --help` lists the options):
//! - `soak`: N consumes of 1 over 1,000 users, the server's RSS every 5 % of the run and every
//!   250 ms (growth from the first to the last tenth after the warm-up, by median and by
//!   minimum), then the snapshot written by a graceful stop, the data directory and a restart;
//! - `idle-users`: U users, each a subscription and a two-item grant, RSS once they are idle;
//! - `restart`: the `idle-users` state plus E consumes after the last snapshot, time from spawn to
//!   `/readyz` 200 after SIGKILL, from the snapshot alone and with the journal tail;
//! - `ledger-page`: one user with L ledger entries, latency of a page of 50 at random cursors.
//!
//! Each prints progress lines, then a markdown table (header and rows); `--out-json FILE` appends
//! one JSON object per row. Nothing here asserts a time: the figures are for BENCHMARKS.md.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

const AUTH: &str = "sk_live_soak";
/// Every request gives up after this long (and counts as an error).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Startup, recovery included, may take this long before the run is abandoned.
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// The soak's users each get this many units: far more than any run consumes.
const BIG_BALANCE: u64 = 1_000_000_000;
/// "Never" for the restart runs' snapshot cadence, so the journal tail is exactly what they wrote.
/// Not `u64::MAX`: the server may add to it.
const NEVER_RECORDS: u64 = 1_000_000_000_000_000;
const NEVER_SECONDS: u64 = 1_000_000_000;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Parser)]
#[command(about = "Bounded-state benchmarks of issue 11: soak, idle users, restart, ledger paging")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N consumes over 1,000 users: RSS growth after warm-up, snapshot and data dir size.
    Soak(SoakArgs),
    /// U users with a subscription and two balances each: RSS once idle, users per GiB.
    IdleUsers(IdleArgs),
    /// U idle users plus E consumes after the last snapshot: time to ready after SIGKILL.
    Restart(RestartArgs),
    /// One user with L ledger entries: latency of a page of 50 at random cursors.
    LedgerPage(LedgerArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// The server binary (`cargo build --release` makes it).
    #[arg(long, default_value = "target/release/vevee")]
    vevee_bin: PathBuf,
    /// A temp directory for the server's config and data is made in here.
    #[arg(long, default_value = "/tmp")]
    work_dir: PathBuf,
    /// Keeps that directory (config, data, snapshots, log) after the run.
    #[arg(long)]
    keep: bool,
    /// Appends one JSON object per table row to this file.
    #[arg(long)]
    out_json: Option<PathBuf>,
    /// Names the build in the table; default: the commit of the checkout the binary was built in.
    #[arg(long)]
    label: Option<String>,
    /// Load generator threads: 1 is a current-thread tokio runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Upper bound of each load phase in seconds; a phase cut short says so in its row.
    #[arg(long, default_value_t = 1800.0)]
    max_secs: f64,
}

#[derive(Args, Clone)]
struct SoakArgs {
    #[command(flatten)]
    common: Common,
    /// Consumes of amount 1 (the first 5 % are the warm-up).
    #[arg(long, default_value_t = 10_000_000)]
    ops: u64,
    #[arg(long, default_value_t = 1_000)]
    users: u64,
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// `[storage] snapshot_every_records` for the server; its own default when unset.
    #[arg(long)]
    snapshot_every_records: Option<u64>,
    /// `[storage] snapshot_every_seconds` for the server; its own default when unset.
    #[arg(long)]
    snapshot_every_seconds: Option<u64>,
}

#[derive(Args, Clone)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    #[arg(long, default_value_t = 128)]
    conns: usize,
    /// `[server] idle_seconds` for the server, left out if its config refuses the key.
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// Seconds to wait after the last user was created; default 2 × idle_seconds + 5.
    #[arg(long)]
    wait_secs: Option<f64>,
}

#[derive(Args, Clone)]
struct RestartArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Consumes of amount 1 after the last snapshot, over the users in turn (each user can take
    /// 140: 40 from the plan, 100 from the pack).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 128)]
    conns: usize,
}

#[derive(Args, Clone)]
struct LedgerArgs {
    #[command(flatten)]
    common: Common,
    /// Ledger entries of the one user (at least; a consume may write more than one).
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Connections filling the ledger, all consuming on the same user.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Consumes per `POST /v1/batch` request (API.md allows up to 1000) when the build has that
    /// endpoint; one `POST /v1/consume` per consume otherwise.
    #[arg(long, default_value_t = 500)]
    batch: u64,
    /// Timed page reads at random cursors.
    #[arg(long, default_value_t = 2_000)]
    samples: u64,
    /// Page size of the timed reads.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

fn main() -> Result<()> {
    // `cargo bench` appends `--bench` to the arguments of a harness = false binary.
    let cli = Cli::parse_from(std::env::args().filter(|a| a != "--bench"));
    let common = match &cli.command {
        Cmd::Soak(a) => &a.common,
        Cmd::IdleUsers(a) => &a.common,
        Cmd::Restart(a) => &a.common,
        Cmd::LedgerPage(a) => &a.common,
    };
    let runtime = if common.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(common.client_threads)
            .enable_all()
            .build()?
    };
    println!("machine: {}", machine_line());
    runtime.block_on(async {
        match cli.command {
            Cmd::Soak(a) => in_work_dir(&a.common.clone(), "soak", |w| soak(a, w)).await,
            Cmd::IdleUsers(a) => in_work_dir(&a.common.clone(), "idle", |w| idle_users(a, w)).await,
            Cmd::Restart(a) => in_work_dir(&a.common.clone(), "restart", |w| restart(a, w)).await,
            Cmd::LedgerPage(a) => {
                in_work_dir(&a.common.clone(), "ledger", |w| ledger_page(a, w)).await
            }
        }
    })
}

/// Runs `f` in a fresh directory under `--work-dir`, removed afterwards unless `--keep`.
async fn in_work_dir<F, Fut>(common: &Common, name: &str, f: F) -> Result<()>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let dir = common
        .work_dir
        .join(format!("vevee-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = f(dir.clone()).await;
    if common.keep {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

// ---------------------------------------------------------------------------------------------
// `soak`

async fn soak(a: SoakArgs, dir: PathBuf) -> Result<()> {
    let c = &a.common;
    let opts = ServerOpts {
        snapshot_every_records: a.snapshot_every_records,
        snapshot_every_seconds: a.snapshot_every_seconds,
        idle_seconds: None,
    };
    println!(
        "== soak: {} consumes of 1 over {} users, {} connections, closed loop",
        a.ops, a.users, a.conns
    );
    let mut server = Server::start(&c.vevee_bin, &dir, opts).await?;
    let addr = server.addr;
    create_big_pack(addr).await?;
    let users = a.users;
    let grants = run_load(
        "grants",
        addr,
        a.conns,
        users,
        c.max_secs,
        None,
        Arc::new(move |i| vec![grant_req(&format!("s{i}"), "big", "seed")]),
    )
    .await?;
    grants.require_complete("granting the soak users")?;
    let rss_start = server.rss();
    let load = run_load(
        "soak",
        addr,
        a.conns,
        a.ops,
        c.max_secs,
        Some(server.pid()),
        Arc::new(move |i| vec![consume_req(&format!("s{}", i % users))]),
    )
    .await?;
    // VmHWM is updated lazily by the kernel: a sample may be above it.
    let hwm = load
        .samples
        .iter()
        .map(|s| s.rss)
        .fold(server.rss_peak(), u64::max);
    let warm = load
        .samples
        .first()
        .copied()
        .ok_or_else(|| anyhow!("no RSS sample"))?;
    let end = load
        .samples
        .last()
        .copied()
        .ok_or_else(|| anyhow!("no RSS sample"))?;
    let growth = end.rss as i64 - warm.rss as i64;
    // Two samples are noisy (snapshots and the allocator move RSS by tens of MB): the slope of
    // all samples from the warm-up on says more about a steady growth.
    let slope = rss_slope(&load.samples);
    // Snapshots lift RSS by 100-200 MB for seconds, so one sample lands anywhere between the
    // floor and a peak. Compare the first and the last tenth after the warm-up as a whole: their
    // medians (where RSS sits most of the time) and their minima (the floor between peaks).
    let tenth = |from: u64| -> Vec<u64> {
        let (lo, hi) = (from, from + a.ops / 10);
        let mut rss: Vec<u64> = load
            .trace
            .iter()
            .filter(|s| s.done >= lo && s.done < hi)
            .map(|s| s.rss)
            .collect();
        rss.sort_unstable();
        rss
    };
    let (early, late) = (tenth(a.ops / 20), tenth(a.ops - a.ops / 10));
    let median = |v: &[u64]| v.get(v.len() / 2).copied();
    let tenths = match (median(&early), median(&late)) {
        (Some(e), Some(l)) => Some((e, l, early[0], late[0])),
        _ => None,
    };
    let ops_after_warm = end.done.saturating_sub(warm.done).max(1);
    let data_before_stop = dir_bytes(&dir.join("data"));
    println!("  stopping with SIGTERM (final snapshot)");
    let stop = server.stop_graceful()?;
    let snapshot = newest_snapshot(&dir.join("snapshots"))?;
    let data_after_stop = dir_bytes(&dir.join("data"));
    let snapshots_dir = dir_bytes(&dir.join("snapshots"));
    println!("  restarting on the same data");
    let ready = server.restart().await?;
    let rss_restart = server.rss();
    let recovered = server.recovery_line();
    server.kill();

    let label = label_of(c);
    let curve: Vec<Value> = load
        .samples
        .iter()
        .map(|s| json!({"ops": s.done, "secs": s.secs, "rss_bytes": s.rss}))
        .collect();
    let row = json!({
        "bench": "soak",
        "label": label,
        "ops": load.done,
        "ops_asked": a.ops,
        "cut_short": load.cut_short,
        "users": a.users,
        "conns": a.conns,
        "secs": load.secs,
        "consumes_per_s": load.done as f64 / load.secs,
        "p50_us": load.hist.value_at_quantile(0.5),
        "p99_us": load.hist.value_at_quantile(0.99),
        "errors": load.errors,
        "first_error": load.first_error,
        "rss_after_setup_bytes": rss_start,
        "rss_after_warmup_bytes": warm.rss,
        "warmup_ops": warm.done,
        "rss_end_bytes": end.rss,
        "rss_peak_bytes": hwm,
        "growth_bytes": growth,
        "growth_bytes_per_op": growth as f64 / ops_after_warm as f64,
        "rss_slope_bytes_per_op": slope,
        "rss_median_first_tenth_bytes": tenths.map(|t| t.0),
        "rss_median_last_tenth_bytes": tenths.map(|t| t.1),
        "rss_min_first_tenth_bytes": tenths.map(|t| t.2),
        "rss_min_last_tenth_bytes": tenths.map(|t| t.3),
        "rss_trace_samples": load.trace.len(),
        "stop_secs": stop.as_secs_f64(),
        "snapshot_bytes": snapshot.as_ref().map(|s| s.1),
        "snapshot_bytes_per_user": snapshot.as_ref().map(|s| s.1 as f64 / a.users as f64),
        "data_dir_bytes_before_stop": data_before_stop,
        "data_dir_bytes_after_stop": data_after_stop,
        "snapshot_dir_bytes": snapshots_dir,
        "restart_ready_secs": ready.as_secs_f64(),
        "rss_after_restart_bytes": rss_restart,
        "recovery": recovered.as_ref().map(RecoveryLine::to_json),
        "rss_curve": curve,
    });
    let headers = [
        "build",
        "consumes",
        "consumes/s",
        "p50 / p99 ms",
        "RSS after warm-up",
        "RSS at end",
        "peak",
        "growth",
        "bytes/op",
        "slope bytes/op",
        "median, first → last tenth",
        "floor, first → last tenth",
        "snapshot (bytes/user)",
        "data dir (after stop)",
        "RSS after restart",
        "errors",
    ];
    let cells = vec![
        label.clone(),
        format!(
            "{}{}",
            thousands(load.done),
            if load.cut_short { " (cut short)" } else { "" }
        ),
        format!("{:.0}", load.done as f64 / load.secs),
        format!(
            "{} / {}",
            ms(load.hist.value_at_quantile(0.5)),
            ms(load.hist.value_at_quantile(0.99))
        ),
        mib(warm.rss),
        mib(end.rss),
        mib(hwm),
        format!("{:+.1} MB", growth as f64 / 1e6),
        format!("{:.0}", growth as f64 / ops_after_warm as f64),
        slope.map_or_else(|| "–".into(), |v| format!("{v:.0}")),
        tenths.map_or_else(|| "–".into(), |(e, l, _, _)| from_to(e, l)),
        tenths.map_or_else(|| "–".into(), |(_, _, e, l)| from_to(e, l)),
        match &snapshot {
            Some((_, size)) => format!(
                "{} ({:.0})",
                human_bytes(*size),
                *size as f64 / a.users as f64
            ),
            None => "none".into(),
        },
        human_bytes(data_after_stop + snapshots_dir),
        mib(rss_restart),
        load.errors.to_string(),
    ];
    println!(
        "  RSS curve (ops → MiB): {}",
        load.samples
            .iter()
            .map(|s| format!("{}→{:.0}", thousands(s.done), s.rss as f64 / MIB))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(r) = &recovered {
        println!(
            "  restart: ready in {:.2} s; server log: {} records replayed, recovery {} ms",
            ready.as_secs_f64(),
            r.records,
            r.ms
        );
    }
    emit(c, &headers, &[cells], &[row])
}

// ---------------------------------------------------------------------------------------------
// `idle-users`

async fn idle_users(a: IdleArgs, dir: PathBuf) -> Result<()> {
    let c = &a.common;
    let opts = ServerOpts {
        snapshot_every_records: None,
        snapshot_every_seconds: None,
        idle_seconds: Some(a.idle_seconds),
    };
    println!(
        "== idle users: {} users, each a subscription and a grant of a two-item pack, {} connections",
        a.users, a.conns
    );
    let mut server = Server::start(&c.vevee_bin, &dir, opts).await?;
    let idle_key = server.idle_key_accepted;
    let rss_base = server.rss();
    let created = create_idle_users(&server, a.users, a.conns, c.max_secs).await?;
    let rss_created = server.rss();
    let wait = a.wait_secs.unwrap_or(2.0 * a.idle_seconds as f64 + 5.0);
    println!(
        "  waiting {wait:.0} s for the users to go idle (idle_seconds {})",
        if idle_key {
            a.idle_seconds.to_string()
        } else {
            "refused by this build's config: not set".into()
        }
    );
    let t = Instant::now();
    let mut last_print = Instant::now();
    while t.elapsed().as_secs_f64() < wait {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if last_print.elapsed() >= Duration::from_secs(5) {
            println!(
                "  {:.0} s idle: RSS {}",
                t.elapsed().as_secs_f64(),
                mib(server.rss())
            );
            last_print = Instant::now();
        }
    }
    let rss_idle = server.rss();
    let hwm = server.rss_peak().max(rss_created).max(rss_idle);
    println!("  stopping with SIGTERM (final snapshot)");
    server.stop_graceful()?;
    let snapshot = newest_snapshot(&dir.join("snapshots"))?;
    let disk = dir_bytes(&dir.join("data")) + dir_bytes(&dir.join("snapshots"));
    // The same users after a restart, all asleep from the start: what they cost without the
    // memory the allocator kept from when they were awake.
    println!("  restarting on the same data");
    server.spawn_and_wait().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_restarted = server.rss();
    server.kill();

    let n = created.done;
    let per_user = rss_idle.saturating_sub(rss_base) as f64 / n.max(1) as f64;
    let per_user_restarted = rss_restarted.saturating_sub(rss_base) as f64 / n.max(1) as f64;
    let per_gib = n as f64 * GIB / rss_idle.max(1) as f64;
    let label = label_of(c);
    let row = json!({
        "bench": "idle-users",
        "label": label,
        "users": n,
        "users_asked": a.users,
        "cut_short": created.cut_short,
        "conns": a.conns,
        "create_secs": created.secs,
        "users_per_s": n as f64 / created.secs,
        "errors": created.errors,
        "first_error": created.first_error,
        "idle_seconds_set": idle_key.then_some(a.idle_seconds),
        "waited_secs": wait,
        "rss_after_start_bytes": rss_base,
        "rss_after_create_bytes": rss_created,
        "rss_idle_bytes": rss_idle,
        "rss_peak_bytes": hwm,
        "rss_bytes_per_user": per_user,
        "users_per_gib": per_gib,
        "rss_restarted_bytes": rss_restarted,
        "rss_bytes_per_user_restarted": per_user_restarted,
        "snapshot_bytes": snapshot.as_ref().map(|s| s.1),
        "disk_bytes": disk,
    });
    let headers = [
        "build",
        "users",
        "created/s",
        "idle_seconds",
        "RSS after creating",
        "RSS idle",
        "peak",
        "bytes/user",
        "users/GiB",
        "bytes/user after a restart",
        "snapshot (bytes/user)",
        "errors",
    ];
    let cells = vec![
        label.clone(),
        format!(
            "{}{}",
            thousands(n),
            if created.cut_short {
                " (cut short)"
            } else {
                ""
            }
        ),
        format!("{:.0}", n as f64 / created.secs),
        if idle_key {
            a.idle_seconds.to_string()
        } else {
            "not a key".into()
        },
        mib(rss_created),
        format!("{} after {wait:.0} s", mib(rss_idle)),
        mib(hwm),
        format!("{per_user:.0}"),
        thousands(per_gib as u64),
        format!("{per_user_restarted:.0}"),
        match &snapshot {
            Some((_, size)) => format!("{} ({:.0})", human_bytes(*size), *size as f64 / n as f64),
            None => "none".into(),
        },
        created.errors.to_string(),
    ];
    emit(c, &headers, &[cells], &[row])
}

/// Creates the plan and pack of the idle users, then users `i0`, `i1`, … (`users` of them), each a
/// subscription to `pro` and a grant of `duo` (two balances).
async fn create_idle_users(
    server: &Server,
    users: u64,
    conns: usize,
    max_secs: f64,
) -> Result<LoadOut> {
    let mut h = HttpConn::connect(server.addr).await?;
    h.expect(
        Method::POST,
        "/v1/plans",
        json!({"id": "pro", "name": "Pro",
               "price": {"amount": 900, "currency": "usd", "interval": "month"},
               "limits": [{"id": "images", "name": "Images", "match": ["image.*"], "limit": 40,
                           "unit": "count", "period": "month"}]})
        .to_string(),
        &[200, 201],
    )
    .await?;
    h.expect(
        Method::POST,
        "/v1/credit-packs",
        json!({"id": "duo", "name": "Duo", "items": [
            {"id": "img", "match": "image.*", "amount": 100, "unit": "count"},
            {"id": "vid", "match": "video.*", "amount": 60, "unit": "seconds"}]})
        .to_string(),
        &[200, 201],
    )
    .await?;
    let out = run_load(
        "users",
        server.addr,
        conns,
        users,
        max_secs,
        Some(server.pid()),
        Arc::new(|i| {
            let user = format!("i{i}");
            vec![
                Req {
                    method: Method::PUT,
                    path: format!("/v1/users/{user}/subscription"),
                    body: r#"{"planId":"pro"}"#.into(),
                    check: Check::Status(&[200]),
                },
                grant_req(&user, "duo", "idle"),
            ]
        }),
    )
    .await?;
    println!(
        "  {} users in {:.1} s ({:.0} users/s, 2 durable requests each), {} errors",
        out.done,
        out.secs,
        out.done as f64 / out.secs,
        out.errors
    );
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// `restart`

async fn restart(a: RestartArgs, dir: PathBuf) -> Result<()> {
    let c = &a.common;
    // No periodic snapshot: the graceful stop writes the one snapshot, and everything after it
    // stays in the journal tail.
    let opts = ServerOpts {
        snapshot_every_records: Some(NEVER_RECORDS),
        snapshot_every_seconds: Some(NEVER_SECONDS),
        idle_seconds: None,
    };
    println!(
        "== restart: {} users (a subscription and two balances each), then {} consumes after the snapshot",
        a.users, a.events
    );
    let mut server = Server::start(&c.vevee_bin, &dir, opts).await?;
    let created = create_idle_users(&server, a.users, a.conns, c.max_secs).await?;
    created.require_complete("creating the users")?;
    println!("  stopping with SIGTERM (final snapshot)");
    let stop = server.stop_graceful()?;
    let snapshot = newest_snapshot(&dir.join("snapshots"))?;
    let graceful_ready = server.restart().await?;
    println!(
        "  started after the graceful stop: ready in {:.2} s",
        graceful_ready.as_secs_f64()
    );

    let mut runs = Vec::new();
    // 1: SIGKILL with nothing written since the snapshot.
    server.kill();
    let ready = server.restart().await?;
    runs.push(RestartRun {
        name: "snapshot only",
        events: 0,
        ready,
        rss: server.rss(),
        recovery: server.recovery_line(),
    });
    println!("  {}", runs[0].line());

    // 2: E consumes after the snapshot, then SIGKILL.
    let users = a.users.max(1);
    let load = run_load(
        "events",
        server.addr,
        a.conns,
        a.events,
        c.max_secs,
        Some(server.pid()),
        Arc::new(move |i| vec![consume_req(&format!("i{}", i % users))]),
    )
    .await?;
    server.kill();
    let ready = server.restart().await?;
    runs.push(RestartRun {
        name: "snapshot + journal tail",
        events: load.done,
        ready,
        rss: server.rss(),
        recovery: server.recovery_line(),
    });
    println!("  {}", runs[1].line());
    server.kill();

    let label = label_of(c);
    // The replay rate: what the tail added to the server's recovery time, per 1M records.
    let replay_per_m = match (&runs[0].recovery, &runs[1].recovery) {
        (Some(a), Some(b)) if b.records > a.records => {
            Some((b.ms as f64 - a.ms as f64) / (b.records - a.records) as f64 * 1e6)
        }
        _ => None,
    };
    let headers = [
        "build",
        "users",
        "restart after SIGKILL",
        "events after snapshot",
        "records replayed",
        "spawn → /readyz 200",
        "recovery (server log)",
        "replay ms per 1M records",
        "RSS when ready",
    ];
    let mut table = Vec::new();
    let mut rows = Vec::new();
    for r in &runs {
        table.push(vec![
            label.clone(),
            thousands(created.done),
            r.name.to_string(),
            thousands(r.events),
            r.recovery
                .as_ref()
                .map(|x| thousands(x.records))
                .unwrap_or_else(|| "?".into()),
            format!("{:.2} s", r.ready.as_secs_f64()),
            r.recovery
                .as_ref()
                .map(|x| format!("{} ms", x.ms))
                .unwrap_or_else(|| "?".into()),
            match (r.events, replay_per_m) {
                (0, _) | (_, None) => "–".into(),
                (_, Some(v)) => format!("{v:.0}"),
            },
            mib(r.rss),
        ]);
        rows.push(json!({
            "bench": "restart",
            "label": label,
            "users": created.done,
            "run": r.name,
            "events": r.events,
            "ready_secs": r.ready.as_secs_f64(),
            "rss_when_ready_bytes": r.rss,
            "recovery": r.recovery.as_ref().map(RecoveryLine::to_json),
            "replay_ms_per_million_records": if r.events > 0 { replay_per_m } else { None },
            "snapshot_bytes": snapshot.as_ref().map(|s| s.1),
            "graceful_stop_secs": stop.as_secs_f64(),
            "ready_after_graceful_stop_secs": graceful_ready.as_secs_f64(),
            "event_errors": load.errors,
            "event_first_error": load.first_error,
            "events_cut_short": load.cut_short,
            "events_per_s": load.done as f64 / load.secs,
        }));
    }
    emit(c, &headers, &table, &rows)
}

struct RestartRun {
    name: &'static str,
    events: u64,
    ready: Duration,
    rss: u64,
    recovery: Option<RecoveryLine>,
}

impl RestartRun {
    fn line(&self) -> String {
        format!(
            "{} ({} events after the snapshot): ready {:.2} s after spawn, RSS {}{}",
            self.name,
            self.events,
            self.ready.as_secs_f64(),
            mib(self.rss),
            self.recovery
                .as_ref()
                .map(|r| format!(
                    "; server log: {} records replayed in a recovery of {} ms",
                    r.records, r.ms
                ))
                .unwrap_or_default()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// `ledger-page`

const LEDGER_USER: &str = "ledger-user";

async fn ledger_page(a: LedgerArgs, dir: PathBuf) -> Result<()> {
    let c = &a.common;
    if a.batch == 0 || a.batch > 1000 {
        bail!("--batch must be 1 to 1000 (API.md's limit for /v1/batch)");
    }
    if a.limit == 0 || a.limit > 500 {
        bail!("--limit must be 1 to 500 (API.md's limit for the ledger)");
    }
    println!(
        "== ledger page: one user with {} ledger entries, pages of {}",
        a.entries, a.limit
    );
    let mut server = Server::start(&c.vevee_bin, &dir, ServerOpts::default()).await?;
    let addr = server.addr;
    create_big_pack(addr).await?;
    let mut h = HttpConn::connect(addr).await?;
    let g = grant_req(LEDGER_USER, "big", "ledger");
    h.request(&g).await?;
    let after_grant = ledger_len_upto(&mut h, 500).await?;
    h.request(&consume_req(LEDGER_USER)).await?;
    let per_consume = ledger_len_upto(&mut h, 500).await? - after_grant;
    if per_consume == 0 {
        bail!("a consume wrote no ledger entry");
    }
    let have = after_grant + per_consume;
    let consumes = a.entries.saturating_sub(have).div_ceil(per_consume);
    // POST /v1/batch (API.md) when the build has it: far fewer requests for one user's ledger.
    let probe = h
        .call(
            Method::POST,
            "/v1/batch",
            json!({"operations": [{"op": "check", "userId": LEDGER_USER, "model": "image.x",
                                   "amount": 1}]})
            .to_string(),
        )
        .await?;
    let batch = if probe.0 == StatusCode::OK {
        a.batch
    } else {
        1
    };
    let ops = consumes.div_ceil(batch);
    println!(
        "  a consume writes {per_consume} ledger entries: {consumes} more consumes, {}",
        if batch > 1 {
            format!("{ops} batches of {batch} over {} connections", a.conns)
        } else {
            format!(
                "one request each over {} connections (POST /v1/batch answered {})",
                a.conns, probe.0
            )
        }
    );
    let fill = run_load(
        "fill",
        addr,
        a.conns,
        ops,
        c.max_secs,
        Some(server.pid()),
        Arc::new(move |i| {
            if batch == 1 {
                return vec![consume_req(LEDGER_USER)];
            }
            let n = batch.min(consumes - i * batch);
            let op =
                json!({"op": "consume", "userId": LEDGER_USER, "model": "image.x", "amount": 1});
            let ops: Vec<&Value> = std::iter::repeat_n(&op, n as usize).collect();
            vec![Req {
                method: Method::POST,
                path: "/v1/batch".into(),
                body: json!({ "operations": ops }).to_string(),
                check: Check::BatchAllowed(n as usize),
            }]
        }),
    )
    .await?;
    fill.require_complete("filling the ledger")?;
    let consumed = 1 + consumes;
    println!(
        "  filled: {} consumes in {:.1} s ({:.0} consumes/s)",
        consumed,
        fill.secs,
        consumed as f64 / fill.secs,
    );
    let rss_filled = server.rss();

    // One pass over the whole ledger, 500 a page, to learn every id (newest first).
    let t = Instant::now();
    let mut ids: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs_f64(c.max_secs);
    let expected = after_grant + per_consume * consumed;
    let mut next_print = expected / 10;
    let mut walk_hist = new_hist();
    let mut walk_complete = false;
    while Instant::now() < deadline {
        let t_page = Instant::now();
        let page = ledger_page_req(&mut h, 500, cursor.as_deref()).await?;
        walk_hist.saturating_record(t_page.elapsed().as_micros() as u64);
        let data = page["data"]
            .as_array()
            .ok_or_else(|| anyhow!("ledger page without data: {page}"))?;
        for e in data {
            ids.push(
                e["id"]
                    .as_str()
                    .ok_or_else(|| anyhow!("entry without id: {e}"))?
                    .to_string(),
            );
        }
        cursor = ids.last().cloned();
        if ids.len() as u64 >= next_print {
            println!(
                "  paged {} of {} entries in {:.1} s",
                ids.len(),
                expected,
                t.elapsed().as_secs_f64()
            );
            next_print += expected / 10;
        }
        if page["hasMore"] != Value::Bool(true) || data.is_empty() {
            walk_complete = true;
            break;
        }
    }
    let walk_secs = t.elapsed().as_secs_f64();
    println!(
        "  walked {} entries in {walk_secs:.1} s (pages of 500: p50 {} ms, p99 {} ms){}",
        ids.len(),
        ms(walk_hist.value_at_quantile(0.5)),
        ms(walk_hist.value_at_quantile(0.99)),
        if walk_complete { "" } else { ", cut short" }
    );
    if walk_complete && ids.len() as u64 != expected {
        println!(
            "  note: the ledger has {} entries, {} were expected",
            ids.len(),
            expected
        );
    }
    if ids.len() < 2 {
        bail!("the ledger has fewer than 2 entries");
    }

    // The newest page (no cursor), then pages at random cursors, each checked against the walk.
    let mut first_hist = new_hist();
    for _ in 0..200 {
        let t = Instant::now();
        let page = ledger_page_req(&mut h, a.limit, None).await?;
        first_hist.saturating_record(t.elapsed().as_micros() as u64);
        if page["data"][0]["id"].as_str() != Some(ids[0].as_str()) {
            bail!("the newest page does not start with the newest entry");
        }
    }
    let mut hist = new_hist();
    let mut wrong = 0u64;
    let mut rng = Rng(0x1edd_3e55_0000_0001);
    let deadline = Instant::now() + Duration::from_secs_f64(c.max_secs);
    let t = Instant::now();
    let mut samples = 0u64;
    while samples < a.samples && Instant::now() < deadline {
        let j = (rng.next() % (ids.len() as u64 - 1)) as usize;
        let start = Instant::now();
        let page = ledger_page_req(&mut h, a.limit, Some(&ids[j])).await?;
        hist.saturating_record(start.elapsed().as_micros() as u64);
        samples += 1;
        let data = page["data"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let want = a.limit.min(ids.len() - 1 - j);
        if data.len() != want || data[0]["id"].as_str() != Some(ids[j + 1].as_str()) {
            wrong += 1;
        }
        if samples % (a.samples / 10).max(1) == 0 {
            println!(
                "  {samples} random pages in {:.1} s: p50 {} ms, p99 {} ms",
                t.elapsed().as_secs_f64(),
                ms(hist.value_at_quantile(0.5)),
                ms(hist.value_at_quantile(0.99))
            );
        }
    }
    let rss_end = server.rss();
    server.kill();

    let label = label_of(c);
    let row = json!({
        "bench": "ledger-page",
        "label": label,
        "entries": ids.len(),
        "entries_asked": a.entries,
        "walk_complete": walk_complete,
        "entries_per_consume": per_consume,
        "fill_consumes_per_s": consumed as f64 / fill.secs,
        "fill_batch": batch,
        "fill_errors": fill.errors,
        "fill_first_error": fill.first_error,
        "walk_secs": walk_secs,
        "walk_page500_p50_us": walk_hist.value_at_quantile(0.5),
        "walk_page500_p99_us": walk_hist.value_at_quantile(0.99),
        "limit": a.limit,
        "newest_page_p50_us": first_hist.value_at_quantile(0.5),
        "newest_page_p99_us": first_hist.value_at_quantile(0.99),
        "samples": samples,
        "p50_us": hist.value_at_quantile(0.5),
        "p99_us": hist.value_at_quantile(0.99),
        "max_us": hist.max(),
        "wrong_pages": wrong,
        "rss_filled_bytes": rss_filled,
        "rss_end_bytes": rss_end,
    });
    let headers = [
        "build",
        "ledger entries",
        "fill consumes/s",
        "newest page p50 / p99 ms",
        "random cursor: pages",
        "p50 ms",
        "p99 ms",
        "max ms",
        "wrong pages",
        "RSS",
    ];
    let cells = vec![
        label.clone(),
        format!(
            "{}{}",
            thousands(ids.len() as u64),
            if walk_complete {
                ""
            } else {
                " (walk cut short)"
            }
        ),
        format!("{:.0}", consumed as f64 / fill.secs),
        format!(
            "{} / {}",
            ms(first_hist.value_at_quantile(0.5)),
            ms(first_hist.value_at_quantile(0.99))
        ),
        samples.to_string(),
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.max()),
        wrong.to_string(),
        mib(rss_end),
    ];
    emit(c, &headers, &[cells], &[row])
}

async fn ledger_page_req(h: &mut HttpConn, limit: usize, after: Option<&str>) -> Result<Value> {
    let path = match after {
        Some(id) => format!("/v1/users/{LEDGER_USER}/ledger?limit={limit}&startingAfter={id}"),
        None => format!("/v1/users/{LEDGER_USER}/ledger?limit={limit}"),
    };
    let body = h.expect(Method::GET, &path, String::new(), &[200]).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// The number of ledger entries while there are fewer than `limit`.
async fn ledger_len_upto(h: &mut HttpConn, limit: usize) -> Result<u64> {
    let page = ledger_page_req(h, limit, None).await?;
    if page["hasMore"] == Value::Bool(true) {
        bail!("the ledger already has more than {limit} entries");
    }
    Ok(page["data"].as_array().map_or(0, Vec::len) as u64)
}

// ---------------------------------------------------------------------------------------------
// Requests.

async fn create_big_pack(addr: SocketAddr) -> Result<()> {
    let mut h = HttpConn::connect(addr).await?;
    h.expect(
        Method::POST,
        "/v1/credit-packs",
        json!({"id": "big", "name": "Big", "items": [
            {"id": "img", "match": "image.*", "amount": BIG_BALANCE, "unit": "count"}]})
        .to_string(),
        &[200, 201],
    )
    .await?;
    Ok(())
}

fn grant_req(user: &str, pack: &str, external_ref: &str) -> Req {
    Req {
        method: Method::POST,
        path: "/v1/credits/grants".into(),
        body: format!(
            r#"{{"userId":"{user}","packId":"{pack}","externalRef":"{external_ref}","source":"grant"}}"#
        ),
        check: Check::Status(&[200, 201]),
    }
}

fn consume_req(user: &str) -> Req {
    Req {
        method: Method::POST,
        path: "/v1/consume".into(),
        body: format!(r#"{{"userId":"{user}","model":"image.x","amount":1}}"#),
        check: Check::Allowed,
    }
}

struct Req {
    method: Method,
    path: String,
    body: String,
    check: Check,
}

/// What makes an answer a success.
#[derive(Clone, Copy)]
enum Check {
    Status(&'static [u16]),
    /// 200 and `"allowed":true` (a consume that was not denied).
    Allowed,
    /// 200 and this many `"allowed":true` results with no denial (a batch of consumes).
    BatchAllowed(usize),
}

impl Check {
    fn verify(self, status: StatusCode, body: &[u8]) -> Result<()> {
        let text = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let ok = match self {
            Check::Status(codes) => codes.contains(&status.as_u16()),
            Check::Allowed => status == StatusCode::OK && contains(body, br#""allowed":true"#),
            Check::BatchAllowed(n) => {
                status == StatusCode::OK
                    && count(body, br#""allowed":true"#) == n
                    && !contains(body, br#""allowed":false"#)
            }
        };
        if ok {
            Ok(())
        } else {
            bail!("{status} {}", text())
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

struct HttpConn {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl HttpConn {
    async fn connect(addr: SocketAddr) -> Result<HttpConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpConn { sender })
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: String,
    ) -> Result<(StatusCode, Bytes)> {
        let fut = async {
            self.sender.ready().await?;
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "127.0.0.1")
                .header("authorization", format!("Bearer {AUTH}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, bytes))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow!("{path}: no answer within {REQUEST_TIMEOUT:?}"))?
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

    async fn request(&mut self, req: &Req) -> Result<Bytes> {
        let (status, bytes) = self
            .call(req.method.clone(), &req.path, req.body.clone())
            .await?;
        req.check
            .verify(status, &bytes)
            .with_context(|| format!("{} {}", req.method, req.path))?;
        Ok(bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Closed-loop load: `total` operations over `conns` connections, each operation one or more
// requests; the server's RSS sampled at every 5 % of the operations, and every 250 ms.

type MakeReqs = Arc<dyn Fn(u64) -> Vec<Req> + Send + Sync>;

#[derive(Clone, Copy)]
struct Sample {
    done: u64,
    secs: f64,
    rss: u64,
}

struct LoadOut {
    done: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    /// Latency of whole operations, µs.
    hist: Histogram<u64>,
    /// At 5 %, 10 %, … of `total`, and at the end (when a server pid was given).
    samples: Vec<Sample>,
    /// Every [`TRACE_EVERY`] (when a server pid was given).
    trace: Vec<Sample>,
    cut_short: bool,
}

/// How often the dense RSS trace is sampled: a snapshot's peak lasts seconds.
const TRACE_EVERY: Duration = Duration::from_millis(250);

impl LoadOut {
    fn require_complete(&self, what: &str) -> Result<()> {
        if self.cut_short || self.errors > 0 {
            bail!(
                "{what}: {} done, {} errors, cut short: {}; first error: {}",
                self.done,
                self.errors,
                self.cut_short,
                self.first_error.as_deref().unwrap_or("none")
            );
        }
        Ok(())
    }
}

struct WorkerOut {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

async fn run_load(
    name: &'static str,
    addr: SocketAddr,
    conns: usize,
    total: u64,
    max_secs: f64,
    server_pid: Option<u32>,
    make: MakeReqs,
) -> Result<LoadOut> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(max_secs);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conns.max(1) {
        let conn = HttpConn::connect(addr).await?;
        let (make, next, done) = (make.clone(), next.clone(), done.clone());
        set.spawn(worker(conn, addr, make, next, done, total, deadline));
    }
    let monitor = {
        let (done, finished) = (done.clone(), finished.clone());
        tokio::spawn(async move {
            let (mut samples, mut trace) = (Vec::new(), Vec::new());
            let mut traced = t0;
            let mut k = 1u64;
            while !finished.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let d = done.load(Ordering::Relaxed);
                if let Some(pid) = server_pid.filter(|_| traced.elapsed() >= TRACE_EVERY) {
                    traced = Instant::now();
                    let secs = t0.elapsed().as_secs_f64();
                    trace.push(Sample {
                        done: d,
                        secs,
                        rss: rss_of(pid),
                    });
                }
                if total == 0 || k > 20 || d < total * k / 20 {
                    continue;
                }
                let secs = t0.elapsed().as_secs_f64();
                let rss = server_pid.map_or(0, rss_of);
                // One line and one sample for the boundaries crossed since the last look; 100 %
                // is sampled after the workers are done.
                while k <= 20 && d >= total * k / 20 {
                    k += 1;
                }
                if server_pid.is_some() && d < total {
                    samples.push(Sample { done: d, secs, rss });
                }
                println!(
                    "  [{name}] {:>3}% {d}/{total} in {secs:.1} s, {:.0}/s{}",
                    (k - 1) * 5,
                    d as f64 / secs,
                    if server_pid.is_some() {
                        format!(", server RSS {}", mib(rss))
                    } else {
                        String::new()
                    }
                );
            }
            (samples, trace)
        })
    };
    let mut hist = new_hist();
    let (mut errors, mut first_error) = (0, None);
    while let Some(out) = set.join_next().await {
        let out = out?;
        hist.add(&out.hist).expect("same histogram bounds");
        errors += out.errors;
        if first_error.is_none() {
            first_error = out.first_error;
        }
    }
    let secs = t0.elapsed().as_secs_f64().max(1e-6);
    finished.store(true, Ordering::Release);
    let (mut samples, trace) = monitor.await?;
    let done = done.load(Ordering::Relaxed);
    if let Some(pid) = server_pid {
        samples.push(Sample {
            done,
            secs,
            rss: rss_of(pid),
        });
    }
    if let Some(e) = &first_error {
        println!("  [{name}] {errors} errors, the first: {e}");
    }
    Ok(LoadOut {
        done,
        errors,
        first_error,
        secs,
        hist,
        samples,
        trace,
        cut_short: done < total,
    })
}

async fn worker(
    mut conn: HttpConn,
    addr: SocketAddr,
    make: MakeReqs,
    next: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    total: u64,
    deadline: Instant,
) -> WorkerOut {
    let mut out = WorkerOut {
        hist: new_hist(),
        errors: 0,
        first_error: None,
    };
    while Instant::now() < deadline {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            break;
        }
        let start = Instant::now();
        for req in make(i) {
            if let Err(e) = conn.request(&req).await {
                out.errors += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(format!("op {i}: {e:#}"));
                }
                // The connection may be mid-request: start a new one.
                match HttpConn::connect(addr).await {
                    Ok(c) => conn = c,
                    Err(e) => {
                        out.first_error = Some(format!("reconnect: {e:#}"));
                        return out;
                    }
                }
                break;
            }
        }
        out.hist
            .saturating_record(start.elapsed().as_micros() as u64);
        done.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// Least-squares slope of RSS against operations done, bytes per operation.
fn rss_slope(samples: &[Sample]) -> Option<f64> {
    if samples.len() < 3 {
        return None;
    }
    let n = samples.len() as f64;
    let mx = samples.iter().map(|s| s.done as f64).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.rss as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for s in samples {
        let dx = s.done as f64 - mx;
        sxy += dx * (s.rss as f64 - my);
        sxx += dx * dx;
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

// ---------------------------------------------------------------------------------------------
// The server process.

#[derive(Clone, Copy, Default)]
struct ServerOpts {
    snapshot_every_records: Option<u64>,
    snapshot_every_seconds: Option<u64>,
    /// `[server] idle_seconds`, written only while the build's config accepts it.
    idle_seconds: Option<u64>,
}

struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    bin: PathBuf,
    dir: PathBuf,
    opts: ServerOpts,
    /// Whether the config took `idle_seconds` (false when it was not asked for).
    idle_key_accepted: bool,
    /// Where the log of the current process starts in `vevee.log`.
    log_from: u64,
}

/// What the server logged when its recovery finished (`recovered`, JSON logs).
struct RecoveryLine {
    records: u64,
    ms: u64,
    users: Option<u64>,
}

impl RecoveryLine {
    fn to_json(&self) -> Value {
        json!({"records_replayed": self.records, "ms": self.ms, "users": self.users})
    }
}

impl Server {
    async fn start(bin: &Path, dir: &Path, opts: ServerOpts) -> Result<Server> {
        let mut server = Server {
            child: None,
            addr: "127.0.0.1:0".parse()?,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            idle_key_accepted: opts.idle_seconds.is_some(),
            opts,
            log_from: 0,
        };
        match server.spawn_and_wait().await {
            Ok(_) => Ok(server),
            Err(_) if server.opts.idle_seconds.is_some() && server.log_mentions("idle_seconds") => {
                let said = server.log_since_start();
                let line = said
                    .lines()
                    .find(|l| l.contains("idle_seconds"))
                    .unwrap_or_default();
                println!(
                    "  this build's config refuses idle_seconds, starting without it: {}",
                    line.chars().take(200).collect::<String>()
                );
                server.opts.idle_seconds = None;
                server.idle_key_accepted = false;
                server.spawn_and_wait().await?;
                Ok(server)
            }
            Err(e) => Err(e),
        }
    }

    fn config(&self, port: u16) -> String {
        let mut server = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\njson_logs = true\n\
             sandbox_requests_per_second = 100000000\n"
        );
        if let Some(s) = self.opts.idle_seconds {
            server.push_str(&format!("idle_seconds = {s}\n"));
        }
        let mut storage = format!(
            "[storage]\ndata_dir = \"{}\"\nsnapshot_dir = \"{}\"\n",
            self.dir.join("data").display(),
            self.dir.join("snapshots").display()
        );
        if let Some(n) = self.opts.snapshot_every_records {
            storage.push_str(&format!("snapshot_every_records = {n}\n"));
        }
        if let Some(n) = self.opts.snapshot_every_seconds {
            storage.push_str(&format!("snapshot_every_seconds = {n}\n"));
        }
        format!(
            "{server}{storage}[[apps]]\nid = \"soak\"\nsecret_key_live = \"{AUTH}\"\n\
             seed_demo_catalog = false\n"
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("vevee.log")
    }

    /// Spawns on a fresh port and waits for `/readyz` 200; the time from spawn to that answer.
    async fn spawn_and_wait(&mut self) -> Result<Duration> {
        let port = free_port()?;
        let config = self.dir.join("config.toml");
        std::fs::write(&config, self.config(port))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        self.log_from = log.metadata()?.len();
        self.addr = format!("127.0.0.1:{port}").parse()?;
        let t = Instant::now();
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let end = t + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().expect("spawned").try_wait()? {
                self.child = None;
                bail!(
                    "the server exited during startup ({status}); log:\n{}",
                    self.log_tail(10)
                );
            }
            if ready(self.addr).await {
                return Ok(t.elapsed());
            }
            if Instant::now() > end {
                bail!("not ready {READY_TIMEOUT:?} after spawn");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Starts again on the same directories (after a stop or a kill).
    async fn restart(&mut self) -> Result<Duration> {
        self.kill();
        self.spawn_and_wait().await
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn rss(&self) -> u64 {
        rss_of(self.pid())
    }

    fn rss_peak(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:").unwrap_or(0) * 1024
    }

    /// SIGTERM (flush and final snapshot) and wait for the exit.
    fn stop_graceful(&mut self) -> Result<Duration> {
        let Some(mut child) = self.child.take() else {
            bail!("the server is not running")
        };
        let t = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let end = t + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!(
                        "the server stopped with {status}; log:\n{}",
                        self.log_tail(10)
                    );
                }
                return Ok(t.elapsed());
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the server did not stop within {READY_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, no shutdown.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_since_start(&self) -> String {
        let text = std::fs::read(self.log_path()).unwrap_or_default();
        let from = (self.log_from as usize).min(text.len());
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    fn log_mentions(&self, what: &str) -> bool {
        self.log_since_start().contains(what)
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = self.log_since_start();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The `recovered` line the current process logged.
    fn recovery_line(&self) -> Option<RecoveryLine> {
        self.log_since_start().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let f = &v["fields"];
            if f["message"].as_str() != Some("recovered") {
                return None;
            }
            Some(RecoveryLine {
                records: f["records"].as_u64()?,
                ms: f["ms"].as_u64()?,
                users: f["users"].as_u64(),
            })
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn ready(addr: SocketAddr) -> bool {
    let Ok(Ok(mut h)) = tokio::time::timeout(Duration::from_secs(1), HttpConn::connect(addr)).await
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            h.call(Method::GET, "/readyz", String::new())
        )
        .await,
        Ok(Ok((StatusCode::OK, _)))
    )
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn rss_of(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:").unwrap_or(0) * 1024
}

/// The newest `snapshot-*.bin` in `dir` and its size.
fn newest_snapshot(dir: &Path) -> Result<Option<(PathBuf, u64)>> {
    let mut newest: Option<(String, PathBuf, u64)> = None;
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("snapshot-") && name.ends_with(".bin")) {
            continue;
        }
        // Names carry the sequence in 20 digits, so the greatest name is the newest.
        if newest.as_ref().is_none_or(|(n, _, _)| name > *n) {
            let size = entry.metadata()?.len();
            newest = Some((name, entry.path(), size));
        }
    }
    Ok(newest.map(|(_, p, s)| (p, s)))
}

/// Bytes a directory tree takes on disk (allocated blocks, as `du` counts).
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Output.

/// Prints the markdown table and appends the JSON rows to `--out-json`.
fn emit(c: &Common, headers: &[&str], table: &[Vec<String>], rows: &[Value]) -> Result<()> {
    println!();
    println!("| {} |", headers.join(" | "));
    println!(
        "|{}",
        headers
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    );
    for cells in table {
        println!("| {} |", cells.join(" | "));
    }
    if let Some(path) = &c.out_json {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{}", path.display()))?;
        for row in rows {
            writeln!(f, "{row}")?;
        }
    }
    Ok(())
}

/// `--label`, else the short commit of the checkout that holds the binary (`…/target/release/vevee`),
/// with `+dirty` when it has uncommitted changes to tracked files.
fn label_of(c: &Common) -> String {
    if let Some(l) = &c.label {
        return l.clone();
    }
    let bin = std::fs::canonicalize(&c.vevee_bin).unwrap_or_else(|_| c.vevee_bin.clone());
    let Some(repo) = bin.ancestors().nth(3) else {
        return bin.display().to_string();
    };
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{commit}{}", if dirty { "+dirty" } else { "" })
        }
        None => bin.display().to_string(),
    }
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
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{cores} cores ({cpu}), {:.0} GiB memory",
        mem as f64 / 1024.0 / 1024.0
    )
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

/// "E MiB → L MiB (±N MB)".
fn from_to(early: u64, late: u64) -> String {
    format!(
        "{} → {} ({:+.1} MB)",
        mib(early),
        mib(late),
        (late as f64 - early as f64) / 1e6
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / MIB)
}

fn human_bytes(bytes: u64) -> String {
    if bytes >= 10 * 1024 * 1024 {
        format!("{:.0} MiB", bytes as f64 / MIB)
    } else if bytes >= 10 * 1024 {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// xorshift64*: cursors drawn reproducibly without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
