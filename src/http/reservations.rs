//! Reservations and their one-step forms: `/v1/reservations`, `/v1/check`, `/v1/consume`.
//!
//! Each call is three steps, shared with `/v1/batch` so that a batch slot answers exactly as the
//! single call would: a `*_call` function turns a parsed body into a [`Call`] (the user and the
//! actor [`Request`]), the engine runs it, and [`answer`] renders the [`View`] to JSON.

use super::error::ApiError;
use super::extract::{Body, IdempotencyKey, Path, Secret};
use super::users::{owner, user_key};
use crate::access::Caller;
use crate::actors::user_actor::{Request, View};
use crate::engine::ids::{ModelKey, UserId, parse_amount};
use crate::engine::time::MS_PER_SECOND;
use crate::engine::{Command, UserKey};
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::number::{optional_whole, whole};
use super::openapi::schemas::{self as doc, Error};

const TTL_DEFAULT_S: u64 = 600;
const TTL_MAX_S: u64 = 86_400;
/// Metadata, a commit's response: small JSON documents, not payloads.
const JSON_BYTES_MAX: usize = 16 * 1024;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"userId": "ana", "model": "image.gemini-3-1-flash-image-preview", "amount": 1}))]
pub struct ReserveBody {
    #[schema(value_type = doc::UserId)]
    pub user_id: String,
    #[schema(value_type = doc::ModelKey)]
    pub model: String,
    #[serde(deserialize_with = "whole")]
    #[schema(value_type = doc::Quantity)]
    pub amount: u64,
    /// How long the hold lasts, 600 s by default.
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(minimum = 1, maximum = 86400)]
    pub ttl_seconds: Option<u64>,
    /// Any JSON, at most 16 KiB, kept with the reservation.
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"userId": "ana", "model": "image.dall-e-3", "amount": 1}))]
pub struct CheckBody {
    #[schema(value_type = doc::UserId)]
    pub user_id: String,
    #[schema(value_type = doc::ModelKey)]
    pub model: String,
    #[serde(deserialize_with = "whole")]
    #[schema(value_type = doc::Quantity)]
    pub amount: u64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"amount": 2}))]
pub struct CommitBody {
    /// At most the reserved amount; the whole amount when omitted.
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(value_type = Option<doc::Quantity>)]
    pub amount: Option<u64>,
    /// Any JSON, at most 16 KiB, kept with the reservation.
    #[serde(default)]
    pub response: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"errorCode": "provider_timeout"}))]
pub struct ReleaseBody {
    /// Why the generation failed, at most 255 bytes.
    #[serde(default)]
    #[schema(max_length = 255)]
    pub error_code: Option<String>,
}

fn model(text: &str) -> Result<ModelKey, ApiError> {
    ModelKey::parse(text).map_err(|e| ApiError::invalid("model", e))
}

fn amount(param: &str, value: u64) -> Result<u64, ApiError> {
    parse_amount(value).map_err(|e| ApiError::invalid(param, e))
}

/// JSON kept as text in the engine; `null` is no value.
fn json_text(param: &str, value: Option<Value>) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let text = v.to_string();
            if text.len() > JSON_BYTES_MAX {
                return Err(ApiError::invalid(param, "must be at most 16 KiB of JSON"));
            }
            Ok(Some(text))
        }
    }
}

/// How a call's view is rendered: each route answers one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A reservation or a denial (reserve, consume), counted by outcome.
    Hold,
    /// The answer of `/v1/check`.
    Check,
    /// A reservation (get, commit, release).
    Reservation,
}

/// A validated call, ready for the user's actor.
#[derive(Debug)]
pub struct Call {
    pub key: UserKey,
    pub request: Request,
    pub shape: Shape,
}

/// The answer of a call whose engine answer was `view`, as typed views serialized straight into
/// the body (no `Value` in between): the single routes' whole body and a batch slot's `body`.
#[derive(serde::Serialize)]
#[serde(untagged)]
pub enum Answer<'a> {
    Reservation(views::ReservationView<'a>),
    Denial(views::DenialView),
    Check(Value),
}

/// Renders `view` in the call's shape, counting reserves and consumes by outcome.
pub fn answer<'a>(shape: Shape, user: &'a UserId, view: &'a View) -> Result<Answer<'a>, ApiError> {
    count(shape, view);
    match (shape, view) {
        (Shape::Hold | Shape::Reservation, View::Reservation(r)) => {
            Ok(Answer::Reservation(views::ReservationView::new(user, r)))
        }
        (Shape::Hold, View::Denied(m)) => Ok(Answer::Denial(views::DenialView::new(m))),
        (Shape::Check, View::Check(m)) => Ok(Answer::Check(views::check(m))),
        (_, other) => Err(ApiError::unexpected(other)),
    }
}

