//! Putting it together: recover, start the journal writer, the actors and the snapshotter, merge
//! the API's routes and the dashboard's pages under one set of layers, serve HTTP until told to
//! stop, then flush and take a final snapshot.

use crate::actors::journal_writer::{self, JournalQueue};
use crate::actors::user_actor::TEST_PANIC_USER_ENV;
use crate::actors::{Engine, EngineOptions, snapshotter};
use crate::config::Config;
use crate::dashboard;
use crate::engine::Record;
use crate::engine::bounds::Bounds;
use crate::engine::catalog::CatalogCommand;
use crate::engine::catalog_input::{pack_from, plan_from};
use crate::http;
use crate::persistence::image::Image;
use crate::persistence::webhooks::WebhookStore;
use crate::persistence::{
    History, HistoryWrite, Journal, SledJournal, SnapshotStore, Stored, decode_record,
    replay_stored,
};
use crate::state::AppState;
use crate::webhooks::Webhooks;
use crate::webhooks::registry::Registry;
use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The state on disk, loaded: newest valid snapshot plus the journal after it.
pub struct Recovered {
    pub image: Image,
    pub next_seq: u64,
    pub journal: SledJournal,
    pub history: History,
    pub store: SnapshotStore,
}

/// How often stored answers and request keys past their 24 hours are removed from disk.
const HISTORY_SWEEP_EVERY: Duration = Duration::from_secs(600);

/// History writes recovery collects before writing them as one group. Mostly ledger pages of 64
/// lines: a few hundred keep the batch in the cache instead of churning fresh memory.
const RECOVERY_WRITES_MAX: usize = 256;

