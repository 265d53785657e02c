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
//!
//! Webhooks out (issue 15: reserves with an endpoint subscribed to `*` at a slow receiver, within
//! noise of those without). The pairs alone make next to no event in a run of seconds (a user
//! reaches Pro's 40 images, `plan.limit_reached`, only after 40 pairs), so:
//! - `VEVEE_BENCH_EVENTS_PER_SEC` (0) grants a small pack to a random user at this rate while
//!   the pairs run, one `credits.granted` event each, through the same engine;
//! - durable rows run the real deliverer (`Webhooks::start`, as `startup::run` does: a server
//!   always runs it), with no endpoint;
//! - `VEVEE_BENCH_WEBHOOK_MS` (unset) adds one endpoint subscribed to `*`, created after the
//!   setup, at a receiver in this process that answers each POST after this many milliseconds.
//!   With it, the events rate defaults to 200/s.
//!
//! Before the pairs start, the deliverer has taken every setup event (they predate the endpoint
//! and are not sent), with or without the endpoint, so both runs start from the same disk and
//! what the deliverer does during the run is the run's own events.
//!
//! Compare `VEVEE_BENCH_EVENTS_PER_SEC=200 VEVEE_BENCH_ROWS=durable,hot` with the same plus
//! `VEVEE_BENCH_WEBHOOK_MS=500`: the same work on the actors, with and without the deliverer.

// The same allocator and settings as the `vevee` binary.
vevee::global_allocator!();

use hdrhistogram::Histogram;
use metrics::{HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vevee::actors::journal_writer::{self, JournalQueue};
use vevee::actors::user_actor::{Request, View};
use vevee::actors::{Engine, EngineOptions};
use vevee::config::Config;
use vevee::engine::catalog::{CatalogCommand, Limit, Pack, PackItem, Plan, Price};
use vevee::engine::event::GrantSource;
use vevee::engine::ids::{ModelKey, Pattern, UserId};
use vevee::engine::time::Period;
use vevee::engine::{Command, Mode, Ts, UserKey};
use vevee::persistence::image::Image;
use vevee::persistence::webhooks::WebhookStore;
use vevee::persistence::{History, SledJournal};
use vevee::webhooks::Webhooks;
use vevee::webhooks::endpoint::EventFilter;
use vevee::webhooks::registry::Registry;

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
    /// Grants (one event each) per second while the pairs run.
    events_per_sec: f64,
    /// With the deliverer: the receiver's delay per answer.
    webhook_ms: Option<u64>,
}

