//! Extractors: the API key into (app, mode), and JSON bodies into typed requests with errors that
//! name the field at fault.

use super::AppState;
use super::error::ApiError;
use crate::engine::Mode;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Secret,
    Publishable,
}

/// Who is calling: an app, in one mode, with a secret or a publishable key.
#[derive(Debug, Clone)]
pub struct Caller {
    pub app: String,
    pub mode: Mode,
    pub kind: KeyKind,
}

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
        state.keys.identify(key)
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

/// A JSON body that refuses malformed JSON, unknown fields and wrong types with the field's name.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Body<T>, ApiError> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text())
                }
            })?;
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

/// Parses a JSON body; an empty body reads as `{}`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| {
            let path = e.path().to_string();
            (path, e.into_inner())
        })
        .and_then(|value: T| de.end().map(|()| value).map_err(|e| (".".to_owned(), e)));
    // A field error may come before a syntax error further on: the body is then malformed JSON
    // first. Only failed bodies pay for this second pass.
    let value = parsed.map_err(|(path, error)| {
        match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(syntax) => json_error(".", &syntax),
            Ok(_) => json_error(&path, &error),
        }
    })?;
    Ok(value)
}

fn json_error(path: &str, error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let text = error.to_string();
    if matches!(
        error.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("malformed JSON: {text}"),
        );
    }
    // serde reports the unknown or missing field by name in its message; the path points at the
    // object that holds it.
    let quoted = text.split('`').nth(1).unwrap_or_default();
    // For an unknown field the path already ends at the field; for a missing one it stops at the
    // object that lacks it.
    let join = |field: &str| {
        if path == "." || path.is_empty() || path == field || path.ends_with(&format!(".{field}")) {
            if path == "." || path.is_empty() {
                field.to_owned()
            } else {
                path.to_owned()
            }
        } else {
            format!("{path}.{field}")
        }
    };
    if text.starts_with("unknown field") {
        let param = join(quoted);
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_parameter",
            format!("unknown parameter '{param}'"),
        )
        .param(param);
    }
    if text.starts_with("missing field") {
        let param = join(quoted);
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "parameter_missing",
            format!("missing required parameter '{param}'"),
        )
        .param(param);
    }
    let param = if path == "." {
        String::new()
    } else {
        path.to_owned()
    };
    let message = text.split(" at line ").next().unwrap_or(&text).to_owned();
    let error = ApiError::new(
        StatusCode::BAD_REQUEST,
        "parameter_invalid",
        if param.is_empty() {
            message
        } else {
            format!("{param}: {message}")
        },
    );
    if param.is_empty() {
        error
    } else {
        error.param(param)
    }
}