pub fn recover(config: &Config) -> anyhow::Result<Recovered> {
    let started = Instant::now();
    let store = SnapshotStore::new(&config.storage.snapshot_dir).with_context(|| {
        format!(
            "opening snapshots in {}",
            config.storage.snapshot_dir.display()
        )
    })?;
    // Decoding the snapshot and opening sled each take a large share of a start (a million
    // users: about half and a sixth, BENCHMARKS.md) and share nothing: they run side by side.
    let (loaded, mut journal) = std::thread::scope(|scope| {
        let loading = std::thread::Builder::new()
            .name("snapshot-load".into())
            .spawn_scoped(scope, || store.load_newest::<Image>())
            .context("starting the thread that loads the snapshot")?;
        let journal = SledJournal::open(&config.storage.data_dir).with_context(|| {
            format!(
                "opening the journal in {}",
                config.storage.data_dir.display()
            )
        });
        let loaded = loading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .context("loading the newest snapshot")?;
        anyhow::Ok((loaded, journal?))
    })?;
    for refused in &loaded.refused {
        tracing::warn!(?refused, "snapshot refused");
    }
    let (from, mut image) = match loaded.snapshot {
        Some(s) => {
            tracing::info!(seq = s.seq, path = %s.path.display(), "snapshot loaded");
            (s.seq, s.state)
        }
        None => (0, Image::default()),
    };
    let history = History::open(&journal).context("opening the history beside the journal")?;
    // What the newest batch moved to the history is written again unless the writer marked it
    // written: the writer writes a batch's history right after the batch, then the mark, so a
    // crash may have kept the batch and lost some of its history. sled's log comes back as a
    // prefix, so every older batch has all of its history (the next batch came after it). Every
    // key is written with the value it had.
    let newest = journal
        .last_batch()
        .context("reading the journal's newest batch")?
        .map_or(0, |(seq, _)| seq);
    let written_below = history
        .written_below()
        .context("reading which journal batches have all of their history written")?;
    let history_from = if newest < written_below {
        u64::MAX
    } else {
        newest
    };
    let mut writes = Vec::new();
    let mut write_error = None;
    // A record meets at most one user, and a tail longer than the snapshot's users may meet them
    // all; the map is sized no larger, so a long tail over a few users costs no large table. The
    // tail is counted up to the newest batch, which is not read here: it may be torn, and replay
    // is what drops it.
    let tail = newest.saturating_sub(from);
    let users = image.users.len();
    let mut state = image.replay();
    state.reserve_users(usize::try_from(tail).map_or(users, |tail| tail.min(users)));
    let report = replay_stored(&mut journal, from, |seq, stored: Stored<'_, Record>| {
        let rewrite = seq >= history_from;
        let record = match stored {
            // Its history is on disk: a sleeping user's records stay bytes until it wakes.
            Stored::Bytes(bytes) if !rewrite => {
                if let Err(error) = state.keep(bytes) {
                    write_error.get_or_insert(error.into());
                }
                return;
            }
            Stored::Bytes(bytes) => match decode_record(bytes) {
                Ok(record) => record,
                Err(error) => {
                    write_error.get_or_insert(error.into());
                    return;
                }
            },
            Stored::Decoded(record) => record,
        };
        match record {
            Record::Answer { .. } | Record::RefundBeforeCheckout { .. } if !rewrite => {}
            Record::Answer {
                app,
                mode,
                key,
                answer,
            } => writes.push(HistoryWrite::Answer {
                app,
                mode,
                key,
                answer,
            }),
            Record::RefundBeforeCheckout {
                app,
                mode,
                intent,
                charge_id,
                at,
            } => writes.push(HistoryWrite::RefundBeforeCheckout {
                app,
                mode,
                intent,
                charge_id,
                at,
            }),
            Record::User { key, event } | Record::Event { key, event, .. } => {
                match state.apply_event(&key, event) {
                    Ok(applied) if rewrite => {
                        HistoryWrite::from_applied(&key, applied, &mut writes)
                    }
                    Ok(_) => {}
                    Err(error) => {
                        write_error.get_or_insert(error.into());
                    }
                }
            }
            Record::FlushLedger { key } => match state.flush_ledger(&key) {
                Ok(applied) if rewrite => HistoryWrite::from_applied(&key, applied, &mut writes),
                Ok(_) => {}
                Err(error) => {
                    write_error.get_or_insert(error.into());
                }
            },
            other => {
                if let Err(error) = state.apply_owned(other) {
                    write_error.get_or_insert(error.into());
                }
            }
        }
        if writes.len() >= RECOVERY_WRITES_MAX && write_error.is_none() {
            // Replayed records are durable: their events may go out at once.
            write_error = history.write(&writes).err();
            writes.clear();
        }
    })
    .context("replaying the journal")?;
    if let Some(error) = write_error {
        return Err(error).context("replaying the journal into the snapshot's users");
    }
    state.finish().context("packing the replayed users")?;
    let forgotten = history
        .forget_undurable(report.next_seq)
        .context("forgetting events of journal records that were never durable")?;
    if forgotten > 0 {
        tracing::warn!(forgotten, "events of a batch cut off by a crash forgotten");
    }
    // Every batch replayed now has all of its history, and none after it yet: a mark left by a
    // torn batch that replay dropped must not vouch for the batch the writer puts in its place.
    history
        .write_batch(report.next_seq, &writes)
        .context("writing the replayed history")?;
    journal.flush().context("flushing the replayed history")?;
    tracing::info!(
        users = image.users.len(),
        records = report.records_replayed,
        next_seq = report.next_seq,
        ms = started.elapsed().as_millis() as u64,
        "recovered"
    );
    Ok(Recovered {
        image,
        next_seq: report.next_seq,
        journal,
        history,
        store,
    })
}

/// How often histogram samples are folded into their buckets when nobody scrapes `/metrics`.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// One Prometheus recorder per process, shared by every server started in it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("histogram buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was installed already");
            }
            // A histogram keeps every sample until they are folded into its buckets, which a
            // scrape of /metrics does, or `run_upkeep`. Without a scraper they grew without
            // bound: heaptrack found 10 MB of them after 400,000 consumes (BENCHMARKS.md).
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}

/// The walkthrough's catalog, loaded into an app whose catalog is empty on first start.
const DEMO_PLANS: &str = r#"[
  {"id": "free", "name": "Free", "price": {"amount": 0, "currency": "usd", "interval": null},
   "limits": [{"id": "images", "name": "Images", "match": ["image.gemini-3-1-flash-image-preview"],
               "limit": 2, "unit": "count", "period": "lifetime"}]},
  {"id": "pro", "name": "Pro", "price": {"amount": 900, "currency": "usd", "interval": "month"},
   "limits": [{"id": "images", "name": "Images", "match": ["image.*"],
               "limit": 40, "unit": "count", "period": "month"}]}
]"#;

