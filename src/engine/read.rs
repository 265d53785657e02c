//! Read models: what a user's state looks like to a caller. Pure functions of the state.

use super::catalog::{Catalog, Limit};
use super::event::Event;
use super::ids::Pattern;
use super::matcher::{counter_in, limit_window};
use super::time::{Period, Ts};
use super::user::{Balance, BalanceStatus, Reservation, Subscription, UserState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterView {
    pub plan_id: String,
    pub limit: Limit,
    pub used: u64,
    pub reserved: u64,
    pub remaining: u64,
    pub period_start: Option<Ts>,
    pub resets_at: Option<Ts>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub subscription: Option<Subscription>,
    pub counters: Vec<CounterView>,
    pub credits: Vec<Balance>,
}

/// The current plan's counters and the active balances; with `filter`, only those whose patterns
/// overlap it.
pub fn usage(state: &UserState, catalog: &Catalog, filter: Option<&Pattern>, now: Ts) -> Usage {
    let overlaps = |p: &Pattern| filter.is_none_or(|f| f.overlaps(p));
    let plan = state
        .subscription
        .as_ref()
        .and_then(|s| s.active_plan())
        .and_then(|id| catalog.plans.get(id));
    let counters = plan
        .map(|plan| {
            plan.limits
                .iter()
                .filter(|l| l.patterns.iter().any(overlaps))
                .map(|limit| {
                    let (window, resets_at) = limit_window(state, limit, now);
                    let c = counter_in(state, &plan.id, limit, window);
                    CounterView {
                        plan_id: plan.id.clone(),
                        limit: limit.clone(),
                        used: c.used,
                        reserved: c.reserved,
                        remaining: limit
                            .limit
                            .saturating_sub(c.used.saturating_add(c.reserved)),
                        period_start: (limit.period != Period::Lifetime).then_some(window),
                        resets_at,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let credits = state
        .balances
        .iter()
        .filter(|b| b.status == BalanceStatus::Active && overlaps(&b.pattern))
        .cloned()
        .collect();
    Usage {
        subscription: state.subscription.clone(),
        counters,
        credits,
    }
}

/// A ledger entry with what it refers to, so that it reads on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    pub event: Event,
    /// The reservation of a `usage.*` entry or of a write-off.
    pub reservation: Option<Reservation>,
    /// The pack of the balance a `credits.*` entry is about.
    pub pack_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerPage {
    pub entries: Vec<LedgerLine>,
    pub has_more: bool,
}

/// Newest first, `limit` entries after the entry `starting_after`; `None` if that entry is unknown.
pub fn ledger(state: &UserState, limit: usize, starting_after: Option<&str>) -> Option<LedgerPage> {
    let end = match starting_after {
        None => state.ledger.len(),
        Some(id) => state.ledger.iter().rposition(|e| e.id == id)?,
    };
    let start = end.saturating_sub(limit);
    let entries = state.ledger[start..end]
        .iter()
        .rev()
        .map(|event| {
            let (reservation_id, balance_id) = event.kind.refers_to();
            LedgerLine {
                event: event.clone(),
                reservation: reservation_id
                    .and_then(|id| state.reservations.get(id))
                    .cloned(),
                pack_id: balance_id
                    .and_then(|id| state.balance(id))
                    .map(|b| b.pack_id.clone()),
            }
        })
        .collect();
    Some(LedgerPage {
        entries,
        has_more: start > 0,
    })
}
