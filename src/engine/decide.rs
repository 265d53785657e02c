//! `decide`: a command and the current state in, the events that carry it out (or a refusal) out.
//! No I/O, no clock: `now` and fresh ids are arguments.

use super::catalog::Catalog;
use super::event::{CreditHold, Event, EventKind, GrantSource, Granted, Reserved};
use super::ids::{IdSource, ModelKey};
use super::matcher::{self, Available, Reason};
use super::name::Name;
use super::notice::{BalancesBefore, Notice, NoticeData, NoticeType, notices_for};
use super::time::{MS_PER_DAY, Ts};
use super::user::{
    Applied, BalanceStatus, Reservation, ReservationStatus, SubscriptionStatus, UserState,
};
use std::sync::Arc;

/// What a decision may need that has left memory: reservations that ended and the idempotency
/// keys of their reserves. The actors read it from the history on disk; tests keep it in a map.
pub trait Past {
    /// The reservation `id` as it ended, if it ended.
    fn ended(&self, id: &str) -> Option<Reservation>;
    /// The reservation made by a reserve with this `Idempotency-Key` after `since`, if it
    /// ended.
    fn by_request_key(&self, key: &str, since: Ts) -> Option<Name>;
}

/// The past as a decision within [`step`] sees it: what the step's own catch-up just moved out of
/// memory (a reservation that expired a moment ago, its request key), then the caller's past.
struct WithChanges<'a, P: Past> {
    applied: &'a [Applied],
    past: &'a P,
}

impl<P: Past> Past for WithChanges<'_, P> {
    fn ended(&self, id: &str) -> Option<Reservation> {
        match self.applied.iter().rev().find_map(|a| a.ended(id)) {
            Some(r) => Some(r.clone()),
            None => self.past.ended(id),
        }
    }

    fn by_request_key(&self, key: &str, since: Ts) -> Option<Name> {
        match self
            .applied
            .iter()
            .rev()
            .find_map(|a| a.reserved_with_key(key, since))
        {
            Some(id) => Some(id.clone()),
            None => self.past.by_request_key(key, since),
        }
    }
}

/// A past with nothing in it: for callers that only replay or only read memory.
pub struct NoPast;

impl Past for NoPast {
    fn ended(&self, _: &str) -> Option<Reservation> {
        None
    }
    fn by_request_key(&self, _: &str, _: Ts) -> Option<Name> {
        None
    }
}

/// How long a reserve's idempotency key finds its reservation again, as API.md keeps answers.
pub const REQUEST_KEY_TTL_MS: i64 = MS_PER_DAY;

/// A request that changes a user's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Hold `amount` of `model`; with `commit`, keep it at once (consume).
    Reserve {
        model: ModelKey,
        amount: u64,
        ttl_ms: i64,
        metadata: Option<String>,
        request_key: Option<String>,
        commit: bool,
    },
    Commit {
        reservation_id: Name,
        amount: Option<u64>,
        response: Option<String>,
    },
    Release {
        reservation_id: Name,
        error_code: Option<String>,
    },
    Grant {
        pack_id: Name,
        external_ref: Name,
        source: GrantSource,
        notes: Option<String>,
        expires_at: Option<Ts>,
        payment_intent: Option<String>,
        /// The app's `expiring_notice_days`: `credits.expiring` fires this long before expiry.
        expiring_notice_days: u32,
    },
    Revoke {
        balance_id: Name,
        reason: Option<String>,
    },
    Subscribe {
        plan_id: Name,
    },
    Cancel,
}

/// What a command did, for the answer; the details are read from the state after `apply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The reservation that was made (or found again by its request key).
    Reservation(Name),
    Denied {
        reasons: Vec<Reason>,
        available: Available,
    },
    Granted {
        created: bool,
        balance_ids: Vec<Name>,
    },
    Balance(Name),
    Subscription,
}