const DEMO_PACKS: &str = r#"[
  {"id": "cpk_gemini_topup", "name": "Gemini Top-up", "price": {"amount": 400, "currency": "usd"},
   "expiresInDays": null,
   "items": [{"id": "gemini", "match": "image.gemini-3-1-flash-image-preview", "amount": 50,
              "unit": "count"}]},
  {"id": "cpk_creator_bundle", "name": "Creator Bundle", "price": {"amount": 1500, "currency": "usd"},
   "expiresInDays": 90,
   "items": [{"id": "dalle", "match": "image.dall-e-3", "amount": 10, "unit": "count"},
             {"id": "veo", "match": "video.veo-3", "amount": 5, "unit": "seconds"}]}
]"#;

async fn seed_demo_catalog(engine: &Engine, app: &str) -> anyhow::Result<()> {
    // Written as the API's JSON bodies, so read with the API's body types.
    let plans: Vec<http::catalog::PlanBody> = serde_json::from_str(DEMO_PLANS)?;
    let packs: Vec<http::catalog::PackBody> = serde_json::from_str(DEMO_PACKS)?;
    for body in plans {
        let plan = plan_from(None, body.into())?;
        engine
            .change_catalog(app, CatalogCommand::PutPlan(plan))
            .await?;
    }
    for body in packs {
        let pack = pack_from(None, body.into())?;
        engine
            .change_catalog(app, CatalogCommand::PutPack(pack))
            .await?;
    }
    tracing::info!(
        app,
        "loaded the demo catalog (plans free and pro, two credit packs)"
    );
    Ok(())
}

/// Reads the testing hook [`TEST_PANIC_USER_ENV`] once, at startup. Release builds refuse to
/// start with it set: it exists to test what a panicking actor does, never to run a server.
fn test_panic_user() -> anyhow::Result<Option<String>> {
    let Some(value) = std::env::var_os(TEST_PANIC_USER_ENV) else {
        return Ok(None);
    };
    if !cfg!(debug_assertions) {
        anyhow::bail!(
            "{TEST_PANIC_USER_ENV} is a testing hook that makes a user's actor panic; release \
             builds refuse it: unset it"
        );
    }
    let user = value
        .into_string()
        .map_err(|_| anyhow::anyhow!("{TEST_PANIC_USER_ENV} is not UTF-8"))?;
    tracing::warn!(
        user,
        "testing hook {TEST_PANIC_USER_ENV} is set: this user's reserves and consumes panic"
    );
    Ok(Some(user))
}

/// Writes `addr` to `path` whole: a temporary file renamed over it, so a reader never sees half.
fn write_address(path: &std::path::Path, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    std::fs::write(&temp, format!("{addr}\n"))?;
    std::fs::rename(&temp, path)
}

