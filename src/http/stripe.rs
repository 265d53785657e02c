//! The Stripe webhook: paid checkouts become grants, full refunds become revokes.

use super::credits::{EXTERNAL_REF_BYTES_MAX, external_ref_fits, grant};
use super::error::ApiError;
use super::extract::{Path, RawBody};
use crate::actors::clock::real_now;
use crate::actors::user_actor::Request;
use crate::engine::event::GrantSource;
use crate::engine::ids::UserId;
use crate::engine::{Command, Mode, Name, UserKey};
use crate::state::AppState;
use crate::stripe::{EventKind, parse_event, peek_livemode, verify};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::openapi::schemas::{self as doc, Error};

fn bad_signature(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_signature",
        message.to_string(),
    )
}

fn unprocessable(code: &'static str, message: String) -> ApiError {
    tracing::warn!(code, %message, "stripe event not handled; Stripe will retry");
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// An id from Stripe that will be stored (as an `externalRef`, a payment to remember, a reason)
/// is held to the API's bound; a longer one is not Stripe's and is refused without being echoed.
fn bounded_id(what: &str, value: &str) -> Result<(), ApiError> {
    if external_ref_fits(value) {
        return Ok(());
    }
    Err(unprocessable(
        "parameter_invalid",
        format!(
            "the event's {what} is {} bytes; ids must be 1 to {EXTERNAL_REF_BYTES_MAX}",
            value.len()
        ),
    ))
}

/// Revokes `balances` (a second revoke of one changes nothing) and returns their ids.
async fn revoke_all(
    s: &AppState,
    app: &str,
    mode: Mode,
    balances: Vec<(UserId, String)>,
    reason: &str,
) -> Result<Vec<String>, ApiError> {
    let mut revoked = Vec::with_capacity(balances.len());
    for (user, balance_id) in balances {
        let key = UserKey {
            app: Name::from(app),
            mode,
            user,
        };
        let command = Command::Revoke {
            balance_id: balance_id.as_str().into(),
            reason: Some(reason.to_owned()),
        };
        s.engine.user(key, Request::Command(command)).await?;
        revoked.push(balance_id);
    }
    Ok(revoked)
}

fn ignored(why: &str) -> Json<Value> {
    tracing::info!(why, "stripe event ignored");
    Json(json!({"received": true, "ignored": true}))
}

#[utoipa::path(post, path = "/v1/webhooks/stripe/{appId}", operation_id = "stripeWebhook", tag = "Stripe",
    summary = "Stripe's webhook (no API key: the `Stripe-Signature` header is checked)",
    description = "`checkout.session.completed` (paid) and `checkout.session.async_payment_succeeded` grant `metadata.packId` to `metadata.userId` (else `client_reference_id`); `charge.refunded` with the whole amount revokes what that payment granted. Other events are ignored. Redelivery never grants twice.",
    params(("appId" = String, Path, description = "The app's id in the config", example = "pixelforge"),
        ("Stripe-Signature" = String, Header, description = "Stripe's signature: `t=…,v1=…`")),
    request_body(content = Object, description = "A Stripe event, as Stripe sends it"),
    responses(
        (status = 200, description = "Handled, also on redelivery", body = doc::StripeReceived),
        (status = 400, description = "A bad or stale signature (`invalid_signature`) or not a Stripe event (`invalid_event`)", body = Error),
        (status = 404, description = "No such app (`app_not_found`)", body = Error),
        (status = 413, description = "The body is over 1 MiB", body = Error),
        (status = 422, description = "Unknown pack (`pack_not_found`) or no user (`user_missing`): Stripe retries", body = Error)))]
