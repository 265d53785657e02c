//! JSON shapes of API.md, built from the engine's read models: the HTTP answers and the payloads
//! of outgoing webhooks (an event is sent as the object `GET /v1/events` lists), so both
//! [`http`](crate::http) and [`webhooks`](crate::webhooks) use them. The domain types never go on
//! the wire as they are.

use crate::engine::catalog::{Limit, Pack, Plan};
use crate::engine::event::{CreditHold, EventKind, PlanHold};
use crate::engine::ids::UserId;
use crate::engine::ledger::LedgerLine;
use crate::engine::matcher::{Available, Match};
use crate::engine::notice::{NoticeData, SentNotice};
use crate::engine::read::{CounterView, Usage};
use crate::engine::user::{Balance, Reservation, Subscription};
use crate::engine::{Mode, Ts};
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};

fn ts(t: Ts) -> Value {
    Value::String(t.rfc3339())
}

fn opt_ts(t: Option<Ts>) -> Value {
    t.map_or(Value::Null, ts)
}

pub fn allocations(plan: Option<&PlanHold>, credits: &[CreditHold], plan_amount: u64) -> Value {
    serde_json::to_value(Allocations {
        plan,
        credits,
        plan_amount,
    })
    .expect("allocations serialize")
}

// Typed answers for the request path: serialized straight into the response body, with no
// `Value` tree in between. Fields are in alphabetical order, the order `json!` objects come out
// in (serde_json keeps object keys sorted here), so both forms give the same bytes.

/// A timestamp, written as RFC 3339 with milliseconds without an intermediate `String`.
struct Rfc3339(Ts);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match jiff::Timestamp::from_millisecond(self.0.0) {
            Ok(t) => serializer.collect_str(&format_args!("{t:.3}")),
            Err(_) => serializer.serialize_str("invalid"),
        }
    }
}

/// Stored JSON text, written as it is; the text was produced from a value, so it parses.
fn raw_text(text: &Option<String>) -> Option<&RawValue> {
    text.as_deref()
        .and_then(|t| serde_json::from_str::<&RawValue>(t).ok())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AllocationView<'a> {
    amount: u64,
    balance_id: Option<&'a str>,
    limit_id: Option<&'a str>,
    source: &'static str,
}

/// The plan's part once per covering limit, then each credit hold, as API.md lists them.
struct Allocations<'a> {
    plan: Option<&'a PlanHold>,
    credits: &'a [CreditHold],
    plan_amount: u64,
}

impl Serialize for Allocations<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        if self.plan_amount > 0 {
            for l in self.plan.iter().flat_map(|p| &p.limits) {
                seq.serialize_element(&AllocationView {
                    amount: self.plan_amount,
                    balance_id: None,
                    limit_id: Some(&l.limit_id),
                    source: "plan",
                })?;
            }
        }
        for c in self.credits.iter().filter(|c| c.amount > 0) {
            seq.serialize_element(&AllocationView {
                amount: c.amount,
                balance_id: Some(&c.balance_id),
                limit_id: None,
                source: "credits",
            })?;
        }
        seq.end()
    }
}

/// A reservation (API.md, "Reservations").
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationView<'a> {
    allocations: Allocations<'a>,
    allowed: bool,
    amount: u64,
    committed_amount: Option<u64>,
    created_at: Rfc3339,
    error_code: Option<&'a str>,
    expires_at: Rfc3339,
    metadata: Option<&'a RawValue>,
    model: &'a str,
    reasons: [&'static str; 0],
    reservation_id: &'a str,
    response: Option<&'a RawValue>,
    status: &'static str,
    user_id: &'a str,
}

impl<'a> ReservationView<'a> {
    pub fn new(user: &'a UserId, r: &'a Reservation) -> ReservationView<'a> {
        ReservationView {
            allocations: Allocations {
                plan: r.plan.as_ref(),
                credits: &r.credits,
                plan_amount: r.plan_amount(),
            },
            allowed: true,
            amount: r.amount,
            committed_amount: r.committed_amount,
            created_at: Rfc3339(r.created_at),
            error_code: r.error_code.as_deref(),
            expires_at: Rfc3339(r.expires_at),
            metadata: raw_text(&r.metadata),
            model: r.model.as_str(),
            reasons: [],
            reservation_id: &r.id,
            response: raw_text(&r.response),
            status: r.status.as_str(),
            user_id: user.as_str(),
        }
    }
}

#[derive(Serialize)]
struct AvailableView {
    credits: u64,
    plan: u64,
}

/// A denial of a reserve or consume.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DenialView {
    allowed: bool,
    available: AvailableView,
    reasons: Vec<&'static str>,
    reservation_id: Option<&'static str>,
}

