//! Property tests over random command sequences: the invariants after every step (I1, I2, I3, I9),
//! a refused command changes nothing, the matcher against an independent reading of API.md, replay
//! equals live (I5), and a batch of reserves in any order never allows more than there was (I10).

use super::*;
use crate::engine::event::Event;
use crate::engine::ids::UserId;
use crate::engine::ledger::LedgerLine;
use crate::engine::matcher::{self, Match};
use crate::engine::state::{EngineState, Mode, Record, UserKey};
use crate::engine::time::window_at;
use proptest::prelude::*;
use std::sync::Arc;

const PLANS: [&str; 3] = ["free", "pro", "team"];
const PACKS: [&str; 3] = ["dalle", "mix", "any"];
const MODELS: [&str; 5] = [
    "image.dall-e-3",
    "image.flux",
    "video.veo-3",
    "text.gpt-4.1",
    "audio.tts-1",
];

fn catalog() -> Catalog {
    let mut c = Catalog::default();
    let plans = [
        plan(
            "free",
            vec![limit("images", &["image.*"], 4, Period::Lifetime)],
        ),
        plan(
            "pro",
            vec![
                limit("images", &["image.*"], 8, Period::Month),
                limit("dalle", &["image.dall-e-3"], 3, Period::Day),
                limit("clips", &["video.*"], 5, Period::Week),
            ],
        ),
        plan(
            "team",
            vec![
                limit("all", &["*"], 12, Period::Year),
                limit("text", &["text.*"], 3, Period::Day),
            ],
        ),
    ];
    let packs = [
        pack("dalle", &[("d", "image.dall-e-3", 4)], Some(1)),
        pack("mix", &[("i", "image.*", 6), ("v", "video.veo-3", 3)], None),
        pack("any", &[("a", "*", 3)], Some(3)),
    ];
    plans
        .into_iter()
        .for_each(|p| c.apply(&CatalogChange::PlanPut(p)));
    packs
        .into_iter()
        .for_each(|p| c.apply(&CatalogChange::PackPut(p)));
    c
}

#[derive(Debug, Clone)]
enum Op {
    Subscribe(usize),
    Cancel,
    /// `expires` is relative to now, and may be in the past.
    Grant {
        pack: usize,
        reference: usize,
        expires: Option<i64>,
    },
    Reserve {
        model: usize,
        amount: u64,
        ttl: i64,
        commit: bool,
    },
    /// `pick` chooses among all reservations so far, whatever their status.
    Commit {
        pick: usize,
        amount: Option<u64>,
    },
    Release {
        pick: usize,
    },
    Revoke {
        pick: usize,
    },
    Advance(i64),
    /// A catalog edit: the `limit`-th limit of the `plan`-th plan gets a new value. A lowered limit
    /// turns the I2 check off for the rest of the sequence.
    SetLimit {
        plan: usize,
        limit: usize,
        value: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let expires = prop_oneof![
        2 => Just(None),
        3 => (-HOUR..3 * DAY).prop_map(Some),
    ];
    prop_oneof![
        2 => (0..PLANS.len()).prop_map(Op::Subscribe),
        1 => Just(Op::Cancel),
        3 => (0..PACKS.len(), 0..3usize, expires).prop_map(|(pack, reference, expires)| {
            Op::Grant { pack, reference, expires }
        }),
        7 => (
            0..MODELS.len(),
            1..=4u64,
            prop::sample::select(vec![10 * SECOND, HOUR, 2 * DAY]),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(model, amount, ttl, commit)| Op::Reserve { model, amount, ttl, commit }),
        3 => (any::<usize>(), prop::option::of(1..=5u64))
            .prop_map(|(pick, amount)| Op::Commit { pick, amount }),
        2 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Revoke { pick }),
        3 => prop::sample::select(vec![1, SECOND, 10 * SECOND, HOUR, DAY, 7 * DAY, 31 * DAY])
            .prop_map(Op::Advance),
        1 => (0..PLANS.len(), 0..3usize, 1..=14u64)
            .prop_map(|(plan, limit, value)| Op::SetLimit { plan, limit, value }),
    ]
}

fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..max)
}

fn pick_reservation(state: &UserState, pick: usize) -> Name {
    let mut ids: Vec<&Name> = state.reservations.keys().collect();
    ids.sort();
    if ids.is_empty() {
        "res_unknown".into()
    } else {
        ids[pick % ids.len()].clone()
    }
}

