//! `ApiError`: the one type that knows HTTP statuses. Every refusal becomes
//! `{"error": {"type", "code", "message", "param"}}`.

use crate::access::{KeyError, SandboxLimited};
use crate::actors::EngineError;
use crate::actors::user_actor::View;
use crate::engine::Rejection;
use crate::engine::catalog::CatalogRejection;
use crate::engine::catalog_input::CatalogInputError;
use crate::webhooks::endpoint::EndpointRejection;
use crate::webhooks::registry::RegistryError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        let kind = match status {
            StatusCode::BAD_REQUEST => "invalid_request",
            StatusCode::UNAUTHORIZED => "authentication",
            StatusCode::FORBIDDEN => "permission",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        };
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after_s: None,
        }
    }

    pub fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// 400 for a field whose value is wrong.
    pub fn invalid(param: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            format!("{param} {message}"),
        )
        .param(param)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 503: overloaded or not ready, nothing was applied; the client may retry after
    /// `retry_after_s` seconds, which the answer carries as `Retry-After`.
    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after_s: u64,
    ) -> ApiError {
        let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        error.retry_after_s = Some(retry_after_s);
        error
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "type": self.kind,
            "code": self.code,
            "message": self.message,
            "param": self.param,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            error.to_string(),
        )
    }
}

impl From<SandboxLimited> for ApiError {
    fn from(limited: SandboxLimited) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "sandbox_rate_limited",
            limited.to_string(),
        );
        error.retry_after_s = Some(limited.retry_after_s);
        error
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        let message = rejection.to_string();
        match rejection {
            Rejection::PlanNotFound(_) => ApiError::not_found("plan_not_found", message),
            Rejection::PackNotFound(_) => ApiError::not_found("pack_not_found", message),
            Rejection::ReservationNotFound(_) => {
                ApiError::not_found("reservation_not_found", message)
            }
            Rejection::BalanceNotFound(_) => ApiError::not_found("balance_not_found", message),
            Rejection::NoSubscription => ApiError::not_found("no_subscription", message),
            Rejection::ReservationNotPending { .. } => {
                ApiError::conflict("reservation_not_pending", message)
            }
            Rejection::CommitAboveReserved { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_amount", message).param("amount")
            }
            Rejection::ExpiresAtNotInFuture => {
                ApiError::invalid("expiresAt", "must be in the future")
                    .with_code("expires_at_in_past")
            }
            Rejection::UnknownCursor(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_cursor", message)
                    .param("startingAfter")
            }
            Rejection::ClockOverflow => ApiError::invalid(
                "seconds",
                format_args!(
                    "would move the test clock past {}, the latest it can show with room for \
                     every deadline after it; nothing was changed",
                    crate::engine::time::LATEST_NOW.rfc3339()
                ),
            ),
            Rejection::TooManyOpenReservations { .. } => {
                ApiError::conflict("too_many_open_reservations", message)
            }
            Rejection::TooManyBalances { .. } => ApiError::conflict("too_many_balances", message),
        }
    }
}

impl From<CatalogInputError> for ApiError {
    fn from(error: CatalogInputError) -> ApiError {
        match error {
            CatalogInputError::IdMissing => ApiError::new(
                StatusCode::BAD_REQUEST,
                "parameter_missing",
                error.to_string(),
            )
            .param("id"),
            CatalogInputError::Invalid { param, problem } => ApiError::invalid(&param, problem),
        }
    }
}

impl From<CatalogRejection> for ApiError {
    fn from(rejection: CatalogRejection) -> ApiError {
        let message = rejection.to_string();
        match rejection {
            CatalogRejection::PlanExists(_) => ApiError::conflict("plan_exists", message),
            CatalogRejection::PackExists(_) => ApiError::conflict("pack_exists", message),
            CatalogRejection::PlanInUse(_) => ApiError::conflict("plan_in_use", message),
            CatalogRejection::PlanNotFound(_) => ApiError::not_found("plan_not_found", message),
            CatalogRejection::PackNotFound(_) => ApiError::not_found("pack_not_found", message),
        }
    }
}

/// What a client is told to wait when the server stops to recover a user: the supervisor's
/// restart and the replay of the journal.
const RESTART_RETRY_AFTER_S: u64 = 5;
impl From<EndpointRejection> for ApiError {
    fn from(rejection: EndpointRejection) -> ApiError {
        let message = rejection.to_string();
        let invalid = |param: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "parameter_invalid",
                message.clone(),
            )
            .param(param)
        };
        match rejection {
            EndpointRejection::Url(_) | EndpointRejection::UrlTooLong => invalid("url"),
            EndpointRejection::NoEvents
            | EndpointRejection::WildcardMixed
            | EndpointRejection::UnknownEventType(_) => invalid("events"),
            EndpointRejection::DescriptionTooLong => invalid("description"),
            EndpointRejection::TooMany => ApiError::conflict("too_many_endpoints", message),
            EndpointRejection::NotFound(_) => ApiError::not_found("endpoint_not_found", message),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> ApiError {
        match error {
            RegistryError::Rejected(r) => r.into(),
            RegistryError::Store(_) | RegistryError::Stopped => {
                tracing::error!(%error, "the webhook endpoint store failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the change could not be saved; nothing was changed",
                )
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::Rejected(r) => r.into(),
            EngineError::Catalog(r) => r.into(),
            EngineError::UnknownApp(app) => {
                ApiError::not_found("app_not_found", format!("no app with id '{app}'"))
            }
            EngineError::Overloaded => {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    error.to_string(),
                );
                e.retry_after_s = Some(1);
                e
            }
            EngineError::Restarting => {
                ApiError::unavailable("restarting", error.to_string(), RESTART_RETRY_AFTER_S)
            }
            EngineError::Unavailable => {
                tracing::error!("journal unavailable while answering a request");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    error.to_string(),
                )
            }
        }
    }
}

impl ApiError {
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = code;
        self
    }

    /// The one place an unexpected view is turned into an error rather than a panic: logged,
    /// and answered as a 500 that names nothing internal. The API and the dashboard both use it.
    pub fn unexpected(view: &View) -> ApiError {
        tracing::error!(?view, "the engine answered with an unexpected view");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "unexpected answer",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_input_refusal_is_the_answer_of_its_field() {
        let invalid = CatalogInputError::Invalid {
            param: "items[0].amount".into(),
            problem: "must be a positive integer".into(),
        };
        assert_eq!(
            ApiError::from(invalid),
            ApiError::invalid("items[0].amount", "must be a positive integer")
        );
        let missing = ApiError::from(CatalogInputError::IdMissing);
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            missing.body()["error"],
            json!({"type": "invalid_request", "code": "parameter_missing",
                   "message": "missing required parameter 'id'", "param": "id"})
        );
    }

    #[test]
    fn unavailable_is_503_of_type_unavailable_with_retry_after() {
        let response = ApiError::unavailable("not_ready", "still recovering", 2).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("2"))
        );
        let error = ApiError::unavailable("not_ready", "still recovering", 2);
        assert_eq!(error.body()["error"]["type"], "unavailable");
        assert_eq!(error.body()["error"]["code"], "not_ready");
    }
}