/// Counts reserves and consumes by outcome.
fn count(shape: Shape, view: &View) {
    if shape != Shape::Hold {
        return;
    }
    let outcome = match view {
        View::Reservation(_) => 0,
        View::Denied(_) => 1,
        _ => 2,
    };
    OUTCOMES.with(|handles| {
        handles.get_or_init(|| {
            ["allowed", "denied", "other"]
                .map(|outcome| metrics::counter!("vevee_reservations_total", "outcome" => outcome))
        })[outcome]
            .increment(1);
    });
}

thread_local! {
    /// The outcome counters, looked up in the registry once per thread rather than per call.
    static OUTCOMES: std::cell::OnceCell<[metrics::Counter; 3]> = const { std::cell::OnceCell::new() };
}

/// Runs one call and renders its answer: the single routes' whole body.
async fn run(s: &AppState, call: Call) -> Result<Response, ApiError> {
    let user = call.key.user.clone();
    let view = s.engine.user(call.key, call.request).await?;
    Ok(Json(answer(call.shape, &user, &view)?).into_response())
}

/// A reserve (`commit: false`) or a consume (`commit: true`). `request_key` lets a retried
/// request find the reservation it made before.
pub fn reserve_call(
    caller: &Caller,
    body: ReserveBody,
    request_key: Option<String>,
    commit: bool,
) -> Result<Call, ApiError> {
    let key = user_key(caller, &body.user_id, "userId")?;
    let ttl_s = body.ttl_seconds.unwrap_or(TTL_DEFAULT_S);
    if !(1..=TTL_MAX_S).contains(&ttl_s) {
        return Err(ApiError::invalid("ttlSeconds", "must be from 1 to 86400"));
    }
    let command = Command::Reserve {
        model: model(&body.model)?,
        amount: amount("amount", body.amount)?,
        ttl_ms: ttl_s as i64 * MS_PER_SECOND,
        metadata: json_text("metadata", body.metadata)?,
        request_key,
        commit,
    };
    Ok(Call {
        key,
        request: Request::Command(command),
        shape: Shape::Hold,
    })
}

#[utoipa::path(post, path = "/v1/reservations", operation_id = "reserve", tag = "Reservations",
    summary = "Reserve before a generation",
    description = "The plan gives what it can, the credits the rest. If together they fall short, nothing is held and the answer is a denial (`allowed: false`).",
    security(("secretKey" = [])), request_body = ReserveBody,
    responses(
        (status = 200, description = "A pending reservation, or a denial", body = doc::Decision,
            links(("CommitReservation" = (operation_id = "commitReservation", parameters(("id" = "$response.body#/reservationId")))),
                  ("ReleaseReservation" = (operation_id = "releaseReservation", parameters(("id" = "$response.body#/reservationId")))),
                  ("GetReservation" = (operation_id = "getReservation", parameters(("id" = "$response.body#/reservationId")))))),
        (status = 400, description = "Invalid body (`parameter_invalid`: user id, model, amount, ttlSeconds, metadata)", body = Error)))]
pub async fn reserve(
    State(s): State<AppState>,
    Secret(caller): Secret,
    IdempotencyKey(request_key): IdempotencyKey,
    Body(body): Body<ReserveBody>,
) -> Result<Response, ApiError> {
    run(&s, reserve_call(&caller, body, request_key, false)?).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"userId": "ana", "model": "image.gemini-3-1-flash-image-preview", "amount": 1}))]
pub struct ConsumeBody {
    #[schema(value_type = doc::UserId)]
    pub user_id: String,
    #[schema(value_type = doc::ModelKey)]
    pub model: String,
    #[serde(deserialize_with = "whole")]
    #[schema(value_type = doc::Quantity)]
    pub amount: u64,
    /// Any JSON, at most 16 KiB, kept with the reservation.
    #[serde(default)]
    pub metadata: Option<Value>,
}

impl From<ConsumeBody> for ReserveBody {
    fn from(body: ConsumeBody) -> ReserveBody {
        ReserveBody {
            user_id: body.user_id,
            model: body.model,
            amount: body.amount,
            ttl_seconds: None,
            metadata: body.metadata,
        }
    }
}

#[utoipa::path(post, path = "/v1/consume", operation_id = "consume", tag = "Reservations",
    summary = "Reserve and commit in one step", security(("secretKey" = [])), request_body = ConsumeBody,
    responses(
        (status = 200, description = "The committed reservation, or a denial", body = doc::Decision),
        (status = 400, description = "Invalid body", body = Error)))]
pub async fn consume(
    State(s): State<AppState>,
    Secret(caller): Secret,
    IdempotencyKey(request_key): IdempotencyKey,
    Body(body): Body<ConsumeBody>,
) -> Result<Response, ApiError> {
    run(&s, reserve_call(&caller, body.into(), request_key, true)?).await
}

