//! Workloads, the load loop of one connection (closed or open loop), and one measured cell.

use crate::procs::ProcWatch;
use crate::targets::{Conn, Kind, Spec, timed};
use crate::{HOT_USER, OPEN_GRACE, SuiteArgs, new_hist};
use anyhow::Result;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Uniform,
    Hot,
    Mix,
    /// `POST /v1/consume` of 1 (a reserve and commit in one request) over the users, uniformly.
    Consume,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Uniform => "uniform",
            Workload::Hot => "hot",
            Workload::Mix => "mix",
            Workload::Consume => "consume",
        }
    }

    /// Mean requests per op (a pair is two).
    pub fn requests_per_op(self) -> f64 {
        match self {
            Workload::Uniform | Workload::Hot => 2.0,
            Workload::Mix => 0.8 * 2.0 + 0.2,
            Workload::Consume => 1.0,
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
    Consume(String),
    Usage(String),
    Grant(String, String),
}

fn pick(workload: Workload, rng: &mut Rng, users: u64, grant_seq: &AtomicU64) -> Op {
    let uniform = |rng: &mut Rng| format!("u{}", rng.below(users));
    match workload {
        Workload::Uniform => Op::Pair(uniform(rng)),
        Workload::Consume => Op::Consume(uniform(rng)),
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
        Op::Consume(user) => {
            timed(conn.consume(&user)).await?;
            hist.saturating_record(start.elapsed().as_micros() as u64);
            Ok(1)
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

pub enum Mode {
    Closed,
    Open(f64),
}

impl Mode {
    pub fn label(self, conns: usize) -> String {
        match self {
            Mode::Closed => format!("closed, {conns} conns"),
            Mode::Open(rate) => format!("open {rate:.0}/s"),
        }
    }
}

pub struct Row {
    pub target: Kind,
    pub workload: Workload,
    pub mode: String,
    pub secs: f64,
    pub ok: u64,
    pub errors: u64,
    pub dropped: u64,
    pub rps: f64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub saturated: bool,
    pub server_cpu: f64,
    pub server_mem: u64,
    pub client_cpu: f64,
    pub first_error: Option<String>,
}

pub struct Target {
    pub spec: Arc<Spec>,
    pub conns: Vec<Conn>,
    pub watch: Option<ProcWatch>,
}

pub struct Ctx {
    pub args: SuiteArgs,
    pub ticks: u64,
    pub grant_seq: Arc<AtomicU64>,
    pub seed: AtomicU64,
}

pub async fn run_cell(
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

pub fn ms(us: u64) -> String {
    if us >= 100_000 {
        format!("{:.0}", us as f64 / 1000.0)
    } else if us >= 10_000 {
        format!("{:.1}", us as f64 / 1000.0)
    } else {
        format!("{:.2}", us as f64 / 1000.0)
    }
}

pub fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

pub fn row_line(r: &Row) -> String {
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

pub fn row_json(r: &Row) -> String {
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
