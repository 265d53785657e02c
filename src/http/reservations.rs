//! Reservations and their one-step forms: `/v1/reservations`, `/v1/check`, `/v1/consume`.

use super::error::ApiError;
use super::extract::{Body, Path, Secret};
use super::users::{owner, unexpected, user_key};
use super::{AppState, views};
use crate::actors::user_actor::{Request, View};
use crate::engine::ids::{ModelKey, parse_amount};
use crate::engine::time::MS_PER_SECOND;
use crate::engine::{Command, UserKey};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

const TTL_DEFAULT_S: u64 = 600;
const TTL_MAX_S: u64 = 86_400;
/// Metadata, a commit's response: small JSON documents, not payloads.
const JSON_BYTES_MAX: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReserveBody {
    user_id: String,
    model: String,
    amount: u64,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CheckBody {
    user_id: String,
    model: String,
    amount: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommitBody {
    #[serde(default)]
    amount: Option<u64>,
    #[serde(default)]
    response: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseBody {
    #[serde(default)]
    error_code: Option<String>,
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

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn reserve_call(
    s: &AppState,
    key: UserKey,
    command: Command,
) -> Result<Json<Value>, ApiError> {
    let user = key.user.clone();
    let view = s.engine.user(key, Request::Command(command)).await?;
    let outcome = match &view {
        View::Reservation(_) => "allowed",
        View::Denied(_) => "denied",
        _ => "other",
    };
    metrics::counter!("vevee_reservations_total", "outcome" => outcome).increment(1);
    match view {
        View::Reservation(r) => Ok(Json(views::reservation(&user, &r))),
        View::Denied(m) => Ok(Json(views::denial(&m))),
        other => Err(unexpected(&other)),
    }
}

fn reserve_command(
    headers: &HeaderMap,
    body: ReserveBody,
    commit: bool,
) -> Result<Command, ApiError> {
    let ttl_s = body.ttl_seconds.unwrap_or(TTL_DEFAULT_S);
    if !(1..=TTL_MAX_S).contains(&ttl_s) {
        return Err(ApiError::invalid("ttlSeconds", "must be from 1 to 86400"));
    }
    Ok(Command::Reserve {
        model: model(&body.model)?,
        amount: amount("amount", body.amount)?,
        ttl_ms: ttl_s as i64 * MS_PER_SECOND,
        metadata: json_text("metadata", body.metadata)?,
        request_key: idempotency_key(headers),
        commit,
    })
}

pub async fn reserve(
    State(s): State<AppState>,
    Secret(caller): Secret,
    headers: HeaderMap,
    Body(body): Body<ReserveBody>,
) -> Result<Json<Value>, ApiError> {
    let key = user_key(&caller, &body.user_id, "userId")?;
    let command = reserve_command(&headers, body, false)?;
    reserve_call(&s, key, command).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConsumeBody {
    user_id: String,
    model: String,
    amount: u64,
    #[serde(default)]
    metadata: Option<Value>,
}

pub async fn consume(
    State(s): State<AppState>,
    Secret(caller): Secret,
    headers: HeaderMap,
    Body(body): Body<ConsumeBody>,
) -> Result<Json<Value>, ApiError> {
    let key = user_key(&caller, &body.user_id, "userId")?;
    let body = ReserveBody {
        user_id: body.user_id,
        model: body.model,
        amount: body.amount,
        ttl_seconds: None,
        metadata: body.metadata,
    };
    let command = reserve_command(&headers, body, true)?;
    reserve_call(&s, key, command).await
}

pub async fn check(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Body(body): Body<CheckBody>,
) -> Result<Json<Value>, ApiError> {
    let key = user_key(&caller, &body.user_id, "userId")?;
    let request = Request::Check {
        model: model(&body.model)?,
        amount: amount("amount", body.amount)?,
    };
    match s.engine.user(key, request).await? {
        View::Check(m) => Ok(Json(views::check(&m))),
        other => Err(unexpected(&other)),
    }
}

async fn reservation_call(
    s: &AppState,
    key: UserKey,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let user = key.user.clone();
    match s.engine.user(key, request).await? {
        View::Reservation(r) => Ok(Json(views::reservation(&user, &r))),
        other => Err(unexpected(&other)),
    }
}

pub async fn get(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = owner(&s, &caller, &id, "reservation_not_found")?;
    reservation_call(&s, key, Request::Reservation(id)).await
}

pub async fn commit(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(body): Body<CommitBody>,
) -> Result<Json<Value>, ApiError> {
    let key = owner(&s, &caller, &id, "reservation_not_found")?;
    let command = Command::Commit {
        reservation_id: id,
        amount: body.amount.map(|a| amount("amount", a)).transpose()?,
        response: json_text("response", body.response)?,
    };
    reservation_call(&s, key, Request::Command(command)).await
}

pub async fn release(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(body): Body<ReleaseBody>,
) -> Result<Json<Value>, ApiError> {
    let key = owner(&s, &caller, &id, "reservation_not_found")?;
    let error_code = super::credits::text("errorCode", body.error_code, 255)?;
    let command = Command::Release {
        reservation_id: id,
        error_code,
    };
    reservation_call(&s, key, Request::Command(command)).await
}
