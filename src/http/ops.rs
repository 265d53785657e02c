//! Operations and the test clock: `/healthz`, `/readyz`, `/metrics`, `/v1/test/clock`.

use super::error::ApiError;
use super::extract::{Body, Secret};
use crate::engine::Mode;
use crate::engine::ids::parse_amount;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::openapi::schemas::{self as doc, Error};

#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "Operations",
    summary = "Serving", responses((status = 200, description = "The server answers", body = doc::Status)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "serving"}))
}

/// The router is built after recovery, so answering at all means recovery is done.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "Operations",
    summary = "Recovery done", responses((status = 200, description = "Ready", body = doc::Status)))]
pub async fn readyz() -> Json<Value> {
    Json(json!({"status": "ready"}))
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "Operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    metrics::gauge!("vevee_users_in_memory").set(s.engine.users_in_memory() as f64);
    metrics::gauge!("vevee_users_asleep").set(s.engine.users_asleep() as f64);
    if let Some(age) = s.snapshot_age_s() {
        metrics::gauge!("vevee_snapshot_age_seconds").set(age);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
}

fn test_only(mode: Mode) -> Result<(), ApiError> {
    if mode == Mode::Test {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "test_mode_only",
            "the test clock exists in test mode only; use an sk_test_ key",
        ))
    }
}

#[utoipa::path(get, path = "/v1/test/clock", operation_id = "getTestClock", tag = "Test clock",
    summary = "The test-mode clock", security(("secretKey" = [])),
    responses(
        (status = 200, description = "Now, in test mode", body = doc::Clock),
        (status = 403, description = "A publishable key (`secret_key_required`) or a live key (`test_mode_only`)", body = Error)))]
pub async fn clock(
    State(s): State<AppState>,
    Secret(caller): Secret,
) -> Result<Json<Value>, ApiError> {
    test_only(caller.mode)?;
    let now = s.engine.durable_test_now(&caller.app).await?;
    Ok(Json(json!({"now": now.rfc3339()})))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"seconds": 2678400}))]
pub struct AdvanceBody {
    #[serde(deserialize_with = "super::number::whole")]
    #[schema(value_type = doc::Quantity)]
    seconds: u64,
}

#[utoipa::path(post, path = "/v1/test/clock/advance", operation_id = "advanceTestClock", tag = "Test clock",
    summary = "Move the test-mode clock forward",
    description = "Expiry, period resets and reservation TTLs in test mode follow it.",
    security(("secretKey" = [])), request_body = AdvanceBody,
    responses(
        (status = 200, description = "Now, after the move", body = doc::Clock),
        (status = 403, description = "A publishable key (`secret_key_required`) or a live key (`test_mode_only`)", body = Error)))]
pub async fn advance(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Body(body): Body<AdvanceBody>,
) -> Result<Json<Value>, ApiError> {
    test_only(caller.mode)?;
    let seconds = parse_amount(body.seconds).map_err(|e| ApiError::invalid("seconds", e))?;
    let now = s.engine.advance_test_clock(&caller.app, seconds).await?;
    Ok(Json(json!({"now": now.rfc3339()})))
}
