//! One user's state in one mode, and `apply`, the only code that changes it.
//!
//! `apply` cannot fail: `decide` has checked everything before the event exists. It asserts the
//! invariants it relies on, because a broken one means a bug, and serving wrong balances is worse
//! than stopping.

use super::event::{CreditHold, Event, EventKind, GrantSource, PlanHold, Reserved};
use super::ids::{ModelKey, Pattern};
use super::ledger::{LEDGER_PAGE_LINES, LedgerLine};
use super::name::Name;
use super::notice::{Notice, NoticeData, NoticeType, SentNotice};
use super::time::Ts;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionStatus {
    Active,
    Canceled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub plan_id: Name,
    pub status: SubscriptionStatus,
    pub current_period_start: Ts,
    pub created_at: Ts,
}

impl Subscription {
    pub fn active_plan(&self) -> Option<&Name> {
        (self.status == SubscriptionStatus::Active).then_some(&self.plan_id)
    }
}

/// Usage of one plan limit in the window that starts at `window`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub window: Ts,
    pub used: u64,
    pub reserved: u64,
    /// `plan.limit_reached` fired in this window (it fires once per window).
    pub limit_reached_noticed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BalanceStatus {
    Active,
    Expired,
    Revoked,
}

impl BalanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceStatus::Active => "active",
            BalanceStatus::Expired => "expired",
            BalanceStatus::Revoked => "revoked",
        }
    }
}

/// One pack item granted to one user. Invariant I1:
/// `granted = remaining + reserved + committed + revoked + expired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub id: Name,
    pub pack_id: Name,
    pub pack_item_id: Name,
    pub pattern: Pattern,
    pub unit: Name,
    pub granted: u64,
    pub remaining: u64,
    pub reserved: u64,
    pub committed: u64,
    pub revoked: u64,
    pub expired: u64,
    pub status: BalanceStatus,
    pub source: GrantSource,
    pub external_ref: Name,
    pub notes: Option<String>,
    pub expires_at: Option<Ts>,
    pub created_at: Ts,
    pub payment_intent: Option<String>,
    pub low_balance_threshold: Option<u64>,
    /// When `credits.expiring` is due; `None` once it fired (or if it never will).
    pub expiring_notice_at: Option<Ts>,
}

impl Balance {
    pub fn is_balanced(&self) -> bool {
        [
            self.remaining,
            self.reserved,
            self.committed,
            self.revoked,
            self.expired,
        ]
        .iter()
        .try_fold(0u64, |sum, part| sum.checked_add(*part))
            == Some(self.granted)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationStatus {
    Pending,
    Committed,
    Released,
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Pending => "pending",
            ReservationStatus::Committed => "committed",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: Name,
    pub model: ModelKey,
    pub amount: u64,
    pub plan: Option<PlanHold>,
    pub credits: Vec<CreditHold>,
    pub status: ReservationStatus,
    pub expires_at: Ts,
    pub created_at: Ts,
    pub metadata: Option<String>,
    pub committed_amount: Option<u64>,
    pub response: Option<String>,
    pub error_code: Option<String>,
    /// The `Idempotency-Key` of the reserve that made it.
    pub request_key: Option<String>,
}

impl Reservation {
    pub fn plan_amount(&self) -> u64 {
        self.plan.as_ref().map_or(0, |p| p.amount)
    }
}

/// Serialized without the indexes derived from its balances; deserializing rebuilds them (see
/// [`StoredUserState`]), so a state comes back whole from its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredUserState")]
pub struct UserState {
    pub subscription: Option<Subscription>,
    /// Keyed by (plan id, limit id): a lifetime counter outlives a change of plan.
    pub counters: FxHashMap<(Name, Name), Counter>,
    /// In grant order. Balances never leave a user.
    pub balances: Vec<Balance>,
    /// Derived from `balances` and left out of the packed form (see [`StoredUserState`]).
    #[serde(skip)]
    pub balance_index: FxHashMap<Name, usize>,
    /// (pack id, external ref) → the balances of that grant, in item order. Derived from
    /// `balances` and left out of the packed form.
    #[serde(skip)]
    pub grants: FxHashMap<(Name, Name), Vec<Name>>,
    /// Pending reservations only: an ended one leaves memory on the ledger line that ended it.
    pub reservations: FxHashMap<Name, Reservation>,
    /// Pending reservations by deadline, so the next expiry is found without a scan.
    pub pending: BTreeSet<(Ts, Name)>,
    /// Idempotency key of a pending reserve → its reservation id. Keys of ended reservations are
    /// handed to the history with [`Applied::request_key`].
    pub request_keys: FxHashMap<String, Name>,
    /// The newest ledger lines, oldest first, at most [`LEDGER_PAGE_LINES`]; older ones are on
    /// disk.
    pub ledger_tail: Vec<LedgerLine>,
}

impl Applied {
    /// The reservation `id` as it ended, if this hands over the page that ended it.
    pub fn ended(&self, id: &str) -> Option<&Reservation> {
        self.page
            .as_ref()
            .and_then(|lines| lines.iter().find_map(|l| l.ended(id)))
    }

    /// The reservation made by an ended reserve with this `Idempotency-Key` after `since`.
    pub fn reserved_with_key(&self, key: &str, since: Ts) -> Option<&Name> {
        self.request_key
            .as_ref()
            .filter(|k| k.key == key && k.created_at > since)
            .map(|k| &k.reservation_id)
    }
}

/// The idempotency key of a reserve whose reservation ended, for the history to keep 24 hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub key: String,
    pub reservation_id: Name,
    pub created_at: Ts,
}

/// What applying one event hands to the history on disk; all of it is derived from the event and
/// the state, so replay hands over the same.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// A full tail of ledger lines that leaves memory as one page. Shared: the actor keeps it
    /// for reads until it is durable while the journal writer stores it, without a deep copy.
    pub page: Option<Arc<Vec<LedgerLine>>>,
    pub request_key: Option<RequestKey>,
    /// `(payment intent, balance id)` of a grant paid through Stripe, so a refund finds it.
    pub payment: Option<(String, Name)>,
    /// An outgoing event, for the history to keep and deliver.
    pub notice: Option<Box<SentNotice>>,
}

