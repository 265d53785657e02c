//! Extractors: the API key into (app, mode), and JSON bodies into typed requests with errors that
//! name the field at fault.

use super::error::ApiError;
use super::strict::{self, BodyError};
use crate::access::{Caller, KeyKind};
use crate::engine::Mode;
use crate::state::AppState;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A caller with a secret key: every endpoint but the catalog reads needs one.
#[derive(Debug, Clone)]
pub struct Secret(pub Caller);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing_api_key",
                    "no API key: send Authorization: Bearer sk_test_…",
                )
            })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_api_key",
                    "the Authorization header must be 'Bearer KEY'",
                )
            })?;
        Ok(state.keys.identify(key)?)
    }
}

impl FromRequestParts<AppState> for Secret {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Secret, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.kind != KeyKind::Secret {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "secret_key_required",
                "a publishable key may only read the catalog; use a secret key",
            ));
        }
        if caller.mode == Mode::Test {
            state.sandbox_limit.check(&caller.app)?;
        }
        Ok(Secret(caller))
    }
}

/// The `Idempotency-Key` header of a single call, if any (the middleware in `idempotency.rs`
/// checks its form): a reserve keeps it, so that a retry after a crash that lost the stored answer
/// finds the reservation it already made. Read from the parts, so the headers are not copied.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> Result<IdempotencyKey, std::convert::Infallible> {
        let key = parts.headers.get("idempotency-key");
        Ok(IdempotencyKey(
            key.and_then(|v| v.to_str().ok()).map(str::to_owned),
        ))
    }
}

/// Path parameters; one that is not valid UTF-8 once percent-decoded is a 400 naming it.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Path<T>, ApiError> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => match e.into_kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => Err(ApiError::invalid(
                    &key,
                    "is not valid UTF-8 once percent-decoded",
                )),
                ErrorKind::ParseErrorAtKey { key, .. }
                | ErrorKind::DeserializeError { key, .. } => {
                    Err(ApiError::invalid(&key, "is not valid here"))
                }
                other => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "parameter_invalid",
                    format!("the path is not valid: {other}"),
                )),
            },
            Err(other) => {
                // Only a route without parameters can miss them: a mistake of ours, not the caller's.
                tracing::error!(error = %other, "path parameters missing");
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "internal error",
                ))
            }
        }
    }
}

/// The raw body, up to the body limit; over it, 413 in the API's shape.
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<RawBody, ApiError> {
        axum::body::Bytes::from_request(request, state)
            .await
            .map(RawBody)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text())
                }
            })
    }
}

/// A JSON body that refuses malformed JSON, unknown fields and wrong types with the field's name.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Body<T>, ApiError> {
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        parse_json(&bytes).map(Body)
    }
}

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "the body is over 1 MiB",
    )
}

/// Parses a JSON body. No body at all reads as `{}` where every field is optional, and is
/// malformed JSON where one is required.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return strict::from_slice(b"{}").map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body is empty; this endpoint takes a JSON object",
            )
        });
    }
    strict::from_slice(bytes).map_err(|(path, error)| {
        // A field error may come before a syntax error further on: the body is then malformed
        // JSON first. Only failed bodies pay for this second pass.
        match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(syntax) => malformed(&syntax),
            Ok(_) => body_error(&path, error),
        }
    })
}

fn malformed(error: &serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_json",
        format!("malformed JSON: {error}"),
    )
}

/// `param` for a path from serde_path_to_error: `.` is the body itself.
fn param_at(path: &str) -> Option<&str> {
    (!path.is_empty() && path != ".").then_some(path)
}

fn body_error(path: &str, error: BodyError) -> ApiError {
    use serde_json::error::Category;
    match error {
        BodyError::Json(e)
            if matches!(
                e.classify(),
                Category::Syntax | Category::Eof | Category::Io
            ) =>
        {
            malformed(&e)
        }
        // The path of an unknown field ends at the field itself.
        BodyError::UnknownField(field) => {
            let param = param_at(path).map_or(field, str::to_owned);
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_parameter",
                format!("unknown parameter '{param}'"),
            )
            .param(param)
        }
        // The path of a missing field stops at the object that lacks it.
        BodyError::MissingField(field) => {
            let param = param_at(path).map_or_else(|| field.to_owned(), |p| format!("{p}.{field}"));
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "parameter_missing",
                format!("missing required parameter '{param}'"),
            )
            .param(param)
        }
        BodyError::Json(e) => invalid_value(path, &without_position(&e)),
        BodyError::Invalid(message) => invalid_value(path, &message),
    }
}

/// serde_json's message without its " at line 1 column 7", which means nothing to a caller who
/// is told the field.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn invalid_value(path: &str, message: &str) -> ApiError {
    match param_at(path) {
        Some(param) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            format!("{param}: {message}"),
        )
        .param(param),
        None => ApiError::new(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            format!("the body must be a JSON object: {message}"),
        ),
    }
}
