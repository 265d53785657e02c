//! `Idempotency-Key` on POST: a 2xx answer is kept 24 h, durably, and replayed for the same key,
//! method, path and body; the same key with anything else is refused.

use super::error::ApiError;
use super::extract::too_large;
use crate::access::Caller;
use crate::engine::state::StoredAnswer;
use crate::engine::time::MS_PER_DAY;
use crate::state::AppState;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

pub const BODY_BYTES_MAX: usize = 1024 * 1024;
const KEY_BYTES_MAX: usize = 255;
const ANSWER_TTL_MS: i64 = MS_PER_DAY;

/// Removes the in-flight mark of a key when the request ends, however it ends.
struct InFlight<'a> {
    state: &'a AppState,
    scope: (crate::engine::Name, crate::engine::Mode, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.in_flight.remove(&self.scope);
    }
}

pub async fn idempotency(State(s): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get("idempotency-key") else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= KEY_BYTES_MAX => k.to_owned(),
        _ => {
            return ApiError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
            .into_response();
        }
    };
    let (mut parts, body) = request.into_parts();
    // Without a valid key the handler answers 401 or 403, which is never stored.
    let Ok(caller) = Caller::from_request_parts(&mut parts, &s).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let Ok(bytes) = to_bytes(body, BODY_BYTES_MAX).await else {
        return too_large().into_response();
    };
    let mut hash = Sha256::new();
    hash.update(parts.method.as_str());
    hash.update(b" ");
    hash.update(parts.uri.to_string());
    hash.update(b"\n");
    hash.update(&bytes);
    let fingerprint: [u8; 32] = hash.finalize().into();
    // Answers are kept 24 hours by the clock of the key's mode, so the test clock ages them too.
    let Ok(now) = s.engine.now(&caller.app, caller.mode) else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    let stored = match s.engine.stored_answer(&caller.app, caller.mode, &key) {
        Ok(stored) => stored,
        Err(error) => return ApiError::from(error).into_response(),
    };
    if let Some(stored) = stored {
        if stored.at.plus_ms(ANSWER_TTL_MS) > now {
            if stored.fingerprint != fingerprint {
                return ApiError::conflict(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with another request; use a new key",
                )
                .into_response();
            }
            return replay(&stored);
        }
    }
    let scope = (caller.app.clone(), caller.mode, key.clone());
    if s.in_flight.insert(scope.clone(), ()).is_some() {
        return ApiError::conflict(
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still running; retry once it has answered",
        )
        .into_response();
    }
    let _in_flight = InFlight { state: &s, scope };

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, usize::MAX).await else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "answer lost",
        )
        .into_response();
    };
    // Aged from when it was answered, not from when it arrived: a reserve's key also finds its
    // reservation for 24 hours from the reservation's creation, and the stored answer must not
    // be gone first (a retry in between would get the reservation as it is now, not the answer).
    let answered_at = s.engine.now(&caller.app, caller.mode).unwrap_or(now);
    let answer = StoredAnswer {
        fingerprint,
        status: parts.status.as_u16(),
        body: body.to_vec(),
        at: answered_at.max(now),
    };
    if let Err(error) = s
        .engine
        .store_answer(&caller.app, caller.mode, &key, answer)
        .await
    {
        tracing::error!(%error, "could not keep an idempotent answer");
    }
    Response::from_parts(parts, Body::from(body))
}

fn replay(stored: &StoredAnswer) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