pub async fn webhook(
    State(s): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let secrets = s
        .webhook_secrets
        .get(&app)
        .ok_or_else(|| ApiError::not_found("app_not_found", format!("no app with id '{app}'")))?;
    let livemode = peek_livemode(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", e.to_string()))?;
    let (mode, secret) = if livemode {
        (Mode::Live, secrets.live.as_deref())
    } else {
        (Mode::Test, secrets.test.as_deref())
    };
    let secret = secret.ok_or_else(|| {
        bad_signature(format!(
            "no {} webhook secret is configured for app '{app}'",
            mode.as_str()
        ))
    })?;
    let header = headers
        .get("stripe-signature")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let now_s = real_now().0.div_euclid(1000);
    verify(header, &body, secret, now_s, s.webhook_tolerance_s).map_err(bad_signature)?;
    let event = parse_event(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", e.to_string()))?;

    match event.kind {
        EventKind::CheckoutPaid {
            session_id,
            user_id,
            pack_id,
            payment_intent,
        } => {
            bounded_id("checkout session id", &session_id)?;
            if let Some(intent) = &payment_intent {
                bounded_id("payment_intent", intent)?;
            }
            let user = user_id.ok_or_else(|| {
                unprocessable("user_missing", format!(
                    "checkout session {session_id} has neither metadata.userId nor client_reference_id"
                ))
            })?;
            let user = UserId::parse(&user).map_err(|e| {
                unprocessable(
                    "user_missing",
                    format!("checkout session {session_id}: user id {e}"),
                )
            })?;
            let pack_id = pack_id.ok_or_else(|| {
                unprocessable(
                    "pack_not_found",
                    format!("checkout session {session_id} has no metadata.packId"),
                )
            })?;
            bounded_id("metadata.packId", &pack_id)?;
            let key = UserKey {
                app: Name::from(&app),
                mode,
                user: user.clone(),
            };
            let command = Command::Grant {
                pack_id: pack_id.into(),
                external_ref: session_id.as_str().into(),
                source: GrantSource::Purchase,
                notes: Some(format!("Stripe checkout session {session_id}")),
                expires_at: None,
                payment_intent: payment_intent.clone(),
                expiring_notice_days: s.expiring_notice_days(&key.app),
            };
            let (_, view) = grant(&s, key, command).await.map_err(|e| {
                if e.code == "pack_not_found" {
                    unprocessable("pack_not_found", e.message.clone())
                } else {
                    e
                }
            })?;
            let balances: Vec<Value> = view["balances"]
                .as_array()
                .map(|b| b.iter().map(|b| b["id"].clone()).collect())
                .unwrap_or_default();
            tracing::info!(event = %event.id, session = %session_id, "stripe checkout granted");
            // Stripe may deliver a refund before its checkout: one remembered for this payment
            // is applied now. Read after the grant is durable (and with it the payments index),
            // while the refund path remembers before it reads the index: whichever of the two
            // comes second sees the other, so a refund racing its checkout is never lost.
            let refund = match &payment_intent {
                Some(intent) => s.engine.refund_before_checkout(&app, mode, intent)?,
                None => None,
            };
            let Some(charge_id) = refund else {
                return Ok(Json(
                    json!({"received": true, "created": view["created"], "balances": balances}),
                ));
            };
            let granted = balances
                .iter()
                .filter_map(|b| b.as_str().map(|id| (user.clone(), id.to_owned())))
                .collect();
            let reason = format!("refunded before checkout: Stripe charge {charge_id}");
            let revoked = revoke_all(&s, &app, mode, granted, &reason).await?;
            tracing::info!(session = %session_id, charge = %charge_id, "stripe checkout revoked: its payment was refunded before it arrived");
            Ok(Json(json!({"received": true, "created": view["created"],
                "balances": balances, "revoked": revoked})))
        }
        EventKind::CheckoutUnpaid { session_id } => {
            tracing::info!(session = %session_id, "checkout not paid yet; waiting for async success");
            Ok(ignored("payment not completed yet"))
        }
        EventKind::ChargeRefunded {
            charge_id,
            payment_intent,
            fully_refunded,
        } => {
            bounded_id("charge id", &charge_id)?;
            if let Some(intent) = &payment_intent {
                bounded_id("payment_intent", intent)?;
            }
            if !fully_refunded {
                tracing::info!(charge = %charge_id, "partial refund: credits left as they are");
                return Ok(ignored("partial refund"));
            }
            let Some(intent) = payment_intent else {
                return Ok(ignored("refund without a payment intent"));
            };
            let mut paid = s.engine.paid_balances(&app, mode, &intent)?;
            if paid.is_empty() {
                // No checkout of this payment has granted yet; Stripe may still deliver it.
                // Remember the refund durably before answering, then look again: a checkout
                // granted meanwhile did not see it (see the checkout arm).
                if !s
                    .engine
                    .remember_refund_before_checkout(&app, mode, &intent, &charge_id)
                    .await?
                {
                    return Ok(ignored("no grant was paid by this payment intent"));
                }
                paid = s.engine.paid_balances(&app, mode, &intent)?;
                if paid.is_empty() {
                    // API.md answers a refund of an unknown payment intent `ignored`; it is also
                    // remembered, which Stripe cannot tell from the 200 either way.
                    tracing::info!(charge = %charge_id, intent = %intent, "refund before its checkout: remembered");
                    return Ok(ignored(
                        "unknown payment intent: remembered for its checkout",
                    ));
                }
            }
            let reason = format!("Stripe refund of charge {charge_id}");
            let revoked = revoke_all(&s, &app, mode, paid, &reason).await?;
            tracing::info!(charge = %charge_id, count = revoked.len(), "stripe refund revoked balances");
            Ok(Json(json!({"received": true, "revoked": revoked})))
        }
        EventKind::Other { event_type } => {
            Ok(ignored(&format!("event type {event_type} is not handled")))
        }
    }
}