/// An expected refusal: the request is wrong for the current state. Nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no plan with id '{0}'")]
    PlanNotFound(String),
    #[error("no credit pack with id '{0}'")]
    PackNotFound(String),
    #[error("no reservation with id '{0}'")]
    ReservationNotFound(String),
    #[error("no balance with id '{0}'")]
    BalanceNotFound(String),
    #[error("reservation '{id}' is {status}, not pending")]
    ReservationNotPending { id: String, status: &'static str },
    #[error("the commit amount {asked} is above the reserved amount {reserved}")]
    CommitAboveReserved { asked: u64, reserved: u64 },
    #[error("expiresAt must be in the future")]
    ExpiresAtNotInFuture,
    #[error("this user never had a subscription")]
    NoSubscription,
    #[error("no ledger entry with id '{0}' for this user")]
    UnknownCursor(String),
    #[error("the test clock cannot move that far")]
    ClockOverflow,
    #[error("this user already holds {max} pending reservations; commit or release some first")]
    TooManyOpenReservations { max: usize },
    #[error("this user already has the most balances one user may have ({max})")]
    TooManyBalances { max: usize },
}

pub struct Decision {
    pub events: Vec<Event>,
    pub outcome: Outcome,
}

/// Builds events stamped with `now` and fresh ledger ids.
struct Stamp<'a, I: IdSource> {
    now: Ts,
    ids: &'a mut I,
    events: Vec<Event>,
}

impl<I: IdSource> Stamp<'_, I> {
    fn push(&mut self, kind: EventKind) {
        let id = self.ids.next_id("le");
        self.events.push(Event {
            id,
            at: self.now,
            kind,
        });
    }

    /// An outgoing event: its journal event's id is the event id of API.md (`evt_…`).
    fn push_notice(&mut self, notice: Notice) {
        let id = self.ids.next_id("evt");
        self.events.push(Event {
            id,
            at: self.now,
            kind: EventKind::Noticed(Box::new(notice)),
        });
    }
}

