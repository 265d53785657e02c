//! Notices: what the app is told about a user ("Webhooks out" of API.md).
//!
//! A notice is decided with the change that causes it and journaled as a user event that has no
//! ledger line ([`super::event::EventKind::Noticed`]), so an acknowledged change never loses its
//! notice and replay hands over the same notices again. Each carries its object as it was at that
//! moment; delivery and `GET /v1/events` render it, they do not read the state again.
//!
//! Which notices fire when is decided here, from a step's events and the state before and after
//! them: pure functions, no I/O.

use super::catalog::Catalog;
use super::event::{Event, EventKind};
use super::matcher::{counter_in, limit_window};
use super::name::Name;
use super::read::CounterView;
use super::time::{Period, Ts};
use super::user::{Applied, Balance, BalanceStatus, Reservation, Subscription, UserState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NoticeType {
    CreditsGranted,
    CreditsRevoked,
    CreditsExpired,
    CreditsLow,
    CreditsDepleted,
    CreditsExpiring,
    PlanLimitReached,
    SubscriptionUpdated,
    SubscriptionCanceled,
    ReservationExpired,
}

impl NoticeType {
    pub const ALL: [NoticeType; 10] = [
        NoticeType::CreditsGranted,
        NoticeType::CreditsRevoked,
        NoticeType::CreditsExpired,
        NoticeType::CreditsLow,
        NoticeType::CreditsDepleted,
        NoticeType::CreditsExpiring,
        NoticeType::PlanLimitReached,
        NoticeType::SubscriptionUpdated,
        NoticeType::SubscriptionCanceled,
        NoticeType::ReservationExpired,
    ];

    /// The event type of API.md.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeType::CreditsGranted => "credits.granted",
            NoticeType::CreditsRevoked => "credits.revoked",
            NoticeType::CreditsExpired => "credits.expired",
            NoticeType::CreditsLow => "credits.low",
            NoticeType::CreditsDepleted => "credits.depleted",
            NoticeType::CreditsExpiring => "credits.expiring",
            NoticeType::PlanLimitReached => "plan.limit_reached",
            NoticeType::SubscriptionUpdated => "subscription.updated",
            NoticeType::SubscriptionCanceled => "subscription.canceled",
            NoticeType::ReservationExpired => "reservation.expired",
        }
    }

    pub fn parse(text: &str) -> Option<NoticeType> {
        NoticeType::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// The object an event carries, as it was when the event fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeData {
    Balance(Balance),
    Counter(CounterView),
    Subscription(Subscription),
    Reservation(Reservation),
}

/// One outgoing event. Its id is the id of the journal event that carries it (`evt_…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeType,
    pub data: NoticeData,
}

/// A notice with its id and time, as the history store keeps it and delivery sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentNotice {
    pub id: Name,
    pub at: Ts,
    pub notice: Notice,
}

impl SentNotice {
    /// The notice an applied journal event carries, if it is one.
    pub fn of(event: &Event) -> Option<SentNotice> {
        match &event.kind {
            EventKind::Noticed(notice) => Some(SentNotice {
                id: event.id.clone(),
                at: event.at,
                notice: (**notice).clone(),
            }),
            _ => None,
        }
    }
}

/// `remaining` of the balances a step is about to lower, as they were before it: `credits.low` and
/// `credits.depleted` fire on the crossing, not on every request below the line.
#[derive(Debug, Default)]
pub struct BalancesBefore(Vec<(usize, u64)>);

impl BalancesBefore {
    /// Notes the balances `event` lowers, before it is applied. Only holds lower an active
    /// balance's `remaining` (a revoke or an expiry ends the balance instead).
    pub fn note(&mut self, state: &UserState, event: &Event) {
        let EventKind::UsageReserved(r) = &event.kind else {
            return;
        };
        for hold in &r.credits {
            let Some(&index) = state.balance_index.get(&hold.balance_id) else {
                continue;
            };
            if !self.0.iter().any(|(i, _)| *i == index) {
                self.0.push((index, state.balances[index].remaining));
            }
        }
    }
}

