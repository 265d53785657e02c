//! Load generator for durable reserve+commit pairs through the real actors and the sled journal.
//!
//! Each pair is a reserve of one `image.dall-e-3` followed by the commit of that reservation, both
//! through `Engine::user`, each answered only once its events are durable. Rows: 100k users with the
//! durable journal, the same with the journal off (the ceiling: the writer publishes sequences
//! without writing), and a hot user that every task hits.
//!
//! Run: `cargo bench --bench actors`. Environment (all optional):
//! `VEVEE_BENCH_SECS` (10) seconds per row, `VEVEE_BENCH_USERS` (100000),
//! `VEVEE_BENCH_TASKS` (4000) pairs in flight, `VEVEE_BENCH_ACTOR_THREADS` and
//! `VEVEE_BENCH_TOKIO_THREADS` (both: the number of cores), `VEVEE_BENCH_ROWS` (a comma list of
//! `durable`, `off`, `hot`, `hot-off`; default `durable,off,hot`).

/// The same allocator as the `vevee` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use hdrhistogram::Histogram;
use metrics::{HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vevee::actors::journal_writer::{self, JournalQueue};
use vevee::actors::user_actor::{Request, View};
use vevee::actors::{Engine, EngineOptions};
use vevee::engine::catalog::{CatalogCommand, Limit, Pack, PackItem, Plan, Price};
use vevee::engine::event::GrantSource;
use vevee::engine::ids::{ModelKey, Pattern, UserId};
use vevee::engine::time::Period;
use vevee::engine::{Command, Mode, Ts, UserKey};
use vevee::persistence::image::Image;
use vevee::persistence::{History, SledJournal};

const APP: &str = "bench";
/// No single step of the bench (a setup, a drain, a shutdown) may take longer than this.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts the journal writer's batches through the `vevee_journal_batch_records` histogram.
#[derive(Default)]
struct BatchCounter {
    batches: AtomicU64,
    records: AtomicU64,
    flush_nanos: AtomicU64,
}

struct BatchRecords(Arc<BatchCounter>);
struct FlushSeconds(Arc<BatchCounter>);

impl HistogramFn for BatchRecords {
    fn record(&self, value: f64) {
        self.0.batches.fetch_add(1, Ordering::Relaxed);
        self.0.records.fetch_add(value as u64, Ordering::Relaxed);
    }
}

impl HistogramFn for FlushSeconds {
    fn record(&self, value: f64) {
        let nanos = (value * 1e9) as u64;
        self.0.flush_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

struct BenchRecorder(Arc<BatchCounter>);

impl Recorder for BenchRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        match key.name() {
            "vevee_journal_batch_records" => {
                metrics::Histogram::from_arc(Arc::new(BatchRecords(self.0.clone())))
            }
            "vevee_journal_flush_seconds" => {
                metrics::Histogram::from_arc(Arc::new(FlushSeconds(self.0.clone())))
            }
            _ => metrics::Histogram::noop(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Row {
    Durable,
    Off,
    Hot,
    HotOff,
}

impl Row {
    fn parse(text: &str) -> Option<Row> {
        Some(match text.trim() {
            "durable" => Row::Durable,
            "off" => Row::Off,
            "hot" => Row::Hot,
            "hot-off" => Row::HotOff,
            _ => return None,
        })
    }

    fn label(self, users: usize) -> String {
        match self {
            Row::Durable => format!("{users} users, durable journal"),
            Row::Off => format!("{users} users, journal off (ceiling)"),
            Row::Hot => "1 hot user, durable journal".into(),
            Row::HotOff => "1 hot user, journal off (ceiling)".into(),
        }
    }

    fn durable(self) -> bool {
        matches!(self, Row::Durable | Row::Hot)
    }

    fn hot(self) -> bool {
        matches!(self, Row::Hot | Row::HotOff)
    }
}

struct Settings {
    secs: u64,
    users: usize,
    tasks: usize,
    actor_threads: usize,
}

struct Outcome {
    pairs: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    batches: u64,
    records: u64,
    flush: Duration,
    setup: Duration,
}

fn pattern(text: &str) -> Pattern {
    Pattern::parse(text).expect("valid pattern")
}

fn price(amount: u64) -> Price {
    Price {
        amount,
        currency: "usd".into(),
        interval: None,
    }
}

fn plan() -> Plan {
    Plan {
        id: "pro".into(),
        name: "Pro".into(),
        price: price(2_000),
        limits: vec![Limit {
            id: "images".into(),
            name: "Images".into(),
            patterns: vec![pattern("image.*")],
            limit: 40,
            unit: "image".into(),
            period: Period::Month,
        }],
        created_at: Ts(0),
        updated_at: Ts(0),
    }
}

fn pack(id: &str, amount: u64) -> Pack {
    Pack {
        id: id.into(),
        name: id.into(),
        price: price(1_500),
        expires_in_days: None,
        stripe_price_id: None,
        archived: false,
        items: vec![PackItem {
            id: "any".into(),
            pattern: pattern("*"),
            amount,
            unit: "credit".into(),
            low_balance_threshold: None,
        }],
        created_at: Ts(0),
        updated_at: Ts(0),
    }
}

fn user_key(i: usize) -> UserKey {
    UserKey {
        app: APP.into(),
        mode: Mode::Live,
        user: UserId::parse(&format!("user-{i}")).expect("valid user id"),
    }
}

fn grant(pack_id: &str, i: usize) -> Command {
    Command::Grant {
        pack_id: pack_id.into(),
        external_ref: format!("bench-{i}"),
        source: GrantSource::Grant,
        notes: None,
        expires_at: None,
        payment_intent: None,
        expiring_notice_days: 3,
    }
}

async fn timed<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP_TIMEOUT:?}"))
}

/// A small xorshift generator per task: no shared state, no extra dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Subscribes every user to Pro and grants a pack of 1,000,000 credits on `*`, `tasks` at a time.
async fn set_up_users(engine: &Engine, keys: &Arc<Vec<UserKey>>, tasks: usize) {
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks.min(keys.len()) {
        let (engine, keys, next) = (engine.clone(), keys.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(key) = keys.get(i) else { break };
                let subscribe = Command::Subscribe {
                    plan_id: "pro".into(),
                };
                let requests = [subscribe, grant("credits", i)];
                for command in requests {
                    let answer = engine.user(key.clone(), Request::Command(command)).await;
                    answer.expect("setup command accepted");
                }
            }
        }));
    }
    for handle in handles {
        handle.await.expect("setup task");
    }
}

