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
//!
//! One file per target: `vevee.rs` (and the HTTP client `noop` shares), `noop.rs`, `postgres.rs`,
//! `redis_lua.rs`; `targets.rs` puts them behind one `Conn`. `workload.rs` is the load loop,
//! `suite.rs` the run and its report, `batch.rs` the batch comparison (issue 17).
//!
//! This is a workspace member of its own so that vevee's `cargo test` does not build the
//! PostgreSQL and Redis clients.

mod batch;
mod calibrate;
mod noop;
mod postgres;
mod procs;
mod redis_lua;
mod suite;
mod targets;
mod vevee;
mod workload;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Every single request gives up after this long (and counts as an error).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Open loop: ops not started this long after the end of the schedule are dropped and recorded
/// with the latency they had reached (a lower bound).
pub const OPEN_GRACE: Duration = Duration::from_secs(2);
pub const BALANCE: i64 = 1_000_000_000;
pub const HOT_USER: &str = "hot";

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
pub struct SuiteArgs {
    /// The vevee server binary (`cargo build --release` makes it).
    #[arg(long, default_value = "target/release/vevee")]
    pub vevee_bin: PathBuf,
    /// A tokio-postgres connection string; the PostgreSQL rows are skipped without it.
    #[arg(long)]
    pub pg: Option<String>,
    /// PostgreSQL's `postmaster.pid`, for the server's CPU and memory (postmaster and children).
    #[arg(long)]
    pub pg_pid_file: Option<PathBuf>,
    /// Redis with `appendfsync always`, as host:port.
    #[arg(long)]
    pub redis_always: Option<String>,
    #[arg(long)]
    pub redis_always_pid_file: Option<PathBuf>,
    /// Redis with `appendfsync everysec`, as host:port.
    #[arg(long)]
    pub redis_everysec: Option<String>,
    #[arg(long)]
    pub redis_everysec_pid_file: Option<PathBuf>,
    /// Where vevee's data and the calibration file go (a temp dir is made inside).
    #[arg(long, default_value = "/tmp")]
    pub work_dir: PathBuf,
    /// Comma list of targets to run: vevee, pg-lock, pg-cond, redis-always, redis-everysec, noop.
    #[arg(
        long,
        default_value = "vevee,pg-lock,pg-cond,redis-always,redis-everysec,noop"
    )]
    pub targets: String,
    /// Seconds measured per cell.
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    /// Unmeasured closed-loop seconds before each cell.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Comma list of workloads: uniform, hot, mix (reserve+commit pairs), consume
    /// (`POST /v1/consume`; not run against PostgreSQL).
    #[arg(long, default_value = "uniform,hot,mix")]
    pub workloads: String,
    /// Users in the uniform workloads.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// Connections (one task each) for the closed-loop cells.
    #[arg(long, default_value_t = 64)]
    pub conns: usize,
    /// Connections for the extra closed-loop uniform cell (maximum throughput: with a slow
    /// fsync, a durable server needs many requests in flight to fill its group commits).
    #[arg(long, default_value_t = 256)]
    pub wide_conns: usize,
    /// Connections for the open-loop cells (enough to keep the schedule when each answer waits
    /// for an fsync).
    #[arg(long, default_value_t = 256)]
    pub open_conns: usize,
    /// The high open-loop rate, requests per second (uniform workload).
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// The low open-loop rate, requests per second (every workload).
    #[arg(long, default_value_t = 2_000.0)]
    pub low_rate: f64,
    /// Users created (each a subscription and two balances) by the memory probe; 0 skips it.
    #[arg(long, default_value_t = 200_000)]
    pub mem_users: u64,
    /// Load generator threads: 1 is a current-thread tokio runtime.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Appends one JSON object per row here.
    #[arg(long)]
    pub out_json: Option<PathBuf>,
    /// Writes the final markdown tables here.
    #[arg(long)]
    pub out_md: Option<PathBuf>,
    /// Records a `perf` profile of vevee during its first closed-loop cell into this file.
    #[arg(long)]
    pub perf_out: Option<PathBuf>,
    /// `perf record --call-graph` mode: `dwarf` walks stacks without frame pointers (neither
    /// vevee nor Rust's std keeps them), `fp` is cheaper and shallower.
    #[arg(long, default_value = "dwarf,32768")]
    pub perf_call_graph: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::NoopServe { listen } => noop::serve(listen),
        Cmd::Batch(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(batch::run(args)),
        Cmd::Calibrate { dir, secs } => {
            for overwrite in [false, true] {
                println!(
                    "{}",
                    calibrate::fsync_calibration(&dir, secs, overwrite)?.line()
                );
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
            runtime.block_on(suite::suite(args))
        }
    }
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}
