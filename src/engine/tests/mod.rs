//! Engine-level tests: a small `World` to drive one user through `step`, the invariants of
//! DESIGN.md checked after every command, table-driven matcher tests, unit tests of each command, and
//! property tests over random command sequences.

mod commands;
mod matcher_table;
mod notices;
mod properties;

use super::catalog::{Catalog, CatalogChange, Limit, Pack, PackItem, Plan, Price};
use super::decide::{Command, Outcome, Past, Rejection, Step, catch_up, step};
use super::event::{Event, EventKind, GrantSource};
use super::ids::{CountingIds, ModelKey, Pattern, UserId};
use super::matcher::{Available, Reason, counter_in, limit_window};
use super::name::Name;
use super::notice::SentNotice;
use super::time::{Period, Ts};
use super::user::{
    Applied, Balance, BalanceStatus, Counter, Reservation, ReservationStatus, UserState,
};
use super::{Mode, UserKey};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What a user's history store would hold, kept in maps: ended reservations of pages that left
/// memory and the request keys of ended reserves.
#[derive(Debug, Default, Clone)]
pub struct MemPast {
    pub ended: BTreeMap<Name, Reservation>,
    pub request_keys: BTreeMap<String, (Name, Ts)>,
    /// Every page that left memory, oldest first.
    pub pages: Vec<Vec<super::ledger::LedgerLine>>,
}

impl MemPast {
    pub fn keep(&mut self, applied: &[Applied]) {
        for a in applied {
            if let Some(page) = &a.page {
                for line in page.iter() {
                    if let Some(r) = &line.reservation {
                        self.ended.insert(r.id.clone(), (**r).clone());
                    }
                }
                self.pages.push(page.to_vec());
            }
            if let Some(k) = &a.request_key {
                self.request_keys
                    .insert(k.key.clone(), (k.reservation_id.clone(), k.created_at));
            }
        }
    }
}

impl Past for MemPast {
    fn ended(&self, id: &str) -> Option<Reservation> {
        self.ended.get(id).cloned()
    }
    fn by_request_key(&self, key: &str, since: Ts) -> Option<Name> {
        self.request_keys
            .get(key)
            .filter(|(_, at)| *at > since)
            .map(|(id, _)| id.clone())
    }
}

/// 2028-01-31T10:00:00Z: a month start that makes the clamped months show.
pub const START: Ts = Ts(1_832_925_600_000);
pub const SECOND: i64 = 1_000;
pub const HOUR: i64 = 3_600 * SECOND;
pub const DAY: i64 = 24 * HOUR;

pub fn at(text: &str) -> Ts {
    Ts::parse_rfc3339(text).expect("valid test timestamp")
}

/// A live-mode user of the app "app".
pub fn user_key(user: &str) -> UserKey {
    UserKey {
        app: "app".into(),
        mode: Mode::Live,
        user: UserId::parse(user).expect("valid test user id"),
    }
}

pub fn model(text: &str) -> ModelKey {
    ModelKey::parse(text).expect("valid test model key")
}

pub fn pattern(text: &str) -> Pattern {
    Pattern::parse(text).expect("valid test pattern")
}

/// A limit: `(id, patterns, limit, period)`.
pub fn limit(id: &str, patterns: &[&str], limit: u64, period: Period) -> Limit {
    Limit {
        id: id.into(),
        name: id.to_uppercase(),
        patterns: patterns.iter().map(|p| pattern(p)).collect(),
        limit,
        unit: "count".into(),
        period,
    }
}

pub fn plan(id: &str, limits: Vec<Limit>) -> Plan {
    Plan {
        id: id.into(),
        name: id.to_uppercase(),
        price: Price {
            amount: 900,
            currency: "usd".into(),
            interval: None,
        },
        limits,
        created_at: Ts(0),
        updated_at: Ts(0),
    }
}

