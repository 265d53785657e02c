//! Typed view of the few Stripe webhook events vevee acts on.
//!
//! Stripe sends far more fields than we need and adds new ones without notice, so every struct
//! here reads only what it uses and ignores the rest. Missing fields that we do need are errors,
//! because guessing would grant or revoke the wrong thing.

use serde::Deserialize;
use serde_json::{Map, Value};

/// One delivered event, reduced to what the webhook handler decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEvent {
    /// `evt_...`: the same on every redelivery of this event.
    pub id: String,
    /// Picks the app's live or test secret and data set.
    pub livemode: bool,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A Checkout Session whose money has arrived (or that needed none): grant the pack.
    CheckoutPaid {
        session_id: String,
        /// `metadata.userId`, else `client_reference_id`.
        user_id: Option<String>,
        /// `metadata.packId`.
        pack_id: Option<String>,
        payment_intent: Option<String>,
    },
    /// Completed but not paid yet (e.g. bank debits): wait for `async_payment_succeeded`.
    CheckoutUnpaid { session_id: String },
    ChargeRefunded {
        charge_id: String,
        payment_intent: Option<String>,
        /// Only a full refund revokes; a partial one changes nothing.
        fully_refunded: bool,
    },
    /// Any type we do not act on; answered 200 `ignored`.
    Other { event_type: String },
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the webhook body is not a Stripe event: {0}")]
    Envelope(#[source] serde_json::Error),
    #[error("the {event_type} event's data.object is not what Stripe documents: {source}")]
    Object {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

const CHECKOUT_COMPLETED: &str = "checkout.session.completed";
const CHECKOUT_ASYNC_SUCCEEDED: &str = "checkout.session.async_payment_succeeded";
const CHARGE_REFUNDED: &str = "charge.refunded";

/// Parses the raw webhook body (after, or independently of, signature verification).
pub fn parse_event(payload: &[u8]) -> Result<StripeEvent, EventError> {
    let envelope: Envelope = serde_json::from_slice(payload).map_err(EventError::Envelope)?;
    let kind = classify(envelope.event_type, envelope.data.object)?;
    Ok(StripeEvent {
        id: envelope.id,
        livemode: envelope.livemode,
        kind,
    })
}

/// Reads only `livemode`, so the caller can pick the secret before verifying the signature
/// without trusting (or failing on) the rest of an unauthenticated body.
pub fn peek_livemode(payload: &[u8]) -> Result<bool, EventError> {
    #[derive(Deserialize)]
    struct Mode {
        livemode: bool,
    }
    serde_json::from_slice::<Mode>(payload)
        .map(|m| m.livemode)
        .map_err(EventError::Envelope)
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    livemode: bool,
    #[serde(rename = "type")]
    event_type: String,
    data: EnvelopeData,
}

#[derive(Deserialize)]
struct EnvelopeData {
    /// Kept raw until the type tells us which shape to expect.
    object: Value,
}

#[derive(Deserialize)]
struct CheckoutSession {
    id: String,
    payment_status: String,
    client_reference_id: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    payment_intent: Option<Value>,
}

#[derive(Deserialize)]
struct Charge {
    id: String,
    payment_intent: Option<Value>,
    #[serde(default)]
    refunded: bool,
    amount: Option<i64>,
    amount_refunded: Option<i64>,
}

fn classify(event_type: String, object: Value) -> Result<EventKind, EventError> {
    match event_type.as_str() {
        CHECKOUT_COMPLETED => {
            let session: CheckoutSession = object_as(&event_type, object)?;
            Ok(checkout_kind(session, false))
        }
        CHECKOUT_ASYNC_SUCCEEDED => {
            let session: CheckoutSession = object_as(&event_type, object)?;
            // This event is itself Stripe's statement that the delayed payment arrived.
            Ok(checkout_kind(session, true))
        }
        CHARGE_REFUNDED => {
            let charge: Charge = object_as(&event_type, object)?;
            Ok(refund_kind(charge))
        }
        _ => Ok(EventKind::Other { event_type }),
    }
}

fn object_as<T: serde::de::DeserializeOwned>(
    event_type: &str,
    object: Value,
) -> Result<T, EventError> {
    serde_json::from_value(object).map_err(|source| EventError::Object {
        event_type: event_type.to_owned(),
        source,
    })
}

fn checkout_kind(session: CheckoutSession, payment_confirmed: bool) -> EventKind {
    let paid = payment_confirmed
        || matches!(
            session.payment_status.as_str(),
            "paid" | "no_payment_required"
        );
    if !paid {
        return EventKind::CheckoutUnpaid {
            session_id: session.id,
        };
    }
    let metadata = session.metadata.unwrap_or_default();
    let user_id =
        metadata_str(&metadata, "userId").or_else(|| non_empty(session.client_reference_id));
    EventKind::CheckoutPaid {
        session_id: session.id,
        user_id,
        pack_id: metadata_str(&metadata, "packId"),
        payment_intent: session.payment_intent.as_ref().and_then(id_of),
    }
}

fn refund_kind(charge: Charge) -> EventKind {
    // `refunded` is Stripe's own verdict; the amounts cover payloads where it lags behind.
    let by_amount = matches!(
        (charge.amount, charge.amount_refunded),
        (Some(amount), Some(refunded)) if refunded > 0 && refunded >= amount
    );
    EventKind::ChargeRefunded {
        charge_id: charge.id,
        payment_intent: charge.payment_intent.as_ref().and_then(id_of),
        fully_refunded: charge.refunded || by_amount,
    }
}

/// Metadata values are strings in Stripe; an empty one is treated as absent because a form that
/// leaves the field blank must not grant to the user "".
fn metadata_str(metadata: &Map<String, Value>, key: &str) -> Option<String> {
    non_empty(metadata.get(key).and_then(Value::as_str).map(str::to_owned))
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// An id field is a string unless the sender expanded it into the object, which carries `id`.
fn id_of(value: &Value) -> Option<String> {
    let id = match value {
        Value::String(s) => Some(s.as_str()),
        Value::Object(o) => o.get("id").and_then(Value::as_str),
        _ => None,
    };
    non_empty(id.map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::test_fixtures::fixture;

    fn parse_fixture(name: &str) -> StripeEvent {
        let f = fixture(name);
        parse_event(f.payload.as_bytes()).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
    }

    fn paid(session: &str, user: Option<&str>, pack: Option<&str>, pi: Option<&str>) -> EventKind {
        EventKind::CheckoutPaid {
            session_id: session.into(),
            user_id: user.map(Into::into),
            pack_id: pack.map(Into::into),
            payment_intent: pi.map(Into::into),
        }
    }

    #[test]
    fn a_paid_test_mode_checkout_becomes_checkout_paid_with_user_pack_and_payment_intent() {
        let event = parse_fixture("checkout_completed_paid_test");
        assert_eq!(event.id, "evt_1TestPaid");
        assert!(!event.livemode);
        let want = paid(
            "cs_test_paid",
            Some("user_42"),
            Some("pack_starter"),
            Some("pi_test_paid"),
        );
        assert_eq!(event.kind, want);
    }

    #[test]
    fn a_paid_live_mode_checkout_reports_livemode_true() {
        let event = parse_fixture("checkout_completed_paid_live");
        assert!(event.livemode);
        let want = paid(
            "cs_live_paid",
            Some("user_42"),
            Some("pack_starter"),
            Some("pi_live_paid"),
        );
        assert_eq!(event.kind, want);
    }

    #[test]
    fn an_unpaid_completed_checkout_becomes_checkout_unpaid() {
        let event = parse_fixture("checkout_completed_unpaid");
        assert_eq!(
            event.kind,
            EventKind::CheckoutUnpaid {
                session_id: "cs_test_async".into()
            }
        );
    }

    #[test]
    fn an_async_payment_success_becomes_checkout_paid_for_the_same_session() {
        let event = parse_fixture("checkout_async_payment_succeeded");
        let want = paid(
            "cs_test_async",
            Some("user_42"),
            Some("pack_starter"),
            Some("pi_test_async"),
        );
        assert_eq!(event.kind, want);
    }

    #[test]
    fn a_checkout_that_needed_no_payment_is_paid_without_a_payment_intent() {
        let event = parse_fixture("checkout_completed_no_payment_required");
        assert_eq!(
            event.kind,
            paid("cs_test_free", Some("user_42"), Some("pack_starter"), None)
        );
    }

    #[test]
    fn a_full_refund_is_reported_as_fully_refunded() {
        let event = parse_fixture("charge_refunded_full");
        let want = EventKind::ChargeRefunded {
            charge_id: "ch_test_full".into(),
            payment_intent: Some("pi_test_paid".into()),
            fully_refunded: true,
        };
        assert_eq!(event.kind, want);
    }

    #[test]
    fn a_partial_refund_is_reported_as_not_fully_refunded() {
        let event = parse_fixture("charge_refunded_partial");
        let want = EventKind::ChargeRefunded {
            charge_id: "ch_test_part".into(),
            payment_intent: Some("pi_test_paid".into()),
            fully_refunded: false,
        };
        assert_eq!(event.kind, want);
    }

    #[test]
    fn a_refund_of_the_whole_amount_counts_as_full_even_if_refunded_is_false() {
        let body = br#"{"id":"evt_1","livemode":false,"type":"charge.refunded",
            "data":{"object":{"id":"ch_1","payment_intent":"pi_1","refunded":false,
            "amount":1900,"amount_refunded":1900}}}"#;
        let kind = parse_event(body).expect("valid").kind;
        assert!(matches!(
            kind,
            EventKind::ChargeRefunded {
                fully_refunded: true,
                ..
            }
        ));
    }

    #[test]
    fn an_unknown_event_type_becomes_other_with_its_type() {
        let event = parse_fixture("customer_created_unknown_type");
        assert_eq!(
            event.kind,
            EventKind::Other {
                event_type: "customer.created".into()
            }
        );
    }

    #[test]
    fn a_paid_checkout_without_user_metadata_or_client_reference_has_no_user() {
        let event = parse_fixture("checkout_completed_no_user");
        let want = paid(
            "cs_test_nouser",
            None,
            Some("pack_starter"),
            Some("pi_test_nouser"),
        );
        assert_eq!(event.kind, want);
    }

    #[test]
    fn a_paid_checkout_without_user_metadata_falls_back_to_client_reference_id() {
        let event = parse_fixture("checkout_completed_unknown_pack");
        let want = paid(
            "cs_test_badpack",
            Some("user_from_client_ref"),
            Some("pack_does_not_exist"),
            Some("pi_test_badpack"),
        );
        assert_eq!(event.kind, want);
    }

    #[test]
    fn every_fixture_payload_parses() {
        for f in crate::stripe::test_fixtures::fixtures() {
            if f.name == "known_vector" {
                continue; // a bare signing vector, not an event
            }
            assert!(
                parse_event(f.payload.as_bytes()).is_ok(),
                "fixture {}",
                f.name
            );
        }
    }

    #[test]
    fn an_empty_user_id_in_metadata_is_treated_as_absent() {
        let body = br#"{"id":"evt_1","livemode":false,"type":"checkout.session.completed",
            "data":{"object":{"id":"cs_1","payment_status":"paid","client_reference_id":"u_ref",
            "metadata":{"userId":"","packId":"p"},"payment_intent":{"id":"pi_x"}}}}"#;
        let kind = parse_event(body).expect("valid").kind;
        assert_eq!(kind, paid("cs_1", Some("u_ref"), Some("p"), Some("pi_x")));
    }

    #[test]
    fn malformed_json_is_an_envelope_error() {
        let err = parse_event(b"{not json").expect_err("refused");
        assert!(matches!(err, EventError::Envelope(_)));
        assert!(
            err.to_string()
                .starts_with("the webhook body is not a Stripe event"),
            "{err}"
        );
    }

    #[test]
    fn an_event_without_an_id_is_an_envelope_error_naming_the_field() {
        let err = parse_event(br#"{"livemode":false,"type":"x","data":{"object":{}}}"#)
            .expect_err("refused");
        assert!(matches!(err, EventError::Envelope(_)));
        assert!(err.to_string().contains("`id`"), "{err}");
    }

    #[test]
    fn a_checkout_session_without_payment_status_is_an_object_error_naming_type_and_field() {
        let body = br#"{"id":"evt_1","livemode":false,"type":"checkout.session.completed",
            "data":{"object":{"id":"cs_1"}}}"#;
        let err = parse_event(body).expect_err("refused");
        let message = err.to_string();
        assert!(matches!(err, EventError::Object { .. }));
        assert!(message.contains("checkout.session.completed"), "{message}");
        assert!(message.contains("payment_status"), "{message}");
    }

    #[test]
    fn a_charge_without_an_id_is_an_object_error() {
        let body = br#"{"id":"evt_1","livemode":true,"type":"charge.refunded",
            "data":{"object":{"refunded":true}}}"#;
        assert!(matches!(parse_event(body), Err(EventError::Object { .. })));
    }

    #[test]
    fn livemode_can_be_read_before_the_rest_is_trusted() {
        assert!(
            peek_livemode(fixture("checkout_completed_paid_live").payload.as_bytes())
                .expect("valid")
        );
        assert!(!peek_livemode(br#"{"livemode":false,"data":"anything"}"#).expect("valid"));
        assert!(peek_livemode(b"[]").is_err());
    }
}