/// The fields of [`UserState`] that its bytes hold, in its order.
#[derive(Deserialize)]
pub struct StoredUserState {
    pub subscription: Option<Subscription>,
    pub counters: FxHashMap<(Name, Name), Counter>,
    pub balances: Vec<Balance>,
    pub reservations: FxHashMap<Name, Reservation>,
    pub pending: BTreeSet<(Ts, Name)>,
    pub request_keys: FxHashMap<String, Name>,
    pub ledger_tail: Vec<LedgerLine>,
}

/// Rebuilds the indexes derived from `balances`. A grant makes one balance per pack item (a pack
/// has at least one) and balances are never removed, so the balances alone say which grants were
/// made; stored, the indexes were about half of a sleeping user's bytes.
impl From<StoredUserState> for UserState {
    fn from(s: StoredUserState) -> UserState {
        let mut state = UserState {
            subscription: s.subscription,
            counters: s.counters,
            balances: s.balances,
            balance_index: FxHashMap::default(),
            grants: FxHashMap::default(),
            reservations: s.reservations,
            pending: s.pending,
            request_keys: s.request_keys,
            ledger_tail: s.ledger_tail,
        };
        state.reindex();
        state
    }
}

impl UserState {
    /// The plan of the subscription while it is active.
    pub fn active_plan(&self) -> Option<&Name> {
        self.subscription
            .as_ref()
            .and_then(Subscription::active_plan)
    }

    fn reindex(&mut self) {
        self.balance_index.clear();
        self.grants.clear();
        for (i, b) in self.balances.iter().enumerate() {
            self.balance_index.insert(b.id.clone(), i);
            self.grants
                .entry((b.pack_id.clone(), b.external_ref.clone()))
                .or_default()
                .push(b.id.clone());
        }
    }

    pub fn balance(&self, id: &str) -> Option<&Balance> {
        self.balance_index.get(id).map(|&i| &self.balances[i])
    }

    fn balance_mut(&mut self, id: &str) -> &mut Balance {
        let index = *self
            .balance_index
            .get(id)
            .unwrap_or_else(|| panic!("event names unknown balance {id}"));
        &mut self.balances[index]
    }

    /// Removes a pending reservation that an event ends, with its request key.
    fn take_pending(&mut self, id: &str) -> Reservation {
        let res = self
            .reservations
            .remove(id)
            .unwrap_or_else(|| panic!("event names a reservation that is not pending: {id}"));
        if let Some(key) = &res.request_key {
            self.request_keys.remove(key);
        }
        res
    }

    /// Applies an event and appends its ledger line. Returns what leaves memory with it.
    pub fn apply(&mut self, event: &Arc<Event>) -> Applied {
        self.apply_owned(event.clone())
    }

