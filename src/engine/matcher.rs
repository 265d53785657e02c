//! The matcher: which sources pay for `amount` of `model`, in API.md's order. Pure and read-only.

use super::catalog::{Catalog, Limit, Plan};
use super::event::{CreditHold, LimitHold, PlanHold};
use super::ids::ModelKey;
use super::name::Name;
use super::time::{Ts, window_at};
use super::user::{BalanceStatus, Counter, UserState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoSubscription,
    CreditsExhausted,
    NotInPlan,
    PlanExhausted,
    PlanAndCreditsExhausted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoSubscription => "no_subscription",
            Reason::CreditsExhausted => "credits_exhausted",
            Reason::NotInPlan => "not_in_plan",
            Reason::PlanExhausted => "plan_exhausted",
            Reason::PlanAndCreditsExhausted => "plan_and_credits_exhausted",
        }
    }
}

/// What plan and credits could give now, whether or not it is enough.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Available {
    pub plan: u64,
    pub credits: u64,
}

/// The sources of an allowed request: the plan's part (charged to every covering limit), then
/// credits in matcher order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub plan: Option<PlanHold>,
    pub credits: Vec<CreditHold>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub result: Result<Allocation, Vec<Reason>>,
    pub available: Available,
}

/// How the user's current plan treats a model.
enum PlanCover<'a> {
    NoSubscription,
    NotInPlan,
    Covered {
        plan: &'a Plan,
        limits: Vec<LimitHold>,
        room: u64,
    },
}

/// The counter of a limit as seen in `window`: a counter last touched in an earlier window is empty.
pub fn counter_in(state: &UserState, plan_id: &Name, limit: &Limit, window: Ts) -> Counter {
    let key = (plan_id.clone(), limit.id.clone());
    match state.counters.get(&key) {
        Some(c) if c.window == window => *c,
        _ => Counter {
            window,
            ..Counter::default()
        },
    }
}

/// The current window of a limit for the user's subscription.
pub fn limit_window(state: &UserState, limit: &Limit, now: Ts) -> (Ts, Option<Ts>) {
    let anchor = state
        .subscription
        .as_ref()
        .map_or(now, |s| s.current_period_start);
    window_at(limit.period, anchor, now)
}

fn plan_cover<'a>(
    state: &UserState,
    catalog: &'a Catalog,
    model: &ModelKey,
    now: Ts,
) -> PlanCover<'a> {
    let Some(plan_id) = state.subscription.as_ref().and_then(|s| s.active_plan()) else {
        return PlanCover::NoSubscription;
    };
    let Some(plan) = catalog.plans.get(plan_id.as_str()) else {
        return PlanCover::NotInPlan;
    };
    let mut limits = Vec::new();
    let mut room = u64::MAX;
    for limit in plan.limits.iter().filter(|l| l.covers(model)) {
        let (window, _) = limit_window(state, limit, now);
        let c = counter_in(state, plan_id, limit, window);
        // A limit lowered below what was already used leaves no room rather than negative room.
        room = room.min(
            limit
                .limit
                .saturating_sub(c.used.saturating_add(c.reserved)),
        );
        limits.push(LimitHold {
            limit_id: limit.id.clone(),
            window,
        });
    }
    if limits.is_empty() {
        PlanCover::NotInPlan
    } else {
        PlanCover::Covered { plan, limits, room }
    }
}

/// Finds the sources for `amount` of `model` at `now`, or the reasons of a denial.
pub fn find(state: &UserState, catalog: &Catalog, model: &ModelKey, amount: u64, now: Ts) -> Match {
    let cover = plan_cover(state, catalog, model, now);
    let plan_room = match &cover {
        PlanCover::Covered { room, .. } => *room,
        _ => 0,
    };

    let mut candidates: Vec<_> = state
        .balances
        .iter()
        .filter(|b| {
            b.status == BalanceStatus::Active
                && b.remaining > 0
                && b.expires_at.is_none_or(|e| e > now)
                && b.pattern.covers(model)
        })
        .collect();
    candidates.sort_by_key(|b| {
        (
            b.pattern.specificity(),
            b.expires_at.is_none(),
            b.expires_at,
            b.created_at,
            &b.id,
        )
    });
    // Saturating: a sum past u64 only shows in `available`, which no allocation reads.
    let credit_room = candidates
        .iter()
        .fold(0u64, |sum, b| sum.saturating_add(b.remaining));
    let available = Available {
        plan: plan_room,
        credits: credit_room,
    };

    if plan_room.saturating_add(credit_room) < amount {
        let ever_had_credits = state.balances.iter().any(|b| b.pattern.covers(model));
        let reasons = match cover {
            PlanCover::NoSubscription => vec![Reason::NoSubscription, Reason::CreditsExhausted],
            PlanCover::NotInPlan if ever_had_credits => {
                vec![Reason::NotInPlan, Reason::CreditsExhausted]
            }
            PlanCover::NotInPlan => vec![Reason::NotInPlan],
            PlanCover::Covered { .. } if ever_had_credits => vec![Reason::PlanAndCreditsExhausted],
            PlanCover::Covered { .. } => vec![Reason::PlanExhausted],
        };
        return Match {
            result: Err(reasons),
            available,
        };
    }

    let plan_part = plan_room.min(amount);
    let plan = match cover {
        PlanCover::Covered { plan, limits, .. } if plan_part > 0 => Some(PlanHold {
            plan_id: plan.id.clone(),
            limits,
            amount: plan_part,
        }),
        _ => None,
    };
    let mut needed = amount - plan_part;
    let mut credits = Vec::new();
    for b in candidates {
        if needed == 0 {
            break;
        }
        let take = needed.min(b.remaining);
        credits.push(CreditHold {
            balance_id: b.id.clone(),
            amount: take,
        });
        needed -= take;
    }
    Match {
        result: Ok(Allocation { plan, credits }),
        available,
    }
}