pub fn decide(
    state: &UserState,
    past: &impl Past,
    catalog: &Catalog,
    command: Command,
    now: Ts,
    ids: &mut impl IdSource,
) -> Result<Decision, Rejection> {
    let mut out = Stamp {
        now,
        ids,
        events: Vec::new(),
    };
    let outcome = match command {
        Command::Reserve {
            model,
            amount,
            ttl_ms,
            metadata,
            request_key,
            commit,
        } => {
            // A pending reservation's key is in memory; an ended one's is in the past.
            let since = now.plus_ms(-REQUEST_KEY_TTL_MS);
            let earlier = request_key.as_ref().and_then(|k| {
                state
                    .request_keys
                    .get(k)
                    .cloned()
                    .or_else(|| past.by_request_key(k, since))
            });
            if let Some(id) = earlier {
                return Ok(Decision {
                    events: vec![],
                    outcome: Outcome::Reservation(id),
                });
            }
            let found = matcher::find(state, catalog, &model, amount, now);
            match found.result {
                Err(reasons) => Outcome::Denied {
                    reasons,
                    available: found.available,
                },
                Ok(allocation) => {
                    let reservation_id = out.ids.next_id("res");
                    let plan_amount = allocation.plan.as_ref().map_or(0, |p| p.amount);
                    let credits = allocation.credits.clone();
                    out.push(EventKind::UsageReserved(Reserved {
                        reservation_id: reservation_id.clone(),
                        model,
                        amount,
                        plan: allocation.plan,
                        credits: allocation.credits,
                        expires_at: now.plus_ms(ttl_ms),
                        metadata,
                        request_key,
                    }));
                    if commit {
                        out.push(EventKind::UsageCommitted {
                            reservation_id: reservation_id.clone(),
                            amount,
                            plan_amount,
                            credits,
                            response: None,
                        });
                    }
                    Outcome::Reservation(reservation_id)
                }
            }
        }
        Command::Commit {
            reservation_id,
            amount,
            response,
        } => {
            let res = reservation(state, past, &reservation_id)?;
            let res = res.as_ref();
            let asked = amount.unwrap_or(res.amount);
            if res.status == ReservationStatus::Committed && res.committed_amount == Some(asked) {
                return Ok(Decision {
                    events: vec![],
                    outcome: Outcome::Reservation(reservation_id),
                });
            }
            pending(res)?;
            if asked > res.amount {
                return Err(Rejection::CommitAboveReserved {
                    asked,
                    reserved: res.amount,
                });
            }
            let (plan_amount, credits) = split_commit(res, asked);
            out.push(EventKind::UsageCommitted {
                reservation_id: reservation_id.clone(),
                amount: asked,
                plan_amount,
                credits: credits.clone(),
                response,
            });
            write_offs(state, res, &credits, &mut out);
            Outcome::Reservation(reservation_id)
        }
        Command::Release {
            reservation_id,
            error_code,
        } => {
            let res = reservation(state, past, &reservation_id)?;
            let res = res.as_ref();
            if res.status == ReservationStatus::Released {
                return Ok(Decision {
                    events: vec![],
                    outcome: Outcome::Reservation(reservation_id),
                });
            }
            pending(res)?;
            out.push(EventKind::UsageReleased {
                reservation_id: reservation_id.clone(),
                error_code,
            });
            write_offs(state, res, &[], &mut out);
            Outcome::Reservation(reservation_id)
        }
        Command::Grant {
            pack_id,
            external_ref,
            source,
            notes,
            expires_at,
            payment_intent,
            expiring_notice_days,
        } => {
            if let Some(ids) = state.grants.get(&(pack_id.clone(), external_ref.clone())) {
                let outcome = Outcome::Granted {
                    created: false,
                    balance_ids: ids.clone(),
                };
                return Ok(Decision {
                    events: vec![],
                    outcome,
                });
            }
            let pack = catalog
                .packs
                .get(&pack_id)
                .ok_or_else(|| Rejection::PackNotFound(pack_id.to_string()))?;
            if expires_at.is_some_and(|e| e <= now) {
                return Err(Rejection::ExpiresAtNotInFuture);
            }
            let expires_at = expires_at.or_else(|| {
                pack.expires_in_days
                    .map(|days| now.plus_ms(i64::from(days) * MS_PER_DAY))
            });
            let expiring_notice_at =
                expires_at.map(|e| e.plus_ms(-i64::from(expiring_notice_days) * MS_PER_DAY));
            let mut balance_ids = Vec::with_capacity(pack.items.len());
            for item in &pack.items {
                let balance_id = out.ids.next_id("bal");
                balance_ids.push(balance_id.clone());
                out.push(EventKind::CreditsGranted(Granted {
                    balance_id,
                    pack_id: pack.id.clone(),
                    pack_item_id: item.id.clone(),
                    pattern: item.pattern.clone(),
                    unit: item.unit.clone(),
                    amount: item.amount,
                    source,
                    external_ref: external_ref.clone(),
                    notes: notes.clone(),
                    expires_at,
                    payment_intent: payment_intent.clone(),
                    low_balance_threshold: item.low_balance_threshold,
                    expiring_notice_at,
                }));
            }
            Outcome::Granted {
                created: true,
                balance_ids,
            }
        }
        Command::Revoke { balance_id, reason } => {
            let b = state
                .balance(&balance_id)
                .ok_or_else(|| Rejection::BalanceNotFound(balance_id.to_string()))?;
            // Revoking a dead balance changes nothing: there is nothing left to take.
            if b.status == BalanceStatus::Active {
                out.push(EventKind::CreditsRevoked {
                    balance_id: balance_id.clone(),
                    amount: b.remaining,
                    reason,
                    reservation_id: None,
                });
            }
            Outcome::Balance(balance_id)
        }
        Command::Subscribe { plan_id } => {
            if !catalog.plans.contains_key(&plan_id) {
                return Err(Rejection::PlanNotFound(plan_id.into()));
            }
            let unchanged = state
                .subscription
                .as_ref()
                .is_some_and(|s| s.status == SubscriptionStatus::Active && s.plan_id == plan_id);
            if !unchanged {
                out.push(EventKind::SubscriptionUpdated {
                    plan_id,
                    period_start: now,
                });
            }
            Outcome::Subscription
        }
        Command::Cancel => {
            let s = state
                .subscription
                .as_ref()
                .ok_or(Rejection::NoSubscription)?;
            if s.status == SubscriptionStatus::Active {
                out.push(EventKind::SubscriptionCanceled {
                    plan_id: s.plan_id.clone(),
                });
            }
            Outcome::Subscription
        }
    };
    Ok(Decision {
        events: out.events,
        outcome,
    })
}