    /// [`UserState::apply`] for an event the caller no longer needs: it moves into the ledger
    /// line without a copy (recovery replays millions of them).
    pub fn apply_owned(&mut self, event: Arc<Event>) -> Applied {
        if let EventKind::Noticed(notice) = &event.kind {
            self.noticed(notice);
            return Applied {
                notice: SentNotice::of(&event).map(Box::new),
                ..Applied::default()
            };
        }
        let pack_id = match &event.kind {
            EventKind::CreditsGranted(g) => Some(g.pack_id.clone()),
            EventKind::CreditsRevoked { balance_id, .. }
            | EventKind::CreditsExpired { balance_id, .. } => {
                self.balance(balance_id).map(|b| b.pack_id.clone())
            }
            _ => None,
        };
        let ended = self.change(&event);
        let mut applied = Applied::default();
        if let EventKind::CreditsGranted(g) = &event.kind {
            applied.payment = g
                .payment_intent
                .as_ref()
                .map(|intent| (intent.clone(), g.balance_id.clone()));
        }
        if let Some(res) = &ended {
            applied.request_key = res.request_key.as_ref().map(|key| RequestKey {
                key: key.clone(),
                reservation_id: res.id.clone(),
                created_at: res.created_at,
            });
        }
        self.ledger_tail.push(LedgerLine {
            event,
            reservation: ended.map(Box::new),
            pack_id,
        });
        if self.ledger_tail.len() >= LEDGER_PAGE_LINES {
            applied.page = Some(Arc::new(std::mem::take(&mut self.ledger_tail)));
        }
        applied
    }

    /// Moves the ledger lines still in memory out as one page, however short.
    pub fn flush_ledger(&mut self) -> Applied {
        Applied {
            page: (!self.ledger_tail.is_empty())
                .then(|| Arc::new(std::mem::take(&mut self.ledger_tail))),
            ..Applied::default()
        }
    }

    /// The reservation `id` while it is pending, or as it ended if its line is still in memory.
    pub fn reservation(&self, id: &str) -> Option<&Reservation> {
        self.reservations.get(id).or_else(|| {
            self.ledger_tail
                .iter()
                .rev()
                .find_map(|line| line.ended(id))
        })
    }

    /// Everything `apply` does but keeping the ledger; returns the reservation the event ended.
    fn change(&mut self, event: &Event) -> Option<Reservation> {
        match &event.kind {
            EventKind::CreditsGranted(g) => {
                let balance = Balance {
                    id: g.balance_id.clone(),
                    pack_id: g.pack_id.clone(),
                    pack_item_id: g.pack_item_id.clone(),
                    pattern: g.pattern.clone(),
                    unit: g.unit.clone(),
                    granted: g.amount,
                    remaining: g.amount,
                    reserved: 0,
                    committed: 0,
                    revoked: 0,
                    expired: 0,
                    status: BalanceStatus::Active,
                    source: g.source,
                    external_ref: g.external_ref.clone(),
                    notes: g.notes.clone(),
                    expires_at: g.expires_at,
                    created_at: event.at,
                    payment_intent: g.payment_intent.clone(),
                    low_balance_threshold: g.low_balance_threshold,
                    expiring_notice_at: g.expiring_notice_at,
                };
                self.balance_index
                    .insert(g.balance_id.clone(), self.balances.len());
                self.balances.push(balance);
                self.grants
                    .entry((g.pack_id.clone(), g.external_ref.clone()))
                    .or_default()
                    .push(g.balance_id.clone());
            }
            EventKind::CreditsRevoked {
                balance_id,
                amount,
                reservation_id: None,
                ..
            } => {
                let b = self.balance_mut(balance_id);
                b.remaining = sub(b.remaining, *amount);
                b.revoked = add(b.revoked, *amount);
                b.status = BalanceStatus::Revoked;
            }
            EventKind::CreditsExpired {
                balance_id,
                amount,
                reservation_id: None,
            } => {
                let b = self.balance_mut(balance_id);
                b.remaining = sub(b.remaining, *amount);
                b.expired = add(b.expired, *amount);
                b.status = BalanceStatus::Expired;
            }
            // A write-off of units that came back to a dead balance: the usage event just before it
            // already moved them, this entry is there for the ledger.
            EventKind::CreditsRevoked {
                reservation_id: Some(_),
                ..
            }
            | EventKind::CreditsExpired {
                reservation_id: Some(_),
                ..
            } => {}
            EventKind::UsageReserved(r) => self.hold(r, event.at),
            EventKind::UsageCommitted {
                reservation_id,
                amount,
                plan_amount,
                credits,
                response,
            } => {
                let mut res = self.take_pending(reservation_id);
                res.status = ReservationStatus::Committed;
                res.committed_amount = Some(*amount);
                res.response = response.clone();
                self.settle(&res, *plan_amount, credits);
                return Some(res);
            }
            EventKind::UsageReleased {
                reservation_id,
                error_code,
            } => {
                let mut res = self.take_pending(reservation_id);
                res.status = ReservationStatus::Released;
                res.error_code = error_code.clone();
                self.settle(&res, 0, &[]);
                return Some(res);
            }
            EventKind::UsageExpired { reservation_id } => {
                let mut res = self.take_pending(reservation_id);
                res.status = ReservationStatus::Expired;
                self.settle(&res, 0, &[]);
                return Some(res);
            }
            EventKind::SubscriptionUpdated {
                plan_id,
                period_start,
            } => {
                let created_at = match &self.subscription {
                    Some(s) if s.status == SubscriptionStatus::Active => s.created_at,
                    _ => event.at,
                };
                self.subscription = Some(Subscription {
                    plan_id: plan_id.clone(),
                    status: SubscriptionStatus::Active,
                    current_period_start: *period_start,
                    created_at,
                });
            }
            EventKind::SubscriptionCanceled { .. } => {
                if let Some(s) = &mut self.subscription {
                    s.status = SubscriptionStatus::Canceled;
                }
            }
            EventKind::Noticed(notice) => self.noticed(notice),
        }
        None
    }