/// Runs the server until `shutdown` completes: stops accepting, finishes in-flight requests,
/// flushes the journal and takes a final snapshot.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = metrics_handle();
    let recover_config = config.clone();
    let recovered = tokio::task::spawn_blocking(move || recover(&recover_config)).await??;
    let Recovered {
        image,
        next_seq,
        journal,
        history,
        store,
    } = recovered;

    let queue = JournalQueue::new(next_seq);
    let reader = journal.reader();
    let registry = WebhookStore::open(&journal)
        .and_then(Registry::load)
        .context("loading the webhook endpoints")?;
    let (webhooks, deliverer) = Webhooks::start(&config, registry, history.clone(), queue.clone());
    let writer = journal_writer::spawn(queue.clone(), Some((journal, history.clone())));
    let app_ids: Vec<String> = config.apps.iter().map(|a| a.id.clone()).collect();
    let engine = Engine::start(
        image,
        &app_ids,
        queue.clone(),
        Some(history),
        EngineOptions {
            threads: config.actor_threads(),
            idle: Duration::from_secs(config.server.idle_seconds),
            awake_users_max: config.server.awake_users_max,
            journal_backlog_records_max: config.server.journal_backlog_records_max,
            bounds: Bounds {
                open_reservations_per_user_max: config.server.open_reservations_per_user_max,
                balances_per_user_max: config.server.balances_per_user_max,
            },
            test_panic_user: test_panic_user()?,
        },
    );
    for app in config.apps.iter().filter(|a| a.seed_demo_catalog) {
        if engine.catalog(&app.id)?.is_empty() {
            seed_demo_catalog(&engine, &app.id).await?;
        }
    }
    let sweeper = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(HISTORY_SWEEP_EVERY);
            loop {
                every.tick().await;
                engine.sweep_history().await;
            }
        })
    };
    let state = AppState::new(&config, engine.clone(), metrics, webhooks);
    let dashboard_settings = dashboard::Settings::from_config(&config)
        .context("loading the dashboard's session key from the data directory")?;
    let stop_snapshots = Arc::new(AtomicBool::new(false));
    let snapshots = snapshotter::spawn(
        SnapshotStore::new(store.dir())?,
        reader.reader(),
        queue.clone(),
        config.storage.snapshot_every_records,
        Duration::from_secs(config.storage.snapshot_every_seconds),
        state.last_snapshot_s.clone(),
        stop_snapshots.clone(),
    );

    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    if let Some(path) = &config.server.address_file {
        write_address(path, addr)
            .with_context(|| format!("writing the address file {}", path.display()))?;
    }
    // The API and the dashboard are two faces of one server: their routes are merged here and
    // every answer of either goes through the same layers.
    let pages = dashboard::router(dashboard::Dashboard::new(state.clone(), dashboard_settings));
    let app = http::layered(http::routes(state.clone()).merge(pages), state);
    // A panicking user actor stops the server as a signal would (see
    // `Shared::actor_panicked`), and the process then exits non-zero.
    let stop = {
        let engine = engine.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                key = engine.failure() => tracing::error!(
                    app = %key.app,
                    user = %key.user.as_str(),
                    "stopping for recovery after a user's actor panicked"
                ),
            }
        }
    };
    http::serve::serve(listener, app, config.limits(), stop).await;
    let failed = engine.failed_user();

    sweeper.abort();
    // Attempts under way are lost; their rows are on disk and are sent again at the next start.
    deliverer.abort();
    tracing::info!("stopping: flushing the journal");
    engine.flush().await?;
    let up_to = queue.durable_seq();
    drop(engine);
    queue.close();
    let mut reader = reader;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("the journal writer panicked"))?;
        // The periodic snapshotter finishes what it is doing first: two writers of one
        // snapshot file would race.
        stop_snapshots.store(true, Ordering::Release);
        snapshots
            .join()
            .map_err(|_| anyhow::anyhow!("the snapshotter panicked"))?;
        let seq = snapshotter::take(&store, &mut reader, up_to)?;
        tracing::info!(seq, "final snapshot written");
        Ok(())
    })
    .await??;
    if let Some(key) = failed {
        anyhow::bail!(
            "the actor of user '{}' (app {}, {} mode) panicked: stopped so that recovery rebuilds \
             its state from the journal; start the server again",
            key.user.as_str(),
            key.app,
            key.mode.as_str()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ids::UserId;
    use crate::engine::tests::{World, pack};
    use crate::engine::{Mode, Name, Settled, UserKey};
    use crate::persistence::encode_batch;

    /// A grant and 70 consumes of one user: 141 ledger lines, two full pages and a tail, as the
    /// records of one step (only the last says what the state holds after it).
    struct TwoPages {
        w: World,
        user: UserKey,
        records: Vec<Record>,
        /// The records up to the end of the first page: the older of two batches.
        split: usize,
    }

    impl TwoPages {
        fn new() -> TwoPages {
            let mut w = World::with(vec![], vec![pack("img", &[("i", "image.*", 1_000)], None)]);
            w.grant_one("img", "r");
            for _ in 0..70 {
                w.consume("image.flux", 1).expect("consume");
            }
            assert_eq!(w.past.pages.len(), 2);
            let user = UserKey {
                app: "app".into(),
                mode: Mode::Test,
                user: UserId::parse("u_crash").expect("user id"),
            };
            let events = w.journal.iter().cloned().map(Arc::new).collect();
            let records = Record::events(&user, events, Settled::of(&w.state, None)).collect();
            let first_page_end = w.past.pages[0].last().expect("lines").event.id.clone();
            let split = 1 + w
                .journal
                .iter()
                .position(|e| e.id == first_page_end)
                .expect("journaled");
            TwoPages {
                w,
                user,
                records,
                split,
            }
        }

        fn page(&self, i: usize) -> HistoryWrite {
            HistoryWrite::Page {
                user: self.user.clone(),
                lines: Arc::new(self.w.past.pages[i].clone()),
            }
        }

        /// Every paged line id, newest first.
        fn paged(&self) -> Vec<Name> {
            let lines = self.w.past.pages.iter().flatten().rev();
            lines.map(|l| l.event.id.clone()).collect()
        }

        /// The older batch with its page, written and marked as the writer writes them.
        fn write_older(&self, journal: &mut SledJournal, history: &History) {
            let older = encode_batch(0, &self.records[..self.split]).expect("encode");
            journal.append(0, &older).expect("append");
            history
                .write_batch(self.split as u64, &[self.page(0)])
                .expect("history");
        }

        /// The frame of the newer batch.
        fn newest_frame(&self) -> Vec<u8> {
            encode_batch(self.split as u64, &self.records[self.split..]).expect("encode")
        }

        /// The older batch as [`TwoPages::write_older`] writes it, then the newer batch, whose
        /// page and mark a crash cut off.
        fn write_crashed(&self, config: &Config) {
            let mut journal = SledJournal::open(&config.storage.data_dir).expect("journal");
            let history = History::open(&journal).expect("history");
            self.write_older(&mut journal, &history);
            journal
                .append(self.split as u64, &self.newest_frame())
                .expect("append");
            journal.flush().expect("flush");
        }

        /// The newer batch's page and mark, as the writer writes them after the batch.
        fn write_newest_history(&self, config: &Config) {
            let journal = crate::persistence::journal::reopen_after_drop(|| {
                SledJournal::open(&config.storage.data_dir)
            });
            let history = History::open(&journal).expect("history");
            history
                .write_batch(self.records.len() as u64, &[self.page(1)])
                .expect("history");
            journal.disk_sync().sync().expect("flush");
        }
    }

    fn config_in(dir: &std::path::Path) -> Config {
        Config::parse(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\nsnapshot_dir = \"{}\"\n",
            dir.join("data").display(),
            dir.join("snapshots").display()
        ))
        .expect("config")
    }

    fn on_disk(recovered: &Recovered, user: &UserKey) -> Vec<Name> {
        recovered
            .history
            .lines_newest_first(user, None)
            .map(|l| l.event.id.clone())
            .collect()
    }

    #[test]
    fn recovery_writes_again_the_history_a_crash_cut_from_the_newest_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config_in(dir.path());
        let t = TwoPages::new();
        t.write_crashed(&config);
        let recovered = recover(&config).expect("recovers");
        assert_eq!(recovered.next_seq, t.records.len() as u64);
        assert_eq!(on_disk(&recovered, &t.user), t.paged(), "both pages");
        let packed = &recovered.image.users[&t.user];
        assert_eq!(packed.unpack().expect("unpacks"), t.w.state);
    }

    #[test]
    fn a_newest_batch_marked_written_is_not_applied_at_startup_and_wakes_to_the_live_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config_in(dir.path());
        let t = TwoPages::new();
        t.write_crashed(&config);
        t.write_newest_history(&config);
        let recovered = recover(&config).expect("recovers");
        assert_eq!(on_disk(&recovered, &t.user), t.paged(), "both pages");
        let packed = &recovered.image.users[&t.user];
        assert!(packed.is_kept(), "its records stay as the journal's bytes");
        assert_eq!(packed.unpack().expect("unpacks"), t.w.state);
        assert_eq!(packed.deadline, crate::engine::next_deadline(&t.w.state));
    }

    #[test]
    fn a_mark_left_by_a_torn_batch_does_not_vouch_for_the_batch_written_in_its_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config_in(dir.path());
        let t = TwoPages::new();
        {
            let mut journal = SledJournal::open(&config.storage.data_dir).expect("journal");
            let history = History::open(&journal).expect("history");
            t.write_older(&mut journal, &history);
            // A newer batch cut short, and a mark that covered it.
            let newest = t.newest_frame();
            journal
                .append(t.split as u64, &newest[..newest.len() - 3])
                .expect("append");
            history.mark_written(t.records.len() as u64).expect("mark");
            journal.flush().expect("flush");
        }
        let recovered = recover(&config).expect("recovers");
        assert_eq!(recovered.next_seq, t.split as u64, "the torn batch dropped");
        drop(recovered);
        // The writer puts the batch again in its place, and a crash cuts off its history.
        {
            let mut journal = crate::persistence::journal::reopen_after_drop(|| {
                SledJournal::open(&config.storage.data_dir)
            });
            journal
                .append(t.split as u64, &t.newest_frame())
                .expect("append");
            journal.flush().expect("flush");
        }
        let recovered = recover(&config).expect("recovers");
        assert_eq!(recovered.next_seq, t.records.len() as u64);
        assert_eq!(
            on_disk(&recovered, &t.user),
            t.paged(),
            "the new batch's page is written again"
        );
    }
}