/// The next deadline that has passed at `now`, as the events that carry it out: a balance that
/// expires, a pending reservation that expires, or a balance whose `credits.expiring` is due. The
/// caller applies them and asks again until nothing is due, so that each step sees the effect of
/// the one before.
pub fn next_due(state: &UserState, now: Ts, ids: &mut impl IdSource) -> Vec<Event> {
    let mut out = Stamp {
        now,
        ids,
        events: Vec::new(),
    };
    let Some((at, due)) = earliest_deadline(state).filter(|(at, _)| *at <= now) else {
        return out.events;
    };
    match due {
        Due::ExpiringNotice(index) => {
            let mut balance = state.balances[index].clone();
            balance.expiring_notice_at = None;
            let notice = Notice {
                kind: NoticeType::CreditsExpiring,
                data: NoticeData::Balance(balance),
            };
            out.push_notice(notice);
        }
        Due::Expiry(index) => {
            let b = &state.balances[index];
            out.push(EventKind::CreditsExpired {
                balance_id: b.id.clone(),
                amount: b.remaining,
                reservation_id: None,
            });
        }
        Due::Reservation(id) => {
            let res = &state.reservations[id.as_str()];
            out.push(EventKind::UsageExpired {
                reservation_id: id.clone(),
            });
            write_offs(state, res, &[], &mut out);
        }
    }
    debug_assert!(at <= now);
    out.events
}

/// What a user's earliest deadline is about.
enum Due<'a> {
    /// A balance's `credits.expiring` notice (by index).
    ExpiringNotice(usize),
    /// A balance's expiry (by index).
    Expiry(usize),
    Reservation(&'a Name),
}

/// The user's earliest deadline, passed or not. At equal times a notice comes before its expiry,
/// and a balance before a reservation.
fn earliest_deadline(state: &UserState) -> Option<(Ts, Due<'_>)> {
    let active = state
        .balances
        .iter()
        .enumerate()
        .filter(|(_, b)| b.status == BalanceStatus::Active);
    let notices = active.clone().filter_map(|(i, b)| {
        b.expiring_notice_at
            .map(|at| (at, 0, Due::ExpiringNotice(i)))
    });
    let expiries = active.filter_map(|(i, b)| b.expires_at.map(|at| (at, 1, Due::Expiry(i))));
    let reservation = state
        .pending
        .first()
        .map(|(at, id)| (*at, 2, Due::Reservation(id)));
    notices
        .chain(expiries)
        .chain(reservation)
        .min_by_key(|(at, rank, _)| (*at, *rank))
        .map(|(at, _, due)| (at, due))
}

/// The earliest deadline still ahead, for a timer.
pub fn next_deadline(state: &UserState) -> Option<Ts> {
    earliest_deadline(state).map(|(at, _)| at)
}

/// A reservation from memory (pending, or ended with its line still in memory) or from the past.
fn reservation<'a>(
    state: &'a UserState,
    past: &impl Past,
    id: &str,
) -> Result<std::borrow::Cow<'a, Reservation>, Rejection> {
    use std::borrow::Cow;
    match state.reservation(id) {
        Some(r) => Ok(Cow::Borrowed(r)),
        None => past
            .ended(id)
            .map(Cow::Owned)
            .ok_or_else(|| Rejection::ReservationNotFound(id.to_owned())),
    }
}

fn pending(res: &Reservation) -> Result<(), Rejection> {
    if res.status == ReservationStatus::Pending {
        Ok(())
    } else {
        Err(Rejection::ReservationNotPending {
            id: res.id.to_string(),
            status: res.status.as_str(),
        })
    }
}

/// Keeps `amount` from the reservation's sources in allocation order, plan first.
fn split_commit(res: &Reservation, amount: u64) -> (u64, Vec<CreditHold>) {
    let plan_amount = res.plan_amount().min(amount);
    let mut left = amount - plan_amount;
    let mut credits = Vec::new();
    for hold in &res.credits {
        if left == 0 {
            break;
        }
        let take = left.min(hold.amount);
        credits.push(CreditHold {
            balance_id: hold.balance_id.clone(),
            amount: take,
        });
        left -= take;
    }
    (plan_amount, credits)
}

