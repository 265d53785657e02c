//! Read models: what a user's state looks like to a caller. Pure functions of the state.

use super::catalog::{Catalog, Limit};
use super::ids::Pattern;
use super::matcher::{counter_in, limit_window};
use super::name::Name;
use super::time::{Period, Ts};
use super::user::{Balance, BalanceStatus, Subscription, UserState};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CounterView {
    pub plan_id: Name,
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