    /// Remembers the notices that fire once: `credits.expiring` per balance, `plan.limit_reached`
    /// per counter window.
    fn noticed(&mut self, notice: &Notice) {
        match &notice.data {
            NoticeData::Balance(b) if notice.kind == NoticeType::CreditsExpiring => {
                self.balance_mut(&b.id).expiring_notice_at = None;
            }
            NoticeData::Counter(c) => {
                let key = (c.plan_id.clone(), c.limit.id.clone());
                if let Some(counter) = self.counters.get_mut(&key) {
                    counter.limit_reached_noticed = true;
                }
            }
            _ => {}
        }
    }

    fn hold(&mut self, r: &Reserved, at: Ts) {
        if let Some(plan) = &r.plan {
            for limit in &plan.limits {
                let key = (plan.plan_id.clone(), limit.limit_id.clone());
                let counter = self.counters.entry(key).or_default();
                if counter.window != limit.window {
                    *counter = Counter {
                        window: limit.window,
                        ..Counter::default()
                    };
                }
                counter.reserved = add(counter.reserved, plan.amount);
            }
        }
        for hold in &r.credits {
            let b = self.balance_mut(&hold.balance_id);
            assert_eq!(
                b.status,
                BalanceStatus::Active,
                "hold on a dead balance {}",
                b.id
            );
            b.remaining = sub(b.remaining, hold.amount);
            b.reserved = add(b.reserved, hold.amount);
        }
        self.pending
            .insert((r.expires_at, r.reservation_id.clone()));
        if let Some(key) = &r.request_key {
            self.request_keys
                .insert(key.clone(), r.reservation_id.clone());
        }
        self.reservations.insert(
            r.reservation_id.clone(),
            Reservation {
                id: r.reservation_id.clone(),
                model: r.model.clone(),
                amount: r.amount,
                plan: r.plan.clone(),
                credits: r.credits.clone(),
                status: ReservationStatus::Pending,
                expires_at: r.expires_at,
                created_at: at,
                metadata: r.metadata.clone(),
                committed_amount: None,
                response: None,
                error_code: None,
                request_key: r.request_key.clone(),
            },
        );
    }

    /// Ends a pending reservation: keeps what was committed from each source and gives the rest
    /// back to where it came from, or writes it off where that balance is dead or that counter's
    /// window has passed.
    fn settle(&mut self, res: &Reservation, plan_committed: u64, committed: &[CreditHold]) {
        assert!(
            self.pending.remove(&(res.expires_at, res.id.clone())),
            "{} not pending",
            res.id
        );
        if let Some(plan) = &res.plan {
            for limit in &plan.limits {
                let key = (plan.plan_id.clone(), limit.limit_id.clone());
                if let Some(counter) = self.counters.get_mut(&key) {
                    if counter.window == limit.window {
                        counter.reserved = sub(counter.reserved, plan.amount);
                        counter.used = add(counter.used, plan_committed);
                    }
                }
            }
        }
        for hold in &res.credits {
            let kept = committed
                .iter()
                .find(|c| c.balance_id == hold.balance_id)
                .map_or(0, |c| c.amount);
            let back = sub(hold.amount, kept);
            let b = self.balance_mut(&hold.balance_id);
            b.reserved = sub(b.reserved, hold.amount);
            b.committed = add(b.committed, kept);
            match b.status {
                BalanceStatus::Active => b.remaining = add(b.remaining, back),
                BalanceStatus::Revoked => b.revoked = add(b.revoked, back),
                BalanceStatus::Expired => b.expired = add(b.expired, back),
            }
            debug_assert!(b.is_balanced(), "I1 broken on {}", b.id);
        }
    }
}

fn add(a: u64, b: u64) -> u64 {
    a.checked_add(b)
        .expect("a quantity overflowed u64: decide let an impossible event through")
}

fn sub(a: u64, b: u64) -> u64 {
    a.checked_sub(b)
        .expect("a quantity went below zero: decide let an impossible event through")
}