/// A pack with items `(item id, pattern, amount)`.
pub fn pack(id: &str, items: &[(&str, &str, u64)], expires_in_days: Option<u32>) -> Pack {
    Pack {
        id: id.into(),
        name: id.to_uppercase(),
        price: Price {
            amount: 1500,
            currency: "usd".into(),
            interval: None,
        },
        expires_in_days,
        stripe_price_id: None,
        archived: false,
        items: items
            .iter()
            .map(|(item, p, amount)| PackItem {
                id: (*item).into(),
                pattern: pattern(p),
                amount: *amount,
                unit: "count".into(),
                low_balance_threshold: None,
            })
            .collect(),
        created_at: Ts(0),
        updated_at: Ts(0),
    }
}

pub fn reserve_cmd(model_key: &str, amount: u64, ttl_ms: i64, commit: bool) -> Command {
    Command::Reserve {
        model: model(model_key),
        amount,
        ttl_ms,
        metadata: None,
        request_key: None,
        commit,
    }
}

pub fn grant_cmd(pack_id: &str, external_ref: &str, expires_at: Option<Ts>) -> Command {
    Command::Grant {
        pack_id: pack_id.into(),
        external_ref: external_ref.into(),
        source: GrantSource::Purchase,
        notes: None,
        expires_at,
        payment_intent: None,
        expiring_notice_days: 3,
    }
}

pub const TTL: i64 = 600 * SECOND;

/// One user, a catalog, a clock and deterministic ids. Every command goes through `step`, and the
/// invariants are checked after each one.
pub struct World {
    pub state: UserState,
    pub catalog: Catalog,
    pub now: Ts,
    pub ids: CountingIds,
    /// Set once a limit was lowered: I2 may then be broken by design.
    pub limits_lowered: bool,
    /// Every event applied that is a ledger entry, oldest first: the user's whole ledger.
    pub ledger: Vec<Event>,
    /// Every outgoing event, oldest first.
    pub notices: Vec<SentNotice>,
    /// Every event applied, ledger entries and notices, oldest first: what the journal holds.
    pub journal: Vec<Event>,
    pub past: MemPast,
}