impl DenialView {
    pub fn new(m: &Match) -> DenialView {
        DenialView {
            allowed: false,
            available: AvailableView {
                credits: m.available.credits,
                plan: m.available.plan,
            },
            reasons: reasons(m),
            reservation_id: None,
        }
    }
}

fn available(a: &Available) -> Value {
    json!({"plan": a.plan, "credits": a.credits})
}

fn reasons(m: &Match) -> Vec<&'static str> {
    m.result
        .as_ref()
        .err()
        .map(|r| r.iter().map(|r| r.as_str()).collect())
        .unwrap_or_default()
}

pub fn check(m: &Match) -> Value {
    let allocation = match &m.result {
        Ok(a) => allocations(
            a.plan.as_ref(),
            &a.credits,
            a.plan.as_ref().map_or(0, |p| p.amount),
        ),
        Err(_) => json!([]),
    };
    json!({
        "allowed": m.result.is_ok(),
        "reasons": reasons(m),
        "allocations": allocation,
        "available": available(&m.available),
    })
}

pub fn balance(user: &UserId, b: &Balance) -> Value {
    json!({
        "id": b.id,
        "userId": user.as_str(),
        "packId": b.pack_id,
        "packItemId": b.pack_item_id,
        "match": b.pattern.to_string(),
        "unit": b.unit,
        "granted": b.granted,
        "remaining": b.remaining,
        "reserved": b.reserved,
        "committed": b.committed,
        "revoked": b.revoked,
        "expired": b.expired,
        "status": b.status.as_str(),
        "source": b.source.as_str(),
        "externalRef": b.external_ref,
        "notes": b.notes,
        "expiresAt": opt_ts(b.expires_at),
        "createdAt": ts(b.created_at),
    })
}

pub fn subscription(user: &UserId, s: &Subscription) -> Value {
    let status = match s.status {
        crate::engine::user::SubscriptionStatus::Active => "active",
        crate::engine::user::SubscriptionStatus::Canceled => "canceled",
    };
    json!({
        "userId": user.as_str(),
        "planId": s.plan_id,
        "status": status,
        "currentPeriodStart": ts(s.current_period_start),
        "createdAt": ts(s.created_at),
    })
}

pub fn counter(c: &CounterView) -> Value {
    json!({
        "planId": c.plan_id,
        "limitId": c.limit.id,
        "name": c.limit.name,
        "match": c.limit.patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "unit": c.limit.unit,
        "period": c.limit.period.as_str(),
        "limit": c.limit.limit,
        "used": c.used,
        "reserved": c.reserved,
        "remaining": c.remaining,
        "periodStart": opt_ts(c.period_start),
        "resetsAt": opt_ts(c.resets_at),
    })
}

pub fn usage(user: &UserId, u: &Usage) -> Value {
    let active = u
        .subscription
        .as_ref()
        .filter(|s| s.active_plan().is_some());
    json!({
        "userId": user.as_str(),
        "subscription": active.map(|s| subscription(user, s)),
        "counters": u.counters.iter().map(counter).collect::<Vec<_>>(),
        "credits": u.credits.iter().map(|b| balance(user, b)).collect::<Vec<_>>(),
    })
}

/// A page of the ledger, newest first.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerPageView<'a> {
    pub data: Vec<LedgerEntryView<'a>>,
    pub has_more: bool,
}

/// A ledger entry (API.md, "Ledger"). Every field is present; those the entry's type does not use
/// are null.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryView<'a> {
    allocations: Option<Allocations<'a>>,
    amount: Option<u64>,
    at: Rfc3339,
    balance_id: Option<&'a str>,
    external_ref: Option<&'a str>,
    id: &'a str,
    limit_id: Option<&'a str>,
    notes: Option<&'a str>,
    pack_id: Option<&'a str>,
    plan_id: Option<&'a str>,
    reason: Option<&'a str>,
    reservation_id: Option<&'a str>,
    source: Option<&'static str>,
    #[serde(rename = "type")]
    kind: &'static str,
    user_id: &'a str,
}

