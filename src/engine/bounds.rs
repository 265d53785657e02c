//! Per-user bounds: what one user may hold in memory. Reaching one is a refusal the caller can
//! read, never a slow growth (TIGER_STYLE: put a limit on everything).

use super::decide::{Command, Rejection};
use super::user::UserState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Pending reservations one user may hold at once.
    pub open_reservations_per_user_max: usize,
    /// Balances (of any status) one user may have; each grant adds one per pack item.
    pub balances_per_user_max: usize,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            open_reservations_per_user_max: 10_000,
            balances_per_user_max: 10_000,
        }
    }
}

/// Refuses a command that would take a user past a bound. A command that only finds an earlier
/// result again (a keyed reserve retried, a grant repeated) is let through: it adds nothing.
pub fn admit(
    state: &UserState,
    command: &Command,
    new_balances: usize,
    bounds: &Bounds,
) -> Result<(), Rejection> {
    match command {
        Command::Reserve {
            commit: false,
            request_key,
            ..
        } => {
            let known = request_key
                .as_ref()
                .is_some_and(|k| state.request_keys.contains_key(k));
            let max = bounds.open_reservations_per_user_max;
            if !known && state.reservations.len() >= max {
                return Err(Rejection::TooManyOpenReservations { max });
            }
        }
        Command::Grant {
            pack_id,
            external_ref,
            ..
        } => {
            let repeat = state
                .grants
                .contains_key(&(pack_id.clone(), external_ref.clone()));
            let max = bounds.balances_per_user_max;
            if !repeat && state.balances.len().saturating_add(new_balances) > max {
                return Err(Rejection::TooManyBalances { max });
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::GrantSource;
    use crate::engine::ids::ModelKey;

    fn reserve(key: Option<&str>, commit: bool) -> Command {
        Command::Reserve {
            model: ModelKey::parse("image.a").unwrap(),
            amount: 1,
            ttl_ms: 1,
            metadata: None,
            request_key: key.map(Into::into),
            commit,
        }
    }

    #[test]
    fn each_bound_refuses_only_what_would_pass_it() {
        let bounds = Bounds {
            open_reservations_per_user_max: 0,
            balances_per_user_max: 1,
        };
        let mut state = UserState::default();
        assert_eq!(
            admit(&state, &reserve(None, false), 0, &bounds),
            Err(Rejection::TooManyOpenReservations { max: 0 })
        );
        assert_eq!(
            admit(&state, &reserve(None, true), 0, &bounds),
            Ok(()),
            "consume holds nothing"
        );
        state.request_keys.insert("k".into(), "res_1".into());
        assert_eq!(
            admit(&state, &reserve(Some("k"), false), 0, &bounds),
            Ok(()),
            "a retry"
        );
        let grant = Command::Grant {
            pack_id: "p".into(),
            external_ref: "x".into(),
            source: GrantSource::Grant,
            notes: None,
            expires_at: None,
            payment_intent: None,
            expiring_notice_days: 3,
        };
        assert_eq!(admit(&state, &grant, 1, &bounds), Ok(()));
        assert_eq!(
            admit(&state, &grant, 2, &bounds),
            Err(Rejection::TooManyBalances { max: 1 })
        );
        state.grants.insert(("p".into(), "x".into()), vec![]);
        assert_eq!(
            admit(&state, &grant, 2, &bounds),
            Ok(()),
            "a repeated grant adds nothing"
        );
    }
}
