//! `load suite`: every target and workload one after the other, fdatasync calibration before and
//! after, the memory probe, and the markdown report.

use crate::calibrate::{Calibration, fsync_calibration};
use crate::procs::{ProcWatch, clock_ticks, pid_from_file, status_kib};
use crate::redis_lua::{REDIS_LUA, redis_reset};
use crate::targets::{Conn, Kind, Spec, timed};
use crate::vevee::{http_connect, start_vevee, vevee_catalog};
use crate::workload::{Ctx, Mode, Row, Target, Workload, mib, ms, row_json, row_line, run_cell};
use crate::{HOT_USER, SuiteArgs, noop, postgres};
use anyhow::{Result, bail};
use hyper::Method;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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

pub fn user_of(i: u64, users: u64) -> String {
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

fn seed_grant(conn: &mut Conn, i: u64) -> OpFuture<'_> {
    Box::pin(async move {
        let users = SEED_USERS.load(Ordering::Relaxed);
        conn.grant(&user_of(i, users), "seed").await
    })
}

static SEED_USERS: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------------------------------------
pub async fn suite(args: SuiteArgs) -> Result<()> {
    let work = args
        .work_dir
        .join(format!("vevee-load-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = suite_in(args, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

pub fn machine_line() -> String {
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
            let (guard, addr) = noop::spawn().await?;
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
            postgres::pg_reset(pg, args.users).await?;
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
    let cells = cells(args)?;
    let first_closed = cells.iter().position(|(_, m, _)| matches!(m, Mode::Closed));
    for (i, (workload, mode, conns)) in cells.into_iter().enumerate() {
        if matches!(kind, Kind::PgLock | Kind::PgCond) && workload == Workload::Consume {
            continue;
        }
        if args.warmup > 0.0 {
            run_cell(ctx, &mut target, workload, Mode::Closed, conns, args.warmup).await?;
        }
        let perf = match (&args.perf_out, kind) {
            (Some(out), Kind::Vevee) if Some(i) == first_closed => {
                let pid = target.watch.as_ref().map(|w| w.pid).unwrap_or(0);
                Command::new("perf")
                    .args([
                        "record",
                        "-F",
                        "499",
                        "--call-graph",
                        &args.perf_call_graph,
                        "-o",
                    ])
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

/// The cells of a target, in order: a closed loop on `conns` connections for each workload, then
/// (for the first of `uniform` and `consume` asked for) the wide closed loop and the high open
/// rate, then the low open rate for each workload. A zero `--wide-conns`, `--rate` or
/// `--low-rate` leaves those cells out.
fn cells(args: &SuiteArgs) -> Result<Vec<(Workload, Mode, usize)>> {
    let mut workloads = Vec::new();
    for name in args.workloads.split(',').map(str::trim) {
        workloads.push(match name {
            "uniform" => Workload::Uniform,
            "hot" => Workload::Hot,
            "mix" => Workload::Mix,
            "consume" => Workload::Consume,
            other => bail!("unknown workload {other:?} (uniform, hot, mix, consume)"),
        });
    }
    let (c, w, o) = (args.conns, args.wide_conns, args.open_conns);
    let mut cells: Vec<_> = workloads.iter().map(|&wl| (wl, Mode::Closed, c)).collect();
    let main = workloads
        .iter()
        .copied()
        .find(|wl| matches!(wl, Workload::Uniform | Workload::Consume));
    if let Some(wl) = main {
        if w > 0 {
            cells.push((wl, Mode::Closed, w));
        }
        if args.rate > 0.0 {
            cells.push((wl, Mode::Open(args.rate), o));
        }
    }
    if args.low_rate > 0.0 {
        cells.extend(
            workloads
                .iter()
                .map(|&wl| (wl, Mode::Open(args.low_rate), o)),
        );
    }
    Ok(cells)
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