/// A denial as the tests compare it: reason names and `available`.
pub type Denial = (Vec<&'static str>, Available);

impl World {
    pub fn new() -> World {
        World {
            state: UserState::default(),
            catalog: Catalog::default(),
            now: START,
            ids: CountingIds::default(),
            limits_lowered: false,
            ledger: Vec::new(),
            notices: Vec::new(),
            journal: Vec::new(),
            past: MemPast::default(),
        }
    }

    pub fn with(plans: Vec<Plan>, packs: Vec<Pack>) -> World {
        let mut w = World::new();
        plans.into_iter().for_each(|p| w.put_plan(p));
        packs.into_iter().for_each(|p| w.put_pack(p));
        w
    }

    pub fn put_plan(&mut self, plan: Plan) {
        self.catalog.apply(&CatalogChange::PlanPut(plan));
    }

    pub fn put_pack(&mut self, pack: Pack) {
        self.catalog.apply(&CatalogChange::PackPut(pack));
    }

    /// Runs a command through `step`, checks that its events are the new tail of the ledger, and
    /// checks the invariants.
    pub fn run(&mut self, command: Command) -> Step {
        let s = step(
            &mut self.state,
            &self.past,
            &self.catalog,
            command,
            self.now,
            &mut self.ids,
        );
        let entries: Vec<&Event> = s
            .events
            .iter()
            .map(|e| &**e)
            .filter(|e| SentNotice::of(e).is_none())
            .collect();
        let tail = &self.state.ledger_tail;
        let in_tail = entries.len().min(tail.len());
        assert!(
            tail[tail.len() - in_tail..]
                .iter()
                .map(|l| &*l.event)
                .eq(entries[entries.len() - in_tail..].iter().copied()),
            "step's events are the newest lines of the ledger"
        );
        self.past.keep(&s.applied);
        self.keep_events(s.events.iter().map(|e| Event::clone(e)));
        self.check();
        s
    }

    /// Splits applied events into the ledger and the outgoing events.
    fn keep_events(&mut self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            self.journal.push(event.clone());
            match SentNotice::of(&event) {
                Some(notice) => self.notices.push(notice),
                None => self.ledger.push(event),
            }
        }
    }

    /// The types of the outgoing events from index `from` on.
    pub fn notices_since(&self, from: usize) -> Vec<&'static str> {
        self.notices[from..]
            .iter()
            .map(|n| n.notice.kind.as_str())
            .collect()
    }

    pub fn check(&self) {
        check_invariants_with(
            &self.state,
            &self.ledger,
            &self.catalog,
            self.now,
            !self.limits_lowered,
        );
        check_pages(&self.state, &self.past, &self.ledger);
    }

    /// Moves the clock and runs the deadlines that passed, as the actor's timer does.
    pub fn advance(&mut self, ms: i64) {
        self.now = self.now.plus_ms(ms);
        let changes = catch_up(&mut self.state, self.now, &mut self.ids);
        self.past.keep(&changes.applied);
        self.keep_events(changes.events.into_iter().map(Arc::unwrap_or_clone));
        self.check();
    }

    pub fn ok(&mut self, command: Command) -> Outcome {
        let what = format!("{command:?}");
        self.run(command)
            .result
            .unwrap_or_else(|e| panic!("{what} was refused: {e}"))
    }

    pub fn subscribe(&mut self, plan_id: &str) -> Step {
        self.run(Command::Subscribe {
            plan_id: plan_id.into(),
        })
    }

    pub fn cancel(&mut self) -> Step {
        self.run(Command::Cancel)
    }

    /// Reserves with the default TTL: the reservation id, or the denial.
    pub fn reserve(&mut self, model_key: &str, amount: u64) -> Result<Name, Denial> {
        self.reserve_with(reserve_cmd(model_key, amount, TTL, false))
    }

    /// Reserves and commits in one step (consume).
    pub fn consume(&mut self, model_key: &str, amount: u64) -> Result<Name, Denial> {
        self.reserve_with(reserve_cmd(model_key, amount, TTL, true))
    }

    pub fn reserve_with(&mut self, command: Command) -> Result<Name, Denial> {
        match self.ok(command) {
            Outcome::Reservation(id) => Ok(id),
            Outcome::Denied { reasons, available } => {
                Err((reasons.iter().map(|r| r.as_str()).collect(), available))
            }
            other => panic!("a reserve answered {other:?}"),
        }
    }

    /// A reserve that must be allowed.
    pub fn reserve_ok(&mut self, model_key: &str, amount: u64) -> Name {
        self.reserve(model_key, amount)
            .unwrap_or_else(|d| panic!("reserve {amount} of {model_key} denied: {d:?}"))
    }

    pub fn commit(&mut self, id: &str, amount: Option<u64>) -> Result<Outcome, Rejection> {
        self.run(Command::Commit {
            reservation_id: id.into(),
            amount,
            response: None,
        })
        .result
    }

    pub fn release(&mut self, id: &str) -> Result<Outcome, Rejection> {
        self.run(Command::Release {
            reservation_id: id.into(),
            error_code: None,
        })
        .result
    }

    /// Grants a pack: the balance ids and whether the grant was new.
    pub fn grant(&mut self, pack_id: &str, external_ref: &str) -> (bool, Vec<Name>) {
        self.grant_until(pack_id, external_ref, None)
            .expect("grant refused")
    }

    pub fn grant_until(
        &mut self,
        pack_id: &str,
        external_ref: &str,
        expires_at: Option<Ts>,
    ) -> Result<(bool, Vec<Name>), Rejection> {
        match self
            .run(grant_cmd(pack_id, external_ref, expires_at))
            .result?
        {
            Outcome::Granted {
                created,
                balance_ids,
            } => Ok((created, balance_ids)),
            other => panic!("a grant answered {other:?}"),
        }
    }

    /// Grants a one-item pack and returns its balance id.
    pub fn grant_one(&mut self, pack_id: &str, external_ref: &str) -> Name {
        let (created, ids) = self.grant(pack_id, external_ref);
        assert!(created);
        assert_eq!(ids.len(), 1, "{pack_id} has one item");
        ids.into_iter().next().unwrap()
    }

    pub fn revoke(&mut self, balance_id: &str) -> Step {
        self.run(Command::Revoke {
            balance_id: balance_id.into(),
            reason: Some("refund".into()),
        })
    }

    pub fn balance(&self, id: &str) -> &Balance {
        self.state.balance(id).expect("known balance")
    }

    /// A reservation from memory or, once it left memory, from the past.
    pub fn res(&self, id: &str) -> Reservation {
        self.state
            .reservation(id)
            .cloned()
            .or_else(|| self.past.ended(id))
            .unwrap_or_else(|| panic!("unknown reservation {id}"))
    }

    /// A counter of the current subscription's plan as the matcher sees it now.
    pub fn counter(&self, plan_id: &str, limit_id: &str) -> Counter {
        let plan = &self.catalog.plans[plan_id];
        let limit = plan.limits.iter().find(|l| l.id == limit_id).unwrap();
        let (window, _) = limit_window(&self.state, limit, self.now);
        counter_in(&self.state, &plan.id, limit, window)
    }

    /// `(used, reserved)` of a counter now.
    pub fn used(&self, plan_id: &str, limit_id: &str) -> (u64, u64) {
        let c = self.counter(plan_id, limit_id);
        (c.used, c.reserved)
    }

    /// `(remaining, reserved, committed, revoked, expired)` of a balance.
    pub fn parts(&self, id: &str) -> (u64, u64, u64, u64, u64) {
        let b = self.balance(id);
        (b.remaining, b.reserved, b.committed, b.revoked, b.expired)
    }

    /// The ledger entry types from index `from` on.
    pub fn types_since(&self, from: usize) -> Vec<&'static str> {
        self.ledger[from..]
            .iter()
            .map(|e| e.kind.type_name())
            .collect()
    }
}