pub fn check_call(caller: &Caller, body: CheckBody) -> Result<Call, ApiError> {
    let key = user_key(caller, &body.user_id, "userId")?;
    let request = Request::Check {
        model: model(&body.model)?,
        amount: amount("amount", body.amount)?,
    };
    Ok(Call {
        key,
        request,
        shape: Shape::Check,
    })
}

#[utoipa::path(post, path = "/v1/check", operation_id = "check", tag = "Reservations",
    summary = "Whether a reservation would be allowed (holds nothing)", security(("secretKey" = [])), request_body = CheckBody,
    responses(
        (status = 200, description = "The decision", body = doc::Check),
        (status = 400, description = "Invalid body", body = Error)))]
pub async fn check(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Body(body): Body<CheckBody>,
) -> Result<Response, ApiError> {
    run(&s, check_call(&caller, body)?).await
}

fn reservation_owner(s: &AppState, caller: &Caller, id: &str) -> Result<UserKey, ApiError> {
    owner(s, caller, id, "reservation_not_found")
}

#[utoipa::path(get, path = "/v1/reservations/{id}", operation_id = "getReservation", tag = "Reservations",
    summary = "Get a reservation", security(("secretKey" = [])), params(("id" = String, Path, description = "A reservation id, `res_…`")),
    responses(
        (status = 200, description = "The reservation", body = doc::Reservation),
        (status = 404, description = "No such reservation (`reservation_not_found`)", body = Error)))]
pub async fn get(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = reservation_owner(&s, &caller, &id)?;
    let call = Call {
        key,
        request: Request::Reservation(id),
        shape: Shape::Reservation,
    };
    run(&s, call).await
}

/// The owner is looked up before the body's values are checked, as the routes always did: an
/// unknown reservation is a 404 whatever the body says.
pub fn commit_call(
    s: &AppState,
    caller: &Caller,
    id: String,
    body: CommitBody,
) -> Result<Call, ApiError> {
    let key = reservation_owner(s, caller, &id)?;
    let command = Command::Commit {
        reservation_id: id.into(),
        amount: body.amount.map(|a| amount("amount", a)).transpose()?,
        response: json_text("response", body.response)?,
    };
    Ok(Call {
        key,
        request: Request::Command(command),
        shape: Shape::Reservation,
    })
}

#[utoipa::path(post, path = "/v1/reservations/{id}/commit", operation_id = "commitReservation", tag = "Reservations",
    summary = "Commit a reservation",
    description = "An `amount` below the reserved one returns the rest to its sources. A repeat with the same amount answers the same.",
    security(("secretKey" = [])), request_body(content = Option<CommitBody>, description = "Empty or `{}` commits the whole amount"),
    params(("id" = String, Path, description = "A reservation id, `res_…`")),
    responses(
        (status = 200, description = "The committed reservation", body = doc::Reservation),
        (status = 400, description = "Invalid body, or `amount` above the reserved one (`invalid_amount`)", body = Error),
        (status = 404, description = "No such reservation (`reservation_not_found`)", body = Error),
        (status = 409, description = "Released, expired, or committed with another amount (`reservation_not_pending`); or an `Idempotency-Key` conflict", body = Error)))]
pub async fn commit(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(body): Body<CommitBody>,
) -> Result<Response, ApiError> {
    run(&s, commit_call(&s, &caller, id, body)?).await
}

pub fn release_call(
    s: &AppState,
    caller: &Caller,
    id: String,
    body: ReleaseBody,
) -> Result<Call, ApiError> {
    let key = reservation_owner(s, caller, &id)?;
    let error_code = super::credits::text("errorCode", body.error_code, 255)?;
    let command = Command::Release {
        reservation_id: id.into(),
        error_code,
    };
    Ok(Call {
        key,
        request: Request::Command(command),
        shape: Shape::Reservation,
    })
}

#[utoipa::path(post, path = "/v1/reservations/{id}/release", operation_id = "releaseReservation", tag = "Reservations",
    summary = "Release a reservation",
    description = "Every unit goes back to the counter or balance it came from. A repeat answers the same.",
    security(("secretKey" = [])), request_body(content = Option<ReleaseBody>, description = "Empty, `{}`, or an error code"),
    params(("id" = String, Path, description = "A reservation id, `res_…`")),
    responses(
        (status = 200, description = "The released reservation", body = doc::Reservation),
        (status = 404, description = "No such reservation (`reservation_not_found`)", body = Error),
        (status = 409, description = "Committed or expired (`reservation_not_pending`); or an `Idempotency-Key` conflict", body = Error)))]
pub async fn release(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(body): Body<ReleaseBody>,
) -> Result<Response, ApiError> {
    run(&s, release_call(&s, &caller, id, body)?).await
}
