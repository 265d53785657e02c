//! Recovery time: replay of 1M journal events, and a start from a snapshot of 1M users plus 1M
//! events after it, through the same `recover` the server runs at startup.
//!
//! `cargo bench --bench recovery` (set `VEVEE_BENCH_USERS` / `VEVEE_BENCH_EVENTS` to scale).
//! Goal of issue 5 on the 2-core machine class: at most 250 ms per 1M events replayed (page cache
//! warm), at most 1 s for the full start.

// The same allocator and settings as the `vevee` binary.
vevee::global_allocator!();

use std::time::Instant;
use vevee::config::Config;
use vevee::engine::catalog::{Catalog, CatalogChange, Limit, Pack, PackItem, Plan, Price};
use vevee::engine::event::GrantSource;
use vevee::engine::ids::{CountingIds, ModelKey, Pattern, UserId};
use vevee::engine::time::Period;
use vevee::engine::{Command, Mode, NoPast, Record, Settled, Ts, UserKey, UserState, step};
use vevee::persistence::image::{Image, Packed};
use vevee::persistence::{
    History, Journal, SledJournal, SnapshotStore, encode_batch, encode_snapshot,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    catalog.apply(&CatalogChange::PlanPut(Plan {
        id: "pro".into(),
        name: "Pro".into(),
        price: Price {
            amount: 900,
            currency: "usd".into(),
            interval: None,
        },
        limits: vec![Limit {
            id: "images".into(),
            name: "Images".into(),
            patterns: vec![Pattern::parse("image.*").unwrap()],
            limit: 1_000_000,
            unit: "count".into(),
            period: Period::Month,
        }],
        created_at: Ts(0),
        updated_at: Ts(0),
    }));
    catalog.apply(&CatalogChange::PackPut(Pack {
        id: "bundle".into(),
        name: "Bundle".into(),
        price: Price {
            amount: 1500,
            currency: "usd".into(),
            interval: None,
        },
        expires_in_days: None,
        stripe_price_id: None,
        archived: false,
        items: ["image.dall-e-3", "video.*"]
            .iter()
            .enumerate()
            .map(|(i, p)| PackItem {
                id: format!("i{i}").into(),
                pattern: Pattern::parse(p).unwrap(),
                amount: 1_000,
                unit: "count".into(),
                low_balance_threshold: None,
            })
            .collect(),
        created_at: Ts(0),
        updated_at: Ts(0),
    }));
    catalog
}

fn key(i: usize) -> UserKey {
    UserKey {
        app: "bench".into(),
        mode: Mode::Live,
        user: UserId::parse(&format!("u{i}")).unwrap(),
    }
}

/// The records of one step of user `u`, as its actor journals them.
fn step_records(
    state: &mut UserState,
    u: usize,
    catalog: &Catalog,
    command: Command,
    now: Ts,
    ids: &mut CountingIds,
) -> Vec<Record> {
    let plan_before = state.active_plan().cloned();
    let events = step(state, &NoPast, catalog, command, now, ids).events;
    Record::events(&key(u), events, Settled::of(state, plan_before)).collect()
}

/// A user with a subscription and two balances: the records of that setup.
fn setup(
    state: &mut UserState,
    u: usize,
    catalog: &Catalog,
    ids: &mut CountingIds,
    now: Ts,
) -> Vec<Record> {
    let commands = [
        Command::Subscribe {
            plan_id: "pro".into(),
        },
        Command::Grant {
            pack_id: "bundle".into(),
            external_ref: "cs".into(),
            source: GrantSource::Purchase,
            notes: None,
            expires_at: None,
            payment_intent: None,
            expiring_notice_days: 3,
        },
    ];
    commands
        .into_iter()
        .flat_map(|c| step_records(state, u, catalog, c, now, ids))
        .collect()
}

/// Reserve+commit traffic spread over `users`: `events` records, two per pair.
fn traffic(users: &mut [UserState], catalog: &Catalog, events: usize, now: Ts) -> Vec<Record> {
    let model = ModelKey::parse("image.dall-e-3").unwrap();
    let mut ids = CountingIds(1 << 40);
    let mut out = Vec::with_capacity(events);
    let mut i = 0;
    while out.len() < events {
        let u = i % users.len();
        i += 1;
        let reserve = Command::Reserve {
            model: model.clone(),
            amount: 1,
            ttl_ms: 600_000,
            metadata: None,
            request_key: None,
            commit: true,
        };
        out.extend(step_records(
            &mut users[u],
            u,
            catalog,
            reserve,
            now,
            &mut ids,
        ));
    }
    out
}

/// Appends `records` in batches of 1,000 as the journal writer does: each batch, then its history
/// (none here) and the mark that it is written.
fn write_journal(journal: &mut SledJournal, first_seq: u64, records: &[Record]) -> u64 {
    let history = History::open(journal).unwrap();
    let mut seq = first_seq;
    for batch in records.chunks(1_000) {
        journal
            .append(seq, &encode_batch(seq, batch).unwrap())
            .unwrap();
        seq += batch.len() as u64;
        history.write_batch(seq, &[]).unwrap();
    }
    journal.flush().unwrap();
    seq
}