/// The ledger entry types a step wrote, without its notices.
pub fn entry_types(step: &Step) -> Vec<&'static str> {
    step.events
        .iter()
        .filter(|e| SentNotice::of(e).is_none())
        .map(|e| e.kind.type_name())
        .collect()
}

pub fn names(reasons: &[Reason]) -> Vec<&'static str> {
    reasons.iter().map(|r| r.as_str()).collect()
}

/// Checks I1, I2, I3 and I9 on one user's state.
pub fn check_invariants(state: &UserState, ledger: &[Event], catalog: &Catalog, now: Ts) {
    check_invariants_with(state, ledger, catalog, now, true)
}

pub fn check_invariants_with(
    state: &UserState,
    ledger: &[Event],
    catalog: &Catalog,
    now: Ts,
    check_i2: bool,
) {
    check_i1(state);
    if check_i2 {
        check_i2_counters(state, catalog, now);
    }
    check_i3(state);
    check_i9_ledger(state, ledger);
    check_indexes(state, ledger);
}

/// The pages that left memory followed by the tail are the whole ledger, in order, each page
/// full and the tail short of a page.
fn check_pages(state: &UserState, past: &MemPast, ledger: &[Event]) {
    let kept: Vec<&Event> = past
        .pages
        .iter()
        .flatten()
        .chain(&state.ledger_tail)
        .map(|l| &*l.event)
        .collect();
    assert!(kept.iter().copied().eq(ledger), "pages + tail = the ledger");
    assert!(
        past.pages
            .iter()
            .all(|p| !p.is_empty() && p.len() <= super::ledger::LEDGER_PAGE_LINES),
        "no page is empty or over-full (a user going to sleep leaves a short one)"
    );
    assert!(state.ledger_tail.len() < super::ledger::LEDGER_PAGE_LINES);
}

/// I1: every balance adds up, recomputed without trusting `is_balanced`.
fn check_i1(state: &UserState) {
    for b in &state.balances {
        assert!(b.is_balanced(), "I1: {b:?}");
        let sum = u128::from(b.remaining)
            + u128::from(b.reserved)
            + u128::from(b.committed)
            + u128::from(b.revoked)
            + u128::from(b.expired);
        assert_eq!(sum, u128::from(b.granted), "I1 recomputed: {b:?}");
        if b.status != BalanceStatus::Active {
            assert_eq!(b.remaining, 0, "a dead balance has nothing to spend: {b:?}");
        }
    }
}

