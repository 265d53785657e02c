//! Events: every change to a user's state, and at the same time the user's ledger.
//!
//! An event carries everything `apply` needs, so that replay does not depend on the catalog as it
//! is now (a pack edited since a grant does not change the balances it gave).

use super::ids::{ModelKey, Pattern};
use super::name::Name;
use super::notice::Notice;
use super::time::Ts;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `le_…`: the ledger entry id.
    pub id: Name,
    pub at: Ts,
    pub kind: EventKind,
}

/// Decodes an event straight into its `Arc`: serde's own `Arc` decoding builds a `Box` first and
/// copies it over, two allocations per event where recovery decodes millions.
pub fn deserialize_shared<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::sync::Arc<Event>, D::Error> {
    Event::deserialize(deserializer).map(std::sync::Arc::new)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantSource {
    Purchase,
    Grant,
    Adjustment,
}

impl GrantSource {
    pub fn parse(text: &str) -> Option<GrantSource> {
        Some(match text {
            "purchase" => GrantSource::Purchase,
            "grant" => GrantSource::Grant,
            "adjustment" => GrantSource::Adjustment,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GrantSource::Purchase => "purchase",
            GrantSource::Grant => "grant",
            GrantSource::Adjustment => "adjustment",
        }
    }
}

/// One balance created by a grant: one per pack item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub balance_id: Name,
    pub pack_id: Name,
    pub pack_item_id: Name,
    pub pattern: Pattern,
    pub unit: Name,
    pub amount: u64,
    pub source: GrantSource,
    pub external_ref: Name,
    pub notes: Option<String>,
    pub expires_at: Option<Ts>,
    /// Stripe's payment intent of the checkout that paid for it, so a refund can find it.
    pub payment_intent: Option<String>,
    /// The pack item's `lowBalanceThreshold` at the time of the grant.
    pub low_balance_threshold: Option<u64>,
    /// When `credits.expiring` fires: the app's notice days before `expires_at`.
    pub expiring_notice_at: Option<Ts>,
}

/// The units a reservation holds against every covering limit of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanHold {
    pub plan_id: Name,
    pub limits: Vec<LimitHold>,
    /// The plan's whole part, charged to each limit once.
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitHold {
    pub limit_id: Name,
    /// Start of the counter's window when the units were held; a release into a later window is
    /// dropped.
    pub window: Ts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditHold {
    pub balance_id: Name,
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    pub reservation_id: Name,
    pub model: ModelKey,
    pub amount: u64,
    pub plan: Option<PlanHold>,
    pub credits: Vec<CreditHold>,
    pub expires_at: Ts,
    /// The caller's metadata as JSON text.
    pub metadata: Option<String>,
    /// The `Idempotency-Key` of the request that made it, so a retry after a crash finds it.
    pub request_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    CreditsGranted(Granted),
    /// With a `reservation_id`, units that came back to a revoked balance and were written off.
    CreditsRevoked {
        balance_id: Name,
        amount: u64,
        reason: Option<String>,
        reservation_id: Option<Name>,
    },
    /// With a `reservation_id`, units that came back to an expired balance and were written off.
    CreditsExpired {
        balance_id: Name,
        amount: u64,
        reservation_id: Option<Name>,
    },
    UsageReserved(Reserved),
    /// `plan_amount` and `credits` are what was committed from each source; the rest of the
    /// reservation went back.
    UsageCommitted {
        reservation_id: Name,
        amount: u64,
        plan_amount: u64,
        credits: Vec<CreditHold>,
        response: Option<String>,
    },
    UsageReleased {
        reservation_id: Name,
        error_code: Option<String>,
    },
    UsageExpired {
        reservation_id: Name,
    },
    SubscriptionUpdated {
        plan_id: Name,
        period_start: Ts,
    },
    SubscriptionCanceled {
        plan_id: Name,
    },
    /// An outgoing event for the app. Not a ledger entry: it has no line.
    Noticed(Box<Notice>),
}

impl EventKind {
    /// The ledger entry type of API.md.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::CreditsGranted(_) => "credits.granted",
            EventKind::CreditsRevoked { .. } => "credits.revoked",
            EventKind::CreditsExpired { .. } => "credits.expired",
            EventKind::UsageReserved(_) => "usage.reserved",
            EventKind::UsageCommitted { .. } => "usage.committed",
            EventKind::UsageReleased { .. } => "usage.released",
            EventKind::UsageExpired { .. } => "usage.expired",
            EventKind::SubscriptionUpdated { .. } => "subscription.updated",
            EventKind::SubscriptionCanceled { .. } => "subscription.canceled",
            EventKind::Noticed(n) => n.kind.as_str(),
        }
    }

    /// The reservation and the balance an entry is about, where it names them.
    pub fn refers_to(&self) -> (Option<&str>, Option<&str>) {
        match self {
            EventKind::CreditsGranted(g) => (None, Some(&g.balance_id)),
            EventKind::CreditsRevoked {
                balance_id,
                reservation_id,
                ..
            }
            | EventKind::CreditsExpired {
                balance_id,
                reservation_id,
                ..
            } => (reservation_id.as_deref(), Some(balance_id)),
            EventKind::UsageReserved(r) => (Some(&r.reservation_id), None),
            EventKind::UsageCommitted { reservation_id, .. }
            | EventKind::UsageReleased { reservation_id, .. }
            | EventKind::UsageExpired { reservation_id } => (Some(reservation_id), None),
            EventKind::SubscriptionUpdated { .. }
            | EventKind::SubscriptionCanceled { .. }
            | EventKind::Noticed(_) => (None, None),
        }
    }
}