/// The notices a step's events call for, given the state after them: echoes of ledger entries,
/// crossings of low-balance thresholds and of zero, and counters that ran out. `catalog` is
/// `None` for deadline catch-up, which only raises what is left.
pub fn notices_for(
    state: &UserState,
    events: &[Arc<Event>],
    applied: &[Applied],
    before: &BalancesBefore,
    catalog: Option<&Catalog>,
    now: Ts,
) -> Vec<Notice> {
    let mut out = Vec::new();
    let balance = |id: &str| state.balance(id).cloned().map(NoticeData::Balance);
    for event in events {
        let (kind, data) = match &event.kind {
            EventKind::CreditsGranted(g) => (NoticeType::CreditsGranted, balance(&g.balance_id)),
            EventKind::CreditsRevoked { balance_id, .. } => {
                (NoticeType::CreditsRevoked, balance(balance_id))
            }
            EventKind::CreditsExpired { balance_id, .. } => {
                (NoticeType::CreditsExpired, balance(balance_id))
            }
            EventKind::SubscriptionUpdated { .. } => (
                NoticeType::SubscriptionUpdated,
                state.subscription.clone().map(NoticeData::Subscription),
            ),
            EventKind::SubscriptionCanceled { .. } => (
                NoticeType::SubscriptionCanceled,
                state.subscription.clone().map(NoticeData::Subscription),
            ),
            EventKind::UsageExpired { reservation_id } => {
                let ended = state
                    .reservation(reservation_id)
                    .or_else(|| applied.iter().find_map(|a| a.ended(reservation_id)));
                (
                    NoticeType::ReservationExpired,
                    ended.cloned().map(NoticeData::Reservation),
                )
            }
            EventKind::UsageReserved(_)
            | EventKind::UsageCommitted { .. }
            | EventKind::UsageReleased { .. }
            | EventKind::Noticed(_) => continue,
        };
        if let Some(data) = data {
            out.push(Notice { kind, data });
        }
    }
    crossings(state, before, &mut out);
    if let Some(catalog) = catalog {
        limits_reached(state, events, catalog, now, &mut out);
    }
    out
}

fn crossings(state: &UserState, before: &BalancesBefore, out: &mut Vec<Notice>) {
    for &(index, was) in &before.0 {
        let b = &state.balances[index];
        if b.status != BalanceStatus::Active || b.remaining >= was {
            continue;
        }
        if let Some(threshold) = b.low_balance_threshold {
            if was > threshold && b.remaining <= threshold {
                out.push(Notice {
                    kind: NoticeType::CreditsLow,
                    data: NoticeData::Balance(b.clone()),
                });
            }
        }
        if b.remaining == 0 {
            out.push(Notice {
                kind: NoticeType::CreditsDepleted,
                data: NoticeData::Balance(b.clone()),
            });
        }
    }
}

/// Counters of the plan that this step's hold left with nothing, once per window. A step makes
/// at most one hold (its command's), and a hold names each limit once.
fn limits_reached(
    state: &UserState,
    events: &[Arc<Event>],
    catalog: &Catalog,
    now: Ts,
    out: &mut Vec<Notice>,
) {
    for event in events {
        let EventKind::UsageReserved(r) = &event.kind else {
            continue;
        };
        let Some(hold) = &r.plan else { continue };
        let Some(plan) = catalog.plans.get(&hold.plan_id) else {
            continue;
        };
        for limit_hold in &hold.limits {
            let Some(limit) = plan.limits.iter().find(|l| l.id == limit_hold.limit_id) else {
                continue;
            };
            let (window, resets_at) = limit_window(state, limit, now);
            let counter = counter_in(state, &plan.id, limit, window);
            let taken = counter.used.saturating_add(counter.reserved);
            if counter.limit_reached_noticed || window != limit_hold.window || taken < limit.limit {
                continue;
            }
            out.push(Notice {
                kind: NoticeType::PlanLimitReached,
                data: NoticeData::Counter(CounterView {
                    plan_id: plan.id.clone(),
                    limit: limit.clone(),
                    used: counter.used,
                    reserved: counter.reserved,
                    remaining: 0,
                    period_start: (limit.period != Period::Lifetime).then_some(window),
                    resets_at,
                }),
            });
        }
    }
}