impl<'a> LedgerEntryView<'a> {
    pub fn new(user: &'a UserId, line: &'a LedgerLine) -> LedgerEntryView<'a> {
        let e = &line.event;
        let mut view = LedgerEntryView {
            allocations: None,
            amount: None,
            at: Rfc3339(e.at),
            balance_id: None,
            external_ref: None,
            id: &e.id,
            limit_id: None,
            notes: None,
            pack_id: line.pack_id.as_deref(),
            plan_id: None,
            reason: None,
            reservation_id: None,
            source: None,
            kind: e.kind.type_name(),
            user_id: user.as_str(),
        };
        let ended = line.reservation.as_deref();
        let ended_allocations = |r: &'a Reservation| Allocations {
            plan: r.plan.as_ref(),
            credits: &r.credits,
            plan_amount: r.plan_amount(),
        };
        match &e.kind {
            EventKind::CreditsGranted(g) => {
                view.amount = Some(g.amount);
                view.balance_id = Some(&g.balance_id);
                view.pack_id = Some(&g.pack_id);
                view.external_ref = Some(&g.external_ref);
                view.source = Some(g.source.as_str());
                view.notes = g.notes.as_deref();
            }
            EventKind::CreditsRevoked {
                balance_id,
                amount,
                reason,
                reservation_id,
            } => {
                view.amount = Some(*amount);
                view.balance_id = Some(balance_id);
                view.reason = reason.as_deref();
                view.reservation_id = reservation_id.as_deref();
            }
            EventKind::CreditsExpired {
                balance_id,
                amount,
                reservation_id,
            } => {
                view.amount = Some(*amount);
                view.balance_id = Some(balance_id);
                view.reservation_id = reservation_id.as_deref();
            }
            EventKind::UsageReserved(r) => {
                view.amount = Some(r.amount);
                view.reservation_id = Some(&r.reservation_id);
                view.allocations = Some(Allocations {
                    plan: r.plan.as_ref(),
                    credits: &r.credits,
                    plan_amount: r.plan.as_ref().map_or(0, |p| p.amount),
                });
            }
            EventKind::UsageCommitted {
                reservation_id,
                amount,
                plan_amount,
                credits,
                ..
            } => {
                view.amount = Some(*amount);
                view.reservation_id = Some(reservation_id);
                view.allocations = Some(Allocations {
                    plan: ended.and_then(|r| r.plan.as_ref()),
                    credits,
                    plan_amount: *plan_amount,
                });
            }
            EventKind::UsageReleased {
                reservation_id,
                error_code,
            } => {
                view.amount = ended.map(|r| r.amount);
                view.reservation_id = Some(reservation_id);
                view.reason = error_code.as_deref();
                view.allocations = ended.map(ended_allocations);
            }
            EventKind::UsageExpired { reservation_id } => {
                view.amount = ended.map(|r| r.amount);
                view.reservation_id = Some(reservation_id);
                view.allocations = ended.map(ended_allocations);
            }
            EventKind::SubscriptionUpdated { plan_id, .. }
            | EventKind::SubscriptionCanceled { plan_id } => view.plan_id = Some(plan_id),
            // Notices have no ledger line.
            EventKind::Noticed(_) => {}
        }
        view
    }
}

fn limit(l: &Limit) -> Value {
    json!({
        "id": l.id, "name": l.name,
        "match": l.patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "limit": l.limit, "unit": l.unit, "period": l.period.as_str(),
    })
}

pub fn plan(p: &Plan) -> Value {
    json!({
        "id": p.id, "name": p.name,
        "price": {"amount": p.price.amount, "currency": p.price.currency,
                  "interval": p.price.interval.map(|i| i.as_str())},
        "limits": p.limits.iter().map(limit).collect::<Vec<_>>(),
        "createdAt": ts(p.created_at), "updatedAt": ts(p.updated_at),
    })
}

pub fn pack(p: &Pack) -> Value {
    json!({
        "id": p.id, "name": p.name,
        "price": {"amount": p.price.amount, "currency": p.price.currency},
        "expiresInDays": p.expires_in_days, "stripePriceId": p.stripe_price_id,
        "archived": p.archived,
        "items": p.items.iter().map(|i| json!({
            "id": i.id, "match": i.pattern.to_string(), "amount": i.amount, "unit": i.unit,
            "lowBalanceThreshold": i.low_balance_threshold,
        })).collect::<Vec<_>>(),
        "createdAt": ts(p.created_at), "updatedAt": ts(p.updated_at),
    })
}

/// An outgoing event (API.md, "Webhooks out"): the same JSON in `GET /v1/events` and in the body
/// of a delivery. No axum here, so the deliverer renders with it too.
pub fn event(mode: Mode, user: &UserId, sent: &SentNotice) -> Value {
    let data = match &sent.notice.data {
        NoticeData::Balance(b) => balance(user, b),
        NoticeData::Counter(c) => json!({"userId": user.as_str(), "counter": counter(c)}),
        NoticeData::Subscription(s) => subscription(user, s),
        NoticeData::Reservation(r) => {
            serde_json::to_value(ReservationView::new(user, r)).expect("a reservation serializes")
        }
    };
    json!({
        "id": sent.id,
        "type": sent.notice.kind.as_str(),
        "createdAt": ts(sent.at),
        "mode": mode.as_str(),
        "data": data,
    })
}

pub fn list(items: Vec<Value>) -> Value {
    json!({"data": items, "hasMore": false})
}
