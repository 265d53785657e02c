//! Invariant checks over a user's state, for `vevee verify` and the tests: I1, I3 and I9 of
//! DESIGN.md, each as a value naming what is wrong rather than a panic.

use super::event::{Event, EventKind};
use super::user::{ReservationStatus, UserState};
use rustc_hash::FxHashMap;

/// Per balance, as rebuilt from the ledger alone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct FromLedger {
    granted: u64,
    committed: u64,
    revoked: u64,
    expired: u64,
}

/// The first broken invariant of a user, in words; `Ok` if none. `ledger` is every event of the
/// user, in any order (the tail in memory and the pages on disk).
pub fn audit<'a>(
    state: &'a UserState,
    ledger: impl IntoIterator<Item = &'a Event>,
) -> Result<(), String> {
    for b in &state.balances {
        if !b.is_balanced() {
            return Err(format!(
                "I1: balance {} has granted {} but remaining {} + reserved {} + committed {} + \
                 revoked {} + expired {}",
                b.id, b.granted, b.remaining, b.reserved, b.committed, b.revoked, b.expired
            ));
        }
    }

    let mut held: FxHashMap<&str, u64> = FxHashMap::default();
    let mut counter_held: FxHashMap<(&str, &str, i64), u64> = FxHashMap::default();
    for r in state
        .reservations
        .values()
        .filter(|r| r.status == ReservationStatus::Pending)
    {
        let credits: u64 = r.credits.iter().map(|c| c.amount).sum();
        if r.plan_amount() + credits != r.amount {
            return Err(format!(
                "I3: reservation {} holds plan {} + credits {} for an amount of {}",
                r.id,
                r.plan_amount(),
                credits,
                r.amount
            ));
        }
        for c in &r.credits {
            *held.entry(&c.balance_id).or_default() += c.amount;
        }
        if let Some(plan) = &r.plan {
            for l in &plan.limits {
                *counter_held
                    .entry((&plan.plan_id, &l.limit_id, l.window.0))
                    .or_default() += plan.amount;
            }
        }
    }
    for b in &state.balances {
        let h = held.get(b.id.as_str()).copied().unwrap_or(0);
        if h != b.reserved {
            return Err(format!(
                "I3: balance {} shows {} reserved, reservations hold {h}",
                b.id, b.reserved
            ));
        }
    }
    for ((plan, limit), c) in &state.counters {
        let h = counter_held
            .get(&(plan.as_str(), limit.as_str(), c.window.0))
            .copied()
            .unwrap_or(0);
        if h != c.reserved {
            return Err(format!(
                "I3: counter {plan}/{limit} shows {} reserved, reservations hold {h}",
                c.reserved
            ));
        }
    }

    let mut rebuilt: FxHashMap<&str, FromLedger> = FxHashMap::default();
    for event in ledger {
        match &event.kind {
            EventKind::CreditsGranted(g) => {
                rebuilt.entry(&g.balance_id).or_default().granted += g.amount
            }
            EventKind::CreditsRevoked {
                balance_id, amount, ..
            } => {
                rebuilt.entry(balance_id).or_default().revoked += amount;
            }
            EventKind::CreditsExpired {
                balance_id, amount, ..
            } => {
                rebuilt.entry(balance_id).or_default().expired += amount;
            }
            EventKind::UsageCommitted { credits, .. } => {
                for c in credits {
                    rebuilt.entry(&c.balance_id).or_default().committed += c.amount;
                }
            }
            _ => {}
        }
    }
    for b in &state.balances {
        let l = rebuilt.get(b.id.as_str()).copied().unwrap_or_default();
        let reserved = held.get(b.id.as_str()).copied().unwrap_or(0);
        let remaining = l
            .granted
            .checked_sub(l.committed + l.revoked + l.expired + reserved)
            .ok_or_else(|| {
                format!(
                    "I9: the ledger takes more from balance {} than it grants",
                    b.id
                )
            })?;
        if remaining != b.remaining {
            return Err(format!(
                "I9: the ledger gives balance {} a remaining of {remaining}, the state {}",
                b.id, b.remaining
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::catalog::{Catalog, CatalogChange, Pack, PackItem, Price};
    use crate::engine::event::GrantSource;
    use crate::engine::ids::{CountingIds, ModelKey, Pattern};
    use crate::engine::{Command, NoPast, Ts, step};
    use std::sync::Arc;

    fn user_with_a_hold() -> (UserState, Vec<Event>) {
        let mut catalog = Catalog::default();
        catalog.apply(&CatalogChange::PackPut(Pack {
            id: "p".into(),
            name: "P".into(),
            price: Price {
                amount: 0,
                currency: "usd".into(),
                interval: None,
            },
            expires_in_days: None,
            stripe_price_id: None,
            archived: false,
            items: vec![PackItem {
                id: "i".into(),
                pattern: Pattern::parse("image.*").unwrap(),
                amount: 10,
                unit: "count".into(),
                low_balance_threshold: None,
            }],
            created_at: Ts(0),
            updated_at: Ts(0),
        }));
        let (mut state, mut ids, now) = (UserState::default(), CountingIds::default(), Ts(1_000));
        let grant = Command::Grant {
            pack_id: "p".into(),
            external_ref: "x".into(),
            source: GrantSource::Grant,
            notes: None,
            expires_at: None,
            payment_intent: None,
            expiring_notice_days: 3,
        };
        let mut ledger = Vec::new();
        let granted = step(&mut state, &NoPast, &catalog, grant, now, &mut ids);
        granted.result.unwrap();
        ledger.extend(granted.events.into_iter().map(Arc::unwrap_or_clone));
        let reserve = Command::Reserve {
            model: ModelKey::parse("image.a").unwrap(),
            amount: 3,
            ttl_ms: 60_000,
            metadata: None,
            request_key: None,
            commit: false,
        };
        let reserved = step(&mut state, &NoPast, &catalog, reserve, now, &mut ids);
        reserved.result.unwrap();
        ledger.extend(reserved.events.into_iter().map(Arc::unwrap_or_clone));
        (state, ledger)
    }

    #[test]
    fn a_consistent_user_passes_and_each_kind_of_damage_is_named() {
        let (healthy, ledger) = user_with_a_hold();
        assert_eq!(audit(&healthy, &ledger), Ok(()));

        let mut unbalanced = healthy.clone();
        unbalanced.balances[0].remaining += 1;
        assert!(audit(&unbalanced, &ledger).unwrap_err().starts_with("I1"));

        let mut unheld = healthy.clone();
        unheld.balances[0].reserved -= 1;
        unheld.balances[0].remaining += 1;
        assert!(audit(&unheld, &ledger).unwrap_err().starts_with("I3"));

        let mut off_ledger = healthy;
        off_ledger.balances[0].remaining -= 1;
        off_ledger.balances[0].committed += 1;
        assert!(audit(&off_ledger, &ledger).unwrap_err().starts_with("I9"));
    }
}