fn command(w: &World, op: &Op) -> Option<Command> {
    Some(match *op {
        Op::Subscribe(p) => Command::Subscribe {
            plan_id: PLANS[p].into(),
        },
        Op::Cancel => Command::Cancel,
        Op::Grant {
            pack,
            reference,
            expires,
        } => grant_cmd(
            PACKS[pack],
            &format!("ref_{reference}"),
            expires.map(|ms| w.now.plus_ms(ms)),
        ),
        Op::Reserve {
            model,
            amount,
            ttl,
            commit,
        } => reserve_cmd(MODELS[model], amount, ttl, commit),
        Op::Commit { pick, amount } => Command::Commit {
            reservation_id: pick_reservation(&w.state, pick),
            amount,
            response: None,
        },
        Op::Release { pick } => Command::Release {
            reservation_id: pick_reservation(&w.state, pick),
            error_code: None,
        },
        Op::Revoke { pick } => {
            let id = match w.state.balances.len() {
                0 => "bal_unknown".into(),
                n => w.state.balances[pick % n].id.clone(),
            };
            Command::Revoke {
                balance_id: id,
                reason: None,
            }
        }
        Op::Advance(_) | Op::SetLimit { .. } => return None,
    })
}

/// The matcher as API.md words it, written apart from `matcher.rs`.
fn oracle(state: &UserState, catalog: &Catalog, m: &ModelKey, amount: u64, now: Ts) -> Match {
    use crate::engine::event::{CreditHold, LimitHold, PlanHold};
    use crate::engine::matcher::Allocation;
    enum Cover {
        None,
        NotInPlan,
        Covered(Name, Vec<LimitHold>, u64),
    }
    let cover = match state.subscription.as_ref().and_then(|s| s.active_plan()) {
        None => Cover::None,
        Some(plan_id) => {
            let sub = state.subscription.as_ref().unwrap();
            let plan = &catalog.plans[plan_id];
            let mut room = None::<u64>;
            let mut holds = vec![];
            for l in plan
                .limits
                .iter()
                .filter(|l| l.patterns.iter().any(|p| p.covers(m)))
            {
                let (window, _) = window_at(l.period, sub.current_period_start, now);
                let taken = match state.counters.get(&(plan_id.clone(), l.id.clone())) {
                    Some(c) if c.window == window => c.used + c.reserved,
                    _ => 0,
                };
                let r = l.limit.saturating_sub(taken);
                room = Some(room.map_or(r, |x| x.min(r)));
                holds.push(LimitHold {
                    limit_id: l.id.clone(),
                    window,
                });
            }
            match room {
                None => Cover::NotInPlan,
                Some(r) => Cover::Covered(plan_id.clone(), holds, r),
            }
        }
    };
    let plan_room = match &cover {
        Cover::Covered(_, _, r) => *r,
        _ => 0,
    };
    let mut live: Vec<&Balance> = state
        .balances
        .iter()
        .filter(|b| {
            b.status == BalanceStatus::Active
                && b.remaining > 0
                && b.expires_at.is_none_or(|e| now < e)
                && b.pattern.covers(m)
        })
        .collect();
    let rank = |p: &Pattern| match p {
        Pattern::Model(_) => 0,
        Pattern::Category(_) => 1,
        Pattern::Any => 2,
    };
    live.sort_by(|a, b| {
        let expiry = |x: &Balance| x.expires_at.map_or(i64::MAX, |t| t.0);
        (rank(&a.pattern), expiry(a), a.created_at, &a.id).cmp(&(
            rank(&b.pattern),
            expiry(b),
            b.created_at,
            &b.id,
        ))
    });
    let credit_room: u64 = live.iter().map(|b| b.remaining).sum();
    let available = Available {
        plan: plan_room,
        credits: credit_room,
    };
    if plan_room + credit_room < amount {
        let ever = state.balances.iter().any(|b| b.pattern.covers(m));
        let reasons = match (&cover, ever) {
            (Cover::None, _) => vec![Reason::NoSubscription, Reason::CreditsExhausted],
            (Cover::NotInPlan, false) => vec![Reason::NotInPlan],
            (Cover::NotInPlan, true) => vec![Reason::NotInPlan, Reason::CreditsExhausted],
            (Cover::Covered(..), false) => vec![Reason::PlanExhausted],
            (Cover::Covered(..), true) => vec![Reason::PlanAndCreditsExhausted],
        };
        return Match {
            result: Err(reasons),
            available,
        };
    }
    let plan_part = plan_room.min(amount);
    let plan = match cover {
        Cover::Covered(plan_id, limits, _) if plan_part > 0 => Some(PlanHold {
            plan_id,
            limits,
            amount: plan_part,
        }),
        _ => None,
    };
    let mut left = amount - plan_part;
    let mut credits = vec![];
    for b in live {
        if left == 0 {
            break;
        }
        let take = left.min(b.remaining);
        credits.push(CreditHold {
            balance_id: b.id.clone(),
            amount: take,
        });
        left -= take;
    }
    Match {
        result: Ok(Allocation { plan, credits }),
        available,
    }
}