async fn run_row(row: Row, s: &Settings, counter: &BatchCounter) -> Outcome {
    let dir = tempfile::tempdir().expect("temporary directory");
    let queue = JournalQueue::new(0);
    let (writer, history) = if row.durable() {
        let journal = SledJournal::open(&dir.path().join("data")).expect("open the sled journal");
        let history = History::open(&journal).expect("open the history");
        let writer = journal_writer::spawn(queue.clone(), Some((journal, history.clone())));
        (writer, Some(history))
    } else {
        let writer = journal_writer::spawn(queue.clone(), None::<(SledJournal, History)>);
        (writer, None)
    };
    let engine = Engine::start(
        Image::default(),
        &[APP.to_string()],
        queue.clone(),
        history,
        EngineOptions {
            threads: s.actor_threads,
            idle: Duration::from_secs(300),
            journal_backlog_records_max: 1 << 20,
            bounds: Default::default(),
            test_panic_user: None,
        },
    );

    let setup_started = Instant::now();
    let catalog = [
        CatalogCommand::PutPlan(plan()),
        CatalogCommand::PutPack(pack("credits", 1_000_000)),
        CatalogCommand::PutPack(pack("hot", 1 << 50)),
    ];
    for command in catalog {
        timed("a catalog change", engine.change_catalog(APP, command))
            .await
            .expect("catalog change accepted");
    }
    let keys: Arc<Vec<UserKey>> = if row.hot() {
        let key = user_key(0);
        let subscribe = Command::Subscribe {
            plan_id: "pro".into(),
        };
        for command in [subscribe, grant("hot", 0)] {
            let answer = engine.user(key.clone(), Request::Command(command));
            timed("the hot user's setup", answer)
                .await
                .expect("setup command accepted");
        }
        Arc::new(vec![key])
    } else {
        let keys = Arc::new((0..s.users).map(user_key).collect::<Vec<_>>());
        timed("the users' setup", set_up_users(&engine, &keys, s.tasks)).await;
        keys
    };
    let setup = setup_started.elapsed();

    let batches_before = counter.batches.load(Ordering::Relaxed);
    let records_before = counter.records.load(Ordering::Relaxed);
    let flush_before = counter.flush_nanos.load(Ordering::Relaxed);
    let model = ModelKey::parse("image.dall-e-3").expect("valid model key");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(s.secs);
    let mut handles = Vec::with_capacity(s.tasks);
    for t in 0..s.tasks {
        let (engine, keys, model) = (engine.clone(), keys.clone(), model.clone());
        handles.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((t as u64 + 1) << 17));
            let (mut pairs, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                let key = keys[rng.below(keys.len())].clone();
                let pair_started = Instant::now();
                let reserve = Command::Reserve {
                    model: model.clone(),
                    amount: 1,
                    ttl_ms: 600_000,
                    metadata: None,
                    request_key: None,
                    commit: false,
                };
                let reservation_id = match engine.user(key.clone(), Request::Command(reserve)).await
                {
                    Ok(View::Reservation(r)) => r.id,
                    _ => {
                        errors += 1;
                        continue;
                    }
                };
                let commit = Command::Commit {
                    reservation_id,
                    amount: None,
                    response: None,
                };
                match engine.user(key, Request::Command(commit)).await {
                    Ok(View::Reservation(_)) => {
                        let micros = pair_started.elapsed().as_micros() as u64;
                        latency.saturating_record(micros.max(1));
                        pairs += 1;
                    }
                    _ => errors += 1,
                }
            }
            (pairs, errors, latency)
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut pairs, mut errors) = (0, 0);
    let collect = async {
        for handle in handles {
            let (p, e, h) = handle.await.expect("load task");
            pairs += p;
            errors += e;
            latency_us.add(h).expect("same bounds");
        }
    };
    // A task ends within one pair of the deadline; past the step timeout something is stuck.
    timed("the load tasks", collect).await;
    let elapsed = started.elapsed();
    let batches = counter.batches.load(Ordering::Relaxed) - batches_before;
    let records = counter.records.load(Ordering::Relaxed) - records_before;
    let flush = counter.flush_nanos.load(Ordering::Relaxed) - flush_before;

    timed("the final flush", engine.flush())
        .await
        .expect("journal flushed");
    drop(engine);
    queue.close();
    let joined = tokio::task::spawn_blocking(move || writer.join());
    timed("the journal writer's stop", joined)
        .await
        .expect("join task")
        .expect("journal writer thread");
    drop(dir);

    Outcome {
        pairs,
        errors,
        elapsed,
        latency_us,
        batches,
        records,
        flush: Duration::from_nanos(flush),
        setup,
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn report(row: Row, users: usize, o: &Outcome) -> f64 {
    let rate = o.pairs as f64 / o.elapsed.as_secs_f64();
    let h = &o.latency_us;
    println!("{}", row.label(users));
    println!(
        "  {:>10.0} pairs/s   ({} pairs in {:.2} s, {} errors; setup {:.1} s)",
        rate,
        o.pairs,
        o.elapsed.as_secs_f64(),
        o.errors,
        o.setup.as_secs_f64()
    );
    println!(
        "  pair latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    );
    if o.batches > 0 {
        let mean_flush = o.flush.as_secs_f64() * 1000.0 / o.batches as f64;
        println!(
            "  journal: {} batches ({:.0}/s), {:.0} records per batch, {:.3} ms per write+fsync",
            o.batches,
            o.batches as f64 / o.elapsed.as_secs_f64(),
            o.records as f64 / o.batches as f64,
            mean_flush
        );
    }
    rate
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let settings = Settings {
        secs: env_or("VEVEE_BENCH_SECS", 10),
        users: env_or("VEVEE_BENCH_USERS", 100_000),
        tasks: env_or("VEVEE_BENCH_TASKS", 4_000).max(1),
        actor_threads: env_or("VEVEE_BENCH_ACTOR_THREADS", cores),
    };
    let tokio_threads = env_or("VEVEE_BENCH_TOKIO_THREADS", cores);
    let rows: Vec<Row> = std::env::var("VEVEE_BENCH_ROWS")
        .unwrap_or_else(|_| "durable,off,hot".into())
        .split(',')
        .filter_map(Row::parse)
        .collect();

    let counter = Arc::new(BatchCounter::default());
    if metrics::set_global_recorder(BenchRecorder(counter.clone())).is_err() {
        eprintln!("a metrics recorder was set already; journal batches are not counted");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(tokio_threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");

    println!(
        "durable reserve+commit pairs: {} users, {} pairs in flight, {} s per row, \
         {} actor threads, {} tokio threads, {} cores",
        settings.users, settings.tasks, settings.secs, settings.actor_threads, tokio_threads, cores
    );
    let mut rates = Vec::new();
    for row in rows {
        let outcome = runtime.block_on(run_row(row, &settings, &counter));
        rates.push((row, report(row, settings.users, &outcome)));
    }
    let rate = |wanted: Row| rates.iter().find(|(r, _)| *r == wanted).map(|(_, x)| *x);
    if let (Some(durable), Some(off)) = (rate(Row::Durable), rate(Row::Off)) {
        println!(
            "durable / journal off: {:.2} ({:.0} of {:.0} pairs/s)",
            durable / off,
            durable,
            off
        );
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
}