/// I2: used + reserved ≤ limit for every counter of the current plan in its current window. With
/// limits never lowered it holds in every window of every plan, so that is what is checked.
fn check_i2_counters(state: &UserState, catalog: &Catalog, now: Ts) {
    for ((plan_id, limit_id), c) in &state.counters {
        let Some(plan) = catalog.plans.get(plan_id) else {
            continue;
        };
        let Some(limit) = plan.limits.iter().find(|l| &l.id == limit_id) else {
            continue;
        };
        assert!(
            c.used + c.reserved <= limit.limit,
            "I2: counter {plan_id}/{limit_id} {c:?} over its limit {}",
            limit.limit
        );
        let current = state
            .subscription
            .as_ref()
            .and_then(|s| s.active_plan())
            .is_some_and(|p| p == plan_id);
        if current {
            let (window, _) = limit_window(state, limit, now);
            let seen = counter_in(state, plan_id, limit, window);
            assert!(seen.used + seen.reserved <= limit.limit, "I2 now: {seen:?}");
        }
    }
}

/// I3: a pending reservation's plan part (once) plus its credit holds is its amount, and the holds
/// of pending reservations are exactly what balances and counters show as reserved.
fn check_i3(state: &UserState) {
    let mut by_balance: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_counter: BTreeMap<(&str, &str, Ts), u64> = BTreeMap::new();
    let mut pending = BTreeSet::new();
    for r in state.reservations.values() {
        assert_eq!(
            r.status,
            ReservationStatus::Pending,
            "only pending reservations stay in memory"
        );
        let credits: u64 = r.credits.iter().map(|c| c.amount).sum();
        if let Some(p) = &r.plan {
            assert!(p.amount > 0, "an empty plan part is no plan part: {r:?}");
            assert!(
                !p.limits.is_empty(),
                "a plan part charges some limit: {r:?}"
            );
        }
        assert!(
            r.credits.iter().all(|c| c.amount > 0),
            "no empty credit hold: {r:?}"
        );
        assert_eq!(r.plan_amount() + credits, r.amount, "I3 parts: {r:?}");
        match r.status {
            ReservationStatus::Pending => {
                assert!(r.committed_amount.is_none());
                pending.insert((r.expires_at, r.id.clone()));
                for c in &r.credits {
                    *by_balance.entry(&c.balance_id).or_default() += c.amount;
                }
                if let Some(p) = &r.plan {
                    for l in &p.limits {
                        *by_counter
                            .entry((&p.plan_id, &l.limit_id, l.window))
                            .or_default() += p.amount;
                    }
                }
            }
            ReservationStatus::Committed => {
                let c = r.committed_amount.expect("a committed amount");
                assert!(c <= r.amount && c > 0, "{r:?}");
            }
            ReservationStatus::Released | ReservationStatus::Expired => {
                assert!(r.committed_amount.is_none());
            }
        }
    }
    assert_eq!(
        pending, state.pending,
        "the pending index is the pending reservations"
    );
    for b in &state.balances {
        let held = by_balance.get(b.id.as_str()).copied().unwrap_or(0);
        assert_eq!(held, b.reserved, "I3: holds on {} vs its reserved", b.id);
    }
    for id in by_balance.keys() {
        assert!(
            state.balance(id).is_some(),
            "a hold on an unknown balance {id}"
        );
    }
    for ((plan_id, limit_id), c) in &state.counters {
        let held = by_counter
            .get(&(plan_id.as_str(), limit_id.as_str(), c.window))
            .copied()
            .unwrap_or(0);
        assert_eq!(
            held, c.reserved,
            "I3: pending plan holds on {plan_id}/{limit_id} in window {:?}",
            c.window
        );
    }
}