/// Runs one op through `World` (which checks I1, I2, I3 and I9 after it), and checks that a refused
/// command changed nothing but the deadlines and that the matcher agrees with the oracle.
fn run_op(w: &mut World, op: &Op) {
    let Some(cmd) = command(w, op) else {
        match *op {
            Op::Advance(ms) => w.advance(ms),
            Op::SetLimit { plan, limit, value } => {
                let mut p = Plan::clone(&w.catalog.plans[PLANS[plan]]);
                let n = p.limits.len();
                let l = &mut p.limits[limit % n];
                w.limits_lowered |= value < l.limit;
                l.limit = value;
                w.put_plan(p);
            }
            _ => unreachable!(),
        }
        return;
    };
    // The state as `decide` will see it: after the deadlines that passed.
    let mut caught_up = w.state.clone();
    catch_up(&mut caught_up, w.now, &mut CountingIds(w.ids.0));
    let expected = match &cmd {
        Command::Reserve { model, amount, .. } => {
            let found = matcher::find(&caught_up, &w.catalog, model, *amount, w.now);
            let want = oracle(&caught_up, &w.catalog, model, *amount, w.now);
            assert_eq!(found, want, "the matcher against API.md for {op:?}");
            Some(found)
        }
        _ => None,
    };
    let s = w.run(cmd);
    match (s.result, expected) {
        (Err(_), _) => assert_eq!(w.state, caught_up, "a refused {op:?} changed the state"),
        (Ok(Outcome::Denied { reasons, available }), Some(found)) => {
            assert_eq!(Err(reasons), found.result);
            assert_eq!(available, found.available);
            assert_eq!(w.state, caught_up, "a denial holds nothing");
        }
        (Ok(Outcome::Reservation(id)), Some(found)) => {
            let alloc = found.result.expect("allowed");
            let r = w.res(&id);
            assert_eq!((&r.plan, &r.credits), (&alloc.plan, &alloc.credits));
        }
        _ => {}
    }
}

fn world() -> World {
    let mut w = World::new();
    w.catalog = catalog();
    w
}

/// The state and the pages that left memory, from the events alone.
fn replay(events: &[Event]) -> (UserState, Vec<Vec<LedgerLine>>) {
    let mut s = UserState::default();
    let pages = events
        .iter()
        .filter_map(|e| s.apply(&Arc::new(e.clone())).page)
        .map(Arc::unwrap_or_clone)
        .collect();
    (s, pages)
}

fn key() -> UserKey {
    UserKey {
        app: "pixelforge".into(),
        mode: Mode::Test,
        user: UserId::parse("u_1").unwrap(),
    }
}