/// What the webhook side of a row did, when it ran.
struct WebhookOutcome {
    /// Grants answered during the run: one event each.
    events: u64,
    /// POSTs the receiver answered during the run (deliveries, with the deliverer).
    received: Option<u64>,
    /// The deliverer catching up with the setup's events, before the run.
    drain: Duration,
    /// Whether the endpoint was still enabled at the end (not if its outbox filled).
    enabled: bool,
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
    webhooks: WebhookOutcome,
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

/// What one grant of the events workload gives: a single credit, so balances stay cheap.
fn event_pack() -> Pack {
    pack("events", 1)
}

/// A receiver that answers every POST with 200 after `delay`, counting them.
async fn slow_receiver(
    delay: Duration,
    count: Arc<AtomicU64>,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let count = count.clone();
            async move {
                tokio::time::sleep(delay).await;
                count.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::OK
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// The config the deliverer reads: the bench app with the default retries and window.
fn webhook_config() -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"d\"\nsnapshot_dir = \"s\"\n\
         [[apps]]\nid = \"{APP}\"\n"
    );
    Config::parse(&text).expect("the bench's webhook config parses")
}

/// Waits until the deliverer has taken every event the history holds.
async fn drained(history: &History) {
    loop {
        let history = history.clone();
        let left = tokio::task::spawn_blocking(move || history.undelivered(u64::MAX, 1))
            .await
            .expect("join")
            .expect("read undelivered events");
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Grants the events pack to random users at `per_sec` until `deadline`; returns how many were
/// answered (one `credits.granted` event each).
async fn make_events(
    engine: Engine,
    keys: Arc<Vec<UserKey>>,
    per_sec: f64,
    deadline: Instant,
) -> u64 {
    let made = Arc::new(AtomicU64::new(0));
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut grants = tokio::task::JoinSet::new();
    let mut i = 0usize;
    while Instant::now() < deadline {
        every.tick().await;
        let key = keys[rng.below(keys.len())].clone();
        let (engine, made) = (engine.clone(), made.clone());
        // Each on its own task: a grant waits for its flush, the rate must not.
        let command = grant("events", 1_000_000_000 + i);
        grants.spawn(async move {
            if engine.user(key, Request::Command(command)).await.is_ok() {
                made.fetch_add(1, Ordering::Relaxed);
            }
        });
        i += 1;
    }
    while grants.join_next().await.is_some() {}
    made.load(Ordering::Relaxed)
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
        external_ref: format!("bench-{i}").into(),
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
    let webhook_ms = s.webhook_ms.filter(|_| row.durable());
    let (writer, history, registry) = if row.durable() {
        let journal = SledJournal::open(&dir.path().join("data")).expect("open the sled journal");
        let history = History::open(&journal).expect("open the history");
        let store = WebhookStore::open(&journal).expect("open the webhook store");
        let registry = Some(Registry::load(store).expect("load the webhook endpoints"));
        let writer = journal_writer::spawn(queue.clone(), Some((journal, history.clone())));
        (writer, Some(history), registry)
    } else {
        let writer = journal_writer::spawn(queue.clone(), None::<(SledJournal, History)>);
        (writer, None, None)
    };
    // Started before the setup, as `startup::run` starts it before serving.
    let deliverer = match (&registry, &history) {
        (Some(registry), Some(history)) => Some(Webhooks::start(
            &webhook_config(),
            registry.clone(),
            history.clone(),
            queue.clone(),
        )),
        _ => None,
    };
    let engine = Engine::start(
        Image::default(),
        &[APP.to_string()],
        queue.clone(),
        history.clone(),
        EngineOptions {
            threads: s.actor_threads,
            idle: Duration::from_secs(300),
            awake_users_max: usize::MAX,
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
        CatalogCommand::PutPack(event_pack()),
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
    let received = Arc::new(AtomicU64::new(0));
    let mut receiver = None;
    let mut drain = Duration::ZERO;
    if let (Some(registry), Some(history)) = (&registry, &history) {
        if let Some(ms) = webhook_ms {
            let (url, task) = slow_receiver(Duration::from_millis(ms), received.clone()).await;
            receiver = Some(task);
            let clock = engine.clock(APP).expect("the bench app");
            let create = registry.create(APP, Mode::Live, url, EventFilter::All, None, || {
                clock.now(Mode::Live)
            });
            timed("creating the endpoint", create)
                .await
                .expect("endpoint created");
        }
        let drain_started = Instant::now();
        timed("the deliverer taking the setup's events", drained(history)).await;
        drain = drain_started.elapsed();
    }
    let setup = setup_started.elapsed();
    let received_before = received.load(Ordering::Relaxed);

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
    let events = (s.events_per_sec > 0.0).then(|| {
        let future = make_events(engine.clone(), keys.clone(), s.events_per_sec, deadline);
        tokio::spawn(future)
    });
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
    let events = match events {
        Some(task) => timed("the events task", task).await.expect("events task"),
        None => 0,
    };
    let webhooks = WebhookOutcome {
        events,
        received: receiver
            .is_some()
            .then(|| received.load(Ordering::Relaxed) - received_before),
        drain,
        enabled: registry
            .as_ref()
            .is_none_or(|r| r.all().iter().all(|e| e.enabled)),
    };
    if let Some((_, task)) = deliverer {
        task.abort();
    }
    if let Some(task) = receiver {
        task.abort();
    }

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
        webhooks,
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
    let w = &o.webhooks;
    if w.events > 0 || w.received.is_some() {
        let delivered = match w.received {
            Some(n) => format!("{n} POSTs answered by the slow receiver"),
            None => "no endpoint".into(),
        };
        let delivered = format!(
            "{delivered}; the deliverer took the setup's events in {:.1} s",
            w.drain.as_secs_f64()
        );
        println!("  events: {} made during the run; {delivered}", w.events);
        if !w.enabled {
            println!(
                "  WARNING: the endpoint was disabled (outbox full): a shorter run or fewer events"
            );
        }
    }
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
    let webhook_ms: Option<u64> = std::env::var("VEVEE_BENCH_WEBHOOK_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    let default_events_per_sec: f64 = if webhook_ms.is_some() { 200.0 } else { 0.0 };
    let settings = Settings {
        secs: env_or("VEVEE_BENCH_SECS", 10),
        users: env_or("VEVEE_BENCH_USERS", 100_000),
        tasks: env_or("VEVEE_BENCH_TASKS", 4_000).max(1),
        actor_threads: env_or("VEVEE_BENCH_ACTOR_THREADS", cores),
        events_per_sec: env_or("VEVEE_BENCH_EVENTS_PER_SEC", default_events_per_sec).max(0.0),
        webhook_ms,
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
    if settings.events_per_sec > 0.0 || settings.webhook_ms.is_some() {
        let deliverer = match settings.webhook_ms {
            Some(ms) => format!(
                "the deliverer on, one endpoint on * at a receiver answering after {ms} ms \
                 (durable rows)"
            ),
            None => "the deliverer on, no endpoint (durable rows)".into(),
        };
        println!(
            "events: {} grants/s while the pairs run; {deliverer}",
            settings.events_per_sec
        );
    }
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