/// Ledger entries for units of `res` that go back to a revoked or expired balance.
fn write_offs<I: IdSource>(
    state: &UserState,
    res: &Reservation,
    committed: &[CreditHold],
    out: &mut Stamp<'_, I>,
) {
    for hold in &res.credits {
        let kept = committed
            .iter()
            .find(|c| c.balance_id == hold.balance_id)
            .map_or(0, |c| c.amount);
        let back = hold.amount - kept;
        let Some(b) = state.balance(&hold.balance_id) else {
            continue;
        };
        if back == 0 {
            continue;
        }
        let balance_id = b.id.clone();
        let reservation_id = Some(res.id.clone());
        match b.status {
            BalanceStatus::Active => {}
            BalanceStatus::Revoked => out.push(EventKind::CreditsRevoked {
                balance_id,
                amount: back,
                reason: Some("units returned to a revoked balance".into()),
                reservation_id,
            }),
            BalanceStatus::Expired => out.push(EventKind::CreditsExpired {
                balance_id,
                amount: back,
                reservation_id,
            }),
        }
    }
}

/// What applying a list of events did: the events, oldest first, and what left memory with them.
#[derive(Debug, Default)]
pub struct Changes {
    pub events: Vec<Arc<Event>>,
    pub applied: Vec<Applied>,
    before: BalancesBefore,
}

impl Changes {
    pub fn new(events: Vec<Arc<Event>>, applied: Vec<Applied>) -> Changes {
        Changes {
            events,
            applied,
            before: BalancesBefore::default(),
        }
    }

    fn apply(&mut self, state: &mut UserState, event: Event) {
        self.before.note(state, &event);
        // One copy of the event, shared by the ledger line and the journal record.
        let event = Arc::new(event);
        let applied = state.apply(&event);
        if applied != Applied::default() {
            self.applied.push(applied);
        }
        self.events.push(event);
    }

    /// Decides and applies the notices the events so far call for.
    fn notify(
        &mut self,
        state: &mut UserState,
        catalog: Option<&Catalog>,
        now: Ts,
        ids: &mut impl IdSource,
    ) {
        let notices = notices_for(
            state,
            &self.events,
            &self.applied,
            &self.before,
            catalog,
            now,
        );
        let mut out = Stamp {
            now,
            ids,
            events: Vec::new(),
        };
        for notice in notices {
            out.push_notice(notice);
        }
        for event in out.events {
            self.apply(state, event);
        }
    }
}

/// Applies every deadline that has passed at `now`, with the notices they call for.
pub fn catch_up(state: &mut UserState, now: Ts, ids: &mut impl IdSource) -> Changes {
    let mut changes = Changes::default();
    catch_up_into(state, now, ids, &mut changes);
    changes.notify(state, None, now, ids);
    changes
}

fn catch_up_into(state: &mut UserState, now: Ts, ids: &mut impl IdSource, out: &mut Changes) {
    loop {
        let due = next_due(state, now, ids);
        if due.is_empty() {
            return;
        }
        for event in due {
            out.apply(state, event);
        }
    }
}

/// What one command did to a user: the events applied (deadlines that had passed first, then the
/// command's own), what left memory with them, and the command's outcome or refusal.
pub struct Step {
    pub events: Vec<Arc<Event>>,
    pub applied: Vec<Applied>,
    pub result: Result<Outcome, Rejection>,
}

/// Brings the user up to `now`, decides the command and applies its events: the one entry point of
/// live operation. A refused command still returns the deadline events, which must be journaled.
pub fn step(
    state: &mut UserState,
    past: &impl Past,
    catalog: &Catalog,
    command: Command,
    now: Ts,
    ids: &mut impl IdSource,
) -> Step {
    step_admitted(state, past, catalog, command, now, ids, |_, _| Ok(()))
}

/// [`step`] with an admission check run once the deadlines are applied (so that what expired
/// does not count against a bound) and before the command is decided.
pub fn step_admitted(
    state: &mut UserState,
    past: &impl Past,
    catalog: &Catalog,
    command: Command,
    now: Ts,
    ids: &mut impl IdSource,
    admit: impl FnOnce(&UserState, &Command) -> Result<(), Rejection>,
) -> Step {
    let mut changes = Changes::default();
    catch_up_into(state, now, ids, &mut changes);
    let past = WithChanges {
        applied: &changes.applied,
        past,
    };
    let result =
        admit(state, &command).and_then(|()| decide(state, &past, catalog, command, now, ids));
    let result = result.map(|decision| {
        for event in decision.events {
            changes.apply(state, event);
        }
        decision.outcome
    });
    changes.notify(state, Some(catalog), now, ids);
    Step {
        events: changes.events,
        applied: changes.applied,
        result,
    }
}