fn records(catalog: &Catalog, events: &[Event]) -> Vec<Record> {
    let changes = catalog
        .as_changes()
        .into_iter()
        .map(|change| Record::Catalog {
            app: "pixelforge".into(),
            change,
        });
    let users = events.iter().map(|event| Record::User {
        key: key(),
        event: Arc::new(event.clone()),
    });
    changes.chain(users).collect()
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("encodes")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).expect("decodes");
    assert_eq!(read, bytes.len());
    value
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_step_of_a_random_command_sequence_keeps_the_invariants(ops in ops(60)) {
        let mut w = world();
        for op in &ops {
            run_op(&mut w, op);
        }
        if !w.limits_lowered {
            check_invariants(&w.state, &w.ledger, &w.catalog, w.now);
        }
        // Everything pending ends one day, and the books still balance when it has.
        w.advance(3 * DAY);
        prop_assert!(w.state.pending.is_empty());
        for b in &w.state.balances {
            prop_assert_eq!(b.reserved, 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn replaying_the_ledger_from_empty_or_from_a_snapshot_gives_the_live_state(
        ops in ops(50),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut w = world();
        let cut = cut.index(ops.len() + 1);
        let mut user_snapshot = None;
        let mut engine_snapshot = None;
        for (i, op) in ops.iter().enumerate() {
            if i == cut {
                let at = w.journal.len();
                user_snapshot = Some((encode(&w.state), at));
                let mut engine = EngineState::default();
                records(&w.catalog, &w.journal).iter().for_each(|r| {
                    engine.apply(r);
                });
                engine_snapshot = Some((encode(&engine), at));
            }
            run_op(&mut w, op);
        }
        let live = &w.state;

        // From empty: the user's own ledger, and the journal's records. Replay also cuts the same
        // pages for the history as live operation did.
        let (replayed, pages) = replay(&w.journal);
        prop_assert_eq!(&replayed, live);
        prop_assert_eq!(&pages, &w.past.pages);
        let mut engine = EngineState::default();
        records(&w.catalog, &w.journal).iter().for_each(|r| {
            engine.apply(r);
        });
        prop_assert_eq!(&engine.users.get(&key()).cloned().unwrap_or_default(), live);
        prop_assert_eq!(&engine.catalogs["pixelforge"], &w.catalog);
        prop_assert_eq!(&decode::<UserState>(&encode(live)), live);

        // From a snapshot taken part way, plus the tail.
        if let Some((bytes, at)) = user_snapshot {
            let mut state: UserState = decode(&bytes);
            w.journal[at..].iter().for_each(|e| {
                state.apply(&Arc::new(e.clone()));
            });
            prop_assert_eq!(&state, live);
        }
        if let Some((bytes, at)) = engine_snapshot {
            let mut from_snapshot: EngineState = decode(&bytes);
            for event in &w.journal[at..] {
                from_snapshot.apply(&Record::User { key: key(), event: Arc::new(event.clone()) });
            }
            // The catalog edits made since the snapshot, as the journal would hold them.
            for change in w.catalog.as_changes() {
                from_snapshot.apply(&Record::Catalog { app: "pixelforge".into(), change });
            }
            prop_assert_eq!(from_snapshot, engine);
        }
    }
}

/// Which reserves of a batch were allowed, and how much each source gave.
fn run_batch(mut w: World, batch: &[(usize, u64)]) -> (World, u64) {
    let mut allowed = 0;
    for &(m, amount) in batch {
        if let Ok(id) = w.reserve(MODELS[m], amount) {
            assert_eq!(w.res(&id).amount, amount);
            allowed += amount;
        }
    }
    (w, allowed)
}

/// What each source could give at the start: room per covering limit of the current plan and
/// remaining per spendable balance.
fn capacity(w: &World) -> (BTreeMap<Name, u64>, BTreeMap<Name, u64>) {
    let mut limits = BTreeMap::new();
    if let Some(plan_id) = w.state.subscription.as_ref().and_then(|s| s.active_plan()) {
        for l in &w.catalog.plans[plan_id].limits {
            let (window, _) = limit_window(&w.state, l, w.now);
            let c = counter_in(&w.state, plan_id, l, window);
            limits.insert(l.id.clone(), l.limit.saturating_sub(c.used + c.reserved));
        }
    }
    let balances = w
        .state
        .balances
        .iter()
        .filter(|b| b.status == BalanceStatus::Active && b.expires_at.is_none_or(|e| e > w.now))
        .map(|b| (b.id.clone(), b.remaining))
        .collect();
    (limits, balances)
}

fn check_batch(start: &World, end: &World, batch: &[(usize, u64)], allowed: u64) {
    let (limit_room, balance_room) = capacity(start);
    let new: Vec<&Reservation> = end
        .state
        .reservations
        .values()
        .filter(|r| !start.state.reservations.contains_key(&r.id))
        .collect();
    assert_eq!(new.iter().map(|r| r.amount).sum::<u64>(), allowed);
    let mut per_limit: BTreeMap<&str, u64> = BTreeMap::new();
    let mut per_balance: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &new {
        if let Some(p) = &r.plan {
            for l in &p.limits {
                *per_limit.entry(l.limit_id.as_str()).or_default() += p.amount;
            }
        }
        for c in &r.credits {
            *per_balance.entry(c.balance_id.as_str()).or_default() += c.amount;
        }
    }
    for (l, n) in per_limit {
        assert!(
            n <= limit_room[l],
            "I10: limit {l} gave {n} of {}",
            limit_room[l]
        );
    }
    for (b, n) in per_balance {
        let room = balance_room.get(b).copied().unwrap_or(0);
        assert!(n <= room, "I10: balance {b} gave {n} of {room}");
    }
    // With one model, the total is bounded by what the matcher said was available.
    if batch.windows(2).all(|p| p[0].0 == p[1].0) {
        let m = model(MODELS[batch[0].0]);
        let a = matcher::find(&start.state, &start.catalog, &m, 1, start.now).available;
        assert!(
            allowed <= a.plan + a.credits,
            "I10: {allowed} allowed of {} + {}",
            a.plan,
            a.credits
        );
    }
}

/// Reserves as (model index, amount).
type Reserves = Vec<(usize, u64)>;

fn batch_case() -> impl Strategy<Value = (Vec<Op>, Reserves, Reserves)> {
    let one_model = (0..MODELS.len(), prop::collection::vec(1..=5u64, 1..12))
        .prop_map(|(m, amounts)| amounts.into_iter().map(|a| (m, a)).collect::<Vec<_>>());
    let mixed = prop::collection::vec((0..MODELS.len(), 1..=5u64), 1..12);
    (ops(25), prop_oneof![one_model, mixed]).prop_flat_map(|(ops, batch)| {
        let shuffled = Just(batch.clone()).prop_shuffle();
        (Just(ops), Just(batch), shuffled)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_batch_of_reserves_in_any_order_never_allows_more_than_plan_and_credits_held(
        (prelude, batch, shuffled) in batch_case(),
    ) {
        let mut start = world();
        for op in &prelude {
            run_op(&mut start, op);
        }
        // Bring the user up to now first, so that the batch sees no deadline pass.
        start.advance(0);
        for order in [&batch, &shuffled] {
            let fork = World {
                state: start.state.clone(),
                catalog: start.catalog.clone(),
                now: start.now,
                ids: CountingIds(start.ids.0),
                limits_lowered: start.limits_lowered,
                ledger: start.ledger.clone(),
                journal: start.journal.clone(),
                notices: start.notices.clone(),
                past: start.past.clone(),
            };
            let (end, allowed) = run_batch(fork, order);
            check_batch(&start, &end, order, allowed);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Sleep and wake: a user packed at any point and unpacked goes on exactly as one that never
    /// slept, and the packed form names the deadline it must be woken for.
    #[test]
    fn a_user_packed_and_unpacked_at_any_point_goes_on_as_if_it_never_slept(
        ops in ops(60),
        cut in any::<prop::sample::Index>(),
    ) {
        use crate::persistence::image::Packed;
        let mut awake = world();
        let mut slept = world();
        let cut = cut.index(ops.len() + 1);
        for (i, op) in ops.iter().enumerate() {
            if i == cut {
                // Going to sleep: the ledger lines in memory leave as a page, then the user packs.
                let flushed = slept.state.flush_ledger();
                slept.past.keep(&[flushed]);
                prop_assert!(slept.state.ledger_tail.is_empty());
                let packed = Packed::pack(&slept.state).expect("packs");
                prop_assert_eq!(packed.deadline, crate::engine::next_deadline(&slept.state));
                // Packed by an earlier build, with the indexes: the same user.
                let v1 = Packed::pack_as_v1(&slept.state).unpack().expect("unpacks");
                prop_assert_eq!(&v1, &slept.state);
                // Asleep among the known users and woken, as the engine does it.
                let known = crate::actors::known::KnownUsers::with_capacity(1);
                let key = crate::engine::UserKey {
                    app: "app".into(),
                    mode: crate::engine::Mode::Live,
                    user: crate::engine::ids::UserId::parse("u1").expect("a user id"),
                };
                known.sleep(&key, Some(&packed));
                prop_assert_eq!(known.asleep(), 1);
                let woken = known.wake(&key).expect("asleep");
                slept.state = woken.unpack().expect("unpacks");
            }
            run_op(&mut awake, op);
            run_op(&mut slept, op);
        }
        // The same ledger, cut into other pages; everything else the same.
        prop_assert_eq!(&slept.ledger, &awake.ledger);
        let lines = |w: &World| -> Vec<LedgerLine> {
            w.past.pages.iter().flatten().chain(&w.state.ledger_tail).cloned().collect()
        };
        prop_assert_eq!(lines(&slept), lines(&awake));
        let (mut a, mut b) = (slept.state.clone(), awake.state.clone());
        a.ledger_tail.clear();
        b.ledger_tail.clear();
        prop_assert_eq!(a, b);
    }
}

/// The steps of `ops` run on `w` as user `key`: each op's records, settled as an actor settles a
/// step.
fn settled_steps(w: &mut World, key: &UserKey, ops: &[Op]) -> Vec<Vec<Record>> {
    use crate::engine::state::Settled;
    let mut steps = Vec::new();
    for op in ops {
        let plan_before = w.state.active_plan().cloned();
        let from = w.journal.len();
        run_op(w, op);
        let events: Vec<Arc<Event>> = w.journal[from..].iter().cloned().map(Arc::new).collect();
        if !events.is_empty() {
            let settled = Settled::of(&w.state, plan_before);
            steps.push(Record::events(key, events, settled).collect());
        }
    }
    steps
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Startup's replay, which keeps a user's records as the journal's bytes and applies them when
    /// the user is unpacked, gives the same users, deadlines and subscriber counts as applying
    /// every record: after a snapshot taken between any two steps, with users flushing their
    /// ledger, with records of the newest batch applied among kept ones, and when the last step
    /// lost its end (a journal whose batches could split a step).
    #[test]
    fn replay_that_keeps_records_as_bytes_equals_replay_that_applies_them(
        ops_a in ops(40),
        ops_b in ops(40),
        snapshot_at in any::<prop::sample::Index>(),
        flush_at in any::<prop::sample::Index>(),
        applied_from in any::<prop::sample::Index>(),
        cut_step in any::<bool>(),
    ) {
        use crate::persistence::codec::{decode_record, encode_bare};
        use crate::persistence::image::Image;
        let key = |user: &str| UserKey {
            app: "app".into(),
            mode: Mode::Live,
            user: UserId::parse(user).expect("a user id"),
        };
        let (a, b) = (key("a"), key("b"));
        let steps_a = settled_steps(&mut world(), &a, &ops_a);
        let steps_b = settled_steps(&mut world(), &b, &ops_b);
        // Two users' steps interleaved, with a flush of each user's ledger between two of them.
        let mut steps = Vec::new();
        let flush_at = flush_at.index(steps_a.len() + 1);
        let mut b_steps = steps_b.into_iter();
        for (i, step) in steps_a.into_iter().enumerate() {
            if i == flush_at {
                steps.push(vec![Record::FlushLedger { key: a.clone() }]);
                steps.push(vec![Record::FlushLedger { key: b.clone() }]);
            }
            steps.push(step);
            steps.extend(b_steps.next());
        }
        steps.extend(b_steps);
        if cut_step {
            // A crash that kept half of a step (a journal whose batches could split one): the
            // journal ends inside it.
            if let Some(last) = steps.iter().rposition(|s| s.len() > 1) {
                steps.truncate(last + 1);
                steps[last].pop();
            }
        }
        let snapshot_at: usize = steps[..snapshot_at.index(steps.len() + 1)].iter().map(Vec::len).sum();
        let records: Vec<Record> = steps.into_iter().flatten().collect();
        let bytes: Vec<Vec<u8>> = records.iter().map(|r| encode_bare(r).expect("encodes")).collect();

        // The snapshot, taken the way the snapshotter takes it.
        let mut snapshot = Image::default();
        let mut replay = snapshot.replay();
        for record in &records[..snapshot_at] {
            replay.apply_owned(record.clone()).expect("applies");
        }
        replay.finish().expect("packs");

        let mut applied = snapshot.clone();
        let mut replay = applied.replay();
        for record in &bytes[snapshot_at..] {
            replay.apply_owned(decode_record(record).expect("decodes")).expect("applies");
        }
        replay.finish().expect("packs");

        let mut kept = snapshot.clone();
        let mut replay = kept.replay();
        let applied_from = snapshot_at + applied_from.index(records.len() - snapshot_at + 1);
        for (i, record) in bytes.iter().enumerate().skip(snapshot_at) {
            if i < applied_from {
                replay.keep(record).expect("keeps");
            } else {
                replay.apply_owned(decode_record(record).expect("decodes")).expect("applies");
            }
        }
        replay.finish().expect("packs");

        prop_assert_eq!(&kept.subscribers, &applied.subscribers);
        let mut keys: Vec<&UserKey> = applied.users.keys().collect();
        keys.sort();
        let mut kept_keys: Vec<&UserKey> = kept.users.keys().collect();
        kept_keys.sort();
        prop_assert_eq!(&kept_keys, &keys);
        for key in keys {
            let (k, p) = (&kept.users[key], &applied.users[key]);
            prop_assert_eq!(k.deadline, p.deadline, "deadline of {:?}", key);
            prop_assert_eq!(k.unpack().expect("unpacks"), p.unpack().expect("unpacks"));
        }
    }
}
