//! Operations and the test clock: `/healthz`, `/readyz`, `/metrics`, `/v1/test/clock`.

use super::AppState;
use super::error::ApiError;
use super::extract::{Body, Secret};
use crate::engine::Mode;
use crate::engine::ids::parse_amount;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "serving"}))
}

/// The router is built after recovery, so answering at all means recovery is done.
pub async fn readyz() -> Json<Value> {
    Json(json!({"status": "ready"}))
}

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

pub async fn clock(
    State(s): State<AppState>,
    Secret(caller): Secret,
) -> Result<Json<Value>, ApiError> {
    test_only(caller.mode)?;
    let now = s.engine.durable_test_now(&caller.app).await?;
    Ok(Json(json!({"now": now.rfc3339()})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvanceBody {
    seconds: u64,
}

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