fn config(dir: &std::path::Path) -> Config {
    Config::parse(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\nsnapshot_dir = \"{}\"\n",
        dir.join("data").display(),
        dir.join("snapshots").display()
    ))
    .unwrap()
}

/// CPU time of this process so far (user + system, in ms), from `/proc/self/stat`: on a shared,
/// busy machine it says more than the wall clock.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // After the command name: state is field 3, utime 14 and stime 15 (1-based, in clock ticks).
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) * 10.0
}

/// How many times each recovery is measured (`VEVEE_BENCH_RUNS`, default 5): on a shared machine
/// one run can take half again as long as the next.
fn runs() -> usize {
    env("VEVEE_BENCH_RUNS", 5).max(1)
}

/// Wall and CPU milliseconds of each recovery (fastest first), and the users it found.
fn time_recover(config: &Config) -> (Vec<(f64, f64)>, usize) {
    // Once to warm the page cache, then measured.
    drop(vevee::startup::recover(config).unwrap());
    let mut times = Vec::new();
    let mut users = 0;
    for _ in 0..runs() {
        let (started, cpu) = (Instant::now(), cpu_ms());
        let recovered = vevee::startup::recover(config).unwrap();
        times.push((started.elapsed().as_secs_f64() * 1e3, cpu_ms() - cpu));
        users = recovered.image.users.len();
    }
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    (times, users)
}

/// "fastest / median / slowest" of the wall times, scaled by `scale`.
fn spread(times: &[(f64, f64)], scale: f64) -> String {
    let at = |i: usize| format!("{:.0}", times[i].0 * scale);
    format!(
        "{} / {} / {}",
        at(0),
        at(times.len() / 2),
        at(times.len() - 1)
    )
}

fn main() {
    let users_n = env("VEVEE_BENCH_USERS", 1_000_000);
    let events_n = env("VEVEE_BENCH_EVENTS", 1_000_000);
    let catalog = catalog();
    let now = Ts(1_800_000_000_000);

    // 1. Journal only: 1M events of traffic over 10k users.
    let dir = tempfile::tempdir().unwrap();
    let config_a = config(dir.path());
    let mut states = vec![UserState::default(); 10_000];
    let mut ids = CountingIds::default();
    let mut records = Vec::new();
    for (i, state) in states.iter_mut().enumerate() {
        records.extend(setup(state, i, &catalog, &mut ids, now));
    }
    records.extend(traffic(&mut states, &catalog, events_n, now));
    let mut journal = SledJournal::open(&dir.path().join("data")).unwrap();
    let end = write_journal(&mut journal, 0, &records);
    drop(journal);
    let (times, users) = time_recover(&config_a);
    let per_1m = 1e6 / end as f64;
    println!(
        "replay: {end} journal records ({users} users), {} runs: {} ms per 1M events \
         (fastest / median / slowest; CPU of the fastest {:.0} ms per 1M)",
        times.len(),
        spread(&times, per_1m),
        times[0].1 * per_1m
    );

    // 2. Snapshot of `users_n` users (subscription + two balances each) plus 1M events after it.
    let dir = tempfile::tempdir().unwrap();
    let config_b = config(dir.path());
    let started = Instant::now();
    let mut template = UserState::default();
    let mut ids = CountingIds::default();
    setup(&mut template, 0, &catalog, &mut ids, now);
    let mut state = Image::default();
    state.catalogs.insert("bench".into(), catalog.clone());
    state.users.reserve(users_n);
    let packed = Packed::pack(&template).unwrap();
    for i in 0..users_n {
        state.users.insert(key(i), packed.clone());
    }
    let seq = 2_000_000;
    let frame = encode_snapshot(seq, &state).unwrap();
    SnapshotStore::new(dir.path().join("snapshots"))
        .unwrap()
        .write_bytes(seq, &frame)
        .unwrap();
    let mut tail_users: Vec<UserState> = (0..10_000).map(|_| template.clone()).collect();
    let tail = traffic(&mut tail_users, &catalog, events_n, now);
    let mut journal = SledJournal::open(&dir.path().join("data")).unwrap();
    let end = write_journal(&mut journal, seq, &tail);
    drop(journal);
    drop(state);
    println!(
        "setup: {users_n} users snapshot ({} MiB) and {} events in {:.1} s",
        frame.len() >> 20,
        end - seq,
        started.elapsed().as_secs_f64()
    );
    let (times, users) = time_recover(&config_b);
    println!(
        "full start: snapshot of {users} users + {} events, {} runs: {} ms \
         (fastest / median / slowest; CPU of the fastest {:.0} ms)",
        end - seq,
        times.len(),
        spread(&times, 1.0),
        times[0].1
    );
}