/// What the ledger alone says about one balance.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FromLedger {
    pub granted: u64,
    pub committed: u64,
    pub revoked: u64,
    pub expired: u64,
    pub reserved: u64,
    pub status: Option<BalanceStatus>,
}

/// I9: every balance rebuilt from the ledger entries alone.
pub fn balances_from_ledger(ledger: &[Event]) -> BTreeMap<Name, FromLedger> {
    let mut out: BTreeMap<Name, FromLedger> = BTreeMap::new();
    // Reservation id → its credit holds, while no end entry was seen.
    let mut open: BTreeMap<Name, Vec<(Name, u64)>> = BTreeMap::new();
    for e in ledger {
        match &e.kind {
            EventKind::CreditsGranted(g) => {
                let b = out.entry(g.balance_id.clone()).or_default();
                b.granted += g.amount;
                b.status = Some(BalanceStatus::Active);
            }
            EventKind::CreditsRevoked {
                balance_id,
                amount,
                reservation_id,
                ..
            } => {
                let b = out
                    .get_mut(balance_id)
                    .expect("revoke of a granted balance");
                b.revoked += amount;
                if reservation_id.is_none() {
                    b.status = Some(BalanceStatus::Revoked);
                }
            }
            EventKind::CreditsExpired {
                balance_id,
                amount,
                reservation_id,
            } => {
                let b = out
                    .get_mut(balance_id)
                    .expect("expiry of a granted balance");
                b.expired += amount;
                if reservation_id.is_none() {
                    b.status = Some(BalanceStatus::Expired);
                }
            }
            EventKind::UsageReserved(r) => {
                let holds = r
                    .credits
                    .iter()
                    .map(|c| (c.balance_id.clone(), c.amount))
                    .collect();
                assert!(
                    open.insert(r.reservation_id.clone(), holds).is_none(),
                    "a reservation id used twice"
                );
            }
            EventKind::UsageCommitted {
                reservation_id,
                credits,
                ..
            } => {
                open.remove(reservation_id)
                    .expect("commit of an open reservation");
                for c in credits {
                    out.get_mut(&c.balance_id).unwrap().committed += c.amount;
                }
            }
            EventKind::UsageReleased { reservation_id, .. }
            | EventKind::UsageExpired { reservation_id } => {
                open.remove(reservation_id)
                    .expect("end of an open reservation");
            }
            EventKind::SubscriptionUpdated { .. }
            | EventKind::SubscriptionCanceled { .. }
            | EventKind::Noticed(_) => {}
        }
    }
    for holds in open.values() {
        for (balance_id, amount) in holds {
            out.get_mut(balance_id).unwrap().reserved += amount;
        }
    }
    out
}

fn check_i9_ledger(state: &UserState, ledger: &[Event]) {
    let rebuilt = balances_from_ledger(ledger);
    assert_eq!(
        rebuilt.len(),
        state.balances.len(),
        "I9: one grant entry per balance"
    );
    for b in &state.balances {
        let l = &rebuilt[&b.id];
        let remaining = l
            .granted
            .checked_sub(l.committed + l.revoked + l.expired + l.reserved)
            .unwrap_or_else(|| panic!("I9: the ledger spends more than {} had: {l:?}", b.id));
        assert_eq!(
            remaining, b.remaining,
            "I9 remaining of {}: {l:?} vs {b:?}",
            b.id
        );
        assert_eq!(
            (l.granted, l.committed, l.revoked, l.expired, l.reserved),
            (b.granted, b.committed, b.revoked, b.expired, b.reserved),
            "I9 parts of {}",
            b.id
        );
        assert_eq!(l.status, Some(b.status), "I9 status of {}", b.id);
    }
}

/// The derived indexes agree with what they index, and ledger ids are unique.
fn check_indexes(state: &UserState, ledger: &[Event]) {
    for (i, b) in state.balances.iter().enumerate() {
        assert_eq!(state.balance_index.get(&b.id), Some(&i));
    }
    assert_eq!(state.balance_index.len(), state.balances.len());
    let ids: BTreeSet<&str> = ledger.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), ledger.len(), "ledger ids are unique");
}
