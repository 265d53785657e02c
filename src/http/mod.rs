//! The HTTP layer: authenticate, parse, validate, call the [`Engine`], render. Nothing else.

pub mod batch;
pub mod catalog;
pub mod credits;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod ops;
pub mod reservations;
pub mod stripe;
pub mod users;
pub mod views;

use crate::actors::Engine;
use crate::config::Config;
use crate::engine::Mode;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dashmap::DashMap;
use error::ApiError;
use extract::{Caller, KeyKind};
use metrics_exporter_prometheus::PrometheusHandle;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

/// The configured API keys, kept as SHA-256 digests and compared in constant time.
pub struct Keys {
    entries: Vec<([u8; 32], Caller)>,
}

impl Keys {
    pub fn from_config(config: &Config) -> Keys {
        let mut entries = Vec::new();
        for app in &config.apps {
            let keys = [
                (&app.secret_key_live, Mode::Live, KeyKind::Secret),
                (&app.secret_key_test, Mode::Test, KeyKind::Secret),
                (&app.publishable_key_live, Mode::Live, KeyKind::Publishable),
                (&app.publishable_key_test, Mode::Test, KeyKind::Publishable),
            ];
            for (key, mode, kind) in keys {
                if let Some(key) = key {
                    let caller = Caller {
                        app: app.id.clone(),
                        mode,
                        kind,
                    };
                    entries.push((Sha256::digest(key.as_bytes()).into(), caller));
                }
            }
        }
        Keys { entries }
    }

    pub fn identify(&self, key: &str) -> Result<Caller, ApiError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every entry is compared, so the time taken does not tell which one matched.
        let mut found = None;
        for (candidate, caller) in &self.entries {
            if bool::from(candidate.ct_eq(&digest)) {
                found = Some(caller.clone());
            }
        }
        found.ok_or_else(|| {
            let message = if key.starts_with("sk_live_") || key.starts_with("pk_live_") {
                "this live key is not configured: set secret_key_live (and publishable_key_live) \
                 for the app in the config file, inline or as env:VARIABLE, and restart"
            } else {
                "invalid API key"
            };
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
        })
    }
}

/// A per-app request budget for test keys: a token bucket refilled every second.
pub struct SandboxLimit {
    per_second: i64,
    buckets: DashMap<String, (AtomicI64, std::sync::Mutex<Instant>)>,
}

impl SandboxLimit {
    pub fn new(per_second: u32) -> SandboxLimit {
        SandboxLimit {
            per_second: i64::from(per_second),
            buckets: DashMap::new(),
        }
    }

    pub fn check(&self, app: &str) -> Result<(), ApiError> {
        let bucket = self.buckets.entry(app.to_owned()).or_insert_with(|| {
            (
                AtomicI64::new(self.per_second),
                std::sync::Mutex::new(Instant::now()),
            )
        });
        let (tokens, refilled) = &*bucket;
        {
            let mut last = refilled.lock().expect("sandbox limit poisoned");
            if last.elapsed() >= Duration::from_secs(1) {
                *last = Instant::now();
                tokens.store(self.per_second, Ordering::Relaxed);
            }
        }
        if tokens.fetch_sub(1, Ordering::Relaxed) > 0 {
            return Ok(());
        }
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "sandbox_rate_limited",
            format!(
                "test mode allows {} requests per second per app",
                self.per_second
            ),
        );
        error.retry_after_s = Some(1);
        Err(error)
    }
}

pub struct WebhookSecrets {
    pub live: Option<String>,
    pub test: Option<String>,
}

/// What every handler shares. axum clones the state for every extractor and middleware that
/// asks for it, so it is one `Arc`: one reference count to touch per clone, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub engine: Engine,
    pub keys: Keys,
    pub sandbox_limit: SandboxLimit,
    pub webhook_secrets: HashMap<String, WebhookSecrets>,
    pub webhook_tolerance_s: i64,
    pub metrics: PrometheusHandle,
    pub in_flight: DashMap<(String, Mode, String), ()>,
    /// Unix seconds of the last snapshot written, 0 before the first.
    pub last_snapshot_s: Arc<AtomicI64>,
    pub dashboard: crate::dashboard::Settings,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(config: &Config, engine: Engine, metrics: PrometheusHandle) -> AppState {
        let webhook_secrets = config
            .apps
            .iter()
            .map(|a| {
                let secrets = WebhookSecrets {
                    live: a.stripe_webhook_secret_live.clone(),
                    test: a.stripe_webhook_secret_test.clone(),
                };
                (a.id.clone(), secrets)
            })
            .collect();
        AppState(Arc::new(Shared {
            engine,
            keys: Keys::from_config(config),
            sandbox_limit: SandboxLimit::new(config.server.sandbox_requests_per_second),
            webhook_secrets,
            webhook_tolerance_s: config.server.webhook_tolerance_seconds,
            metrics,
            in_flight: DashMap::new(),
            last_snapshot_s: Arc::new(AtomicI64::new(0)),
            dashboard: crate::dashboard::Settings::from_config(config),
        }))
    }

    pub fn snapshot_age_s(&self) -> Option<f64> {
        let last = self.last_snapshot_s.load(Ordering::Relaxed);
        let now = crate::actors::clock::real_now().0 / 1000;
        (last > 0).then(|| (now - last) as f64)
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "route_not_found",
        "no such route; see API.md for the routes of /v1",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Counts requests and their latency by route and status.
async fn measure(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("status", status)];
    metrics::counter!("vevee_http_requests_total", &labels).increment(1);
    metrics::histogram!("vevee_http_request_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Every route of API.md.
pub fn router(state: AppState) -> Router {
    use axum::routing::put;
    let api = Router::new()
        .route(
            "/v1/plans",
            get(catalog::list_plans).post(catalog::create_plan),
        )
        .route(
            "/v1/plans/{id}",
            get(catalog::get_plan)
                .put(catalog::put_plan)
                .delete(catalog::delete_plan),
        )
        .route(
            "/v1/credit-packs",
            get(catalog::list_packs).post(catalog::create_pack),
        )
        .route(
            "/v1/credit-packs/{id}",
            get(catalog::get_pack).put(catalog::put_pack),
        )
        .route("/v1/credit-packs/{id}/archive", post(catalog::archive_pack))
        .route(
            "/v1/users/{user}/subscription",
            put(users::put_subscription)
                .get(users::get_subscription)
                .delete(users::cancel_subscription),
        )
        .route("/v1/users/{user}/usage", get(users::usage))
        .route("/v1/users/{user}/ledger", get(users::ledger))
        .route("/v1/credits/grants", post(credits::create_grant))
        .route("/v1/credits/balances/{id}", get(credits::get_balance))
        .route("/v1/credits/balances/{id}/revoke", post(credits::revoke))
        .route("/v1/reservations", post(reservations::reserve))
        .route("/v1/reservations/{id}", get(reservations::get))
        .route("/v1/reservations/{id}/commit", post(reservations::commit))
        .route("/v1/reservations/{id}/release", post(reservations::release))
        .route("/v1/check", post(reservations::check))
        .route("/v1/consume", post(reservations::consume))
        .route("/v1/batch", post(batch::batch))
        .route("/v1/webhooks/stripe/{app}", post(stripe::webhook))
        .route("/v1/test/clock", get(ops::clock))
        .route("/v1/test/clock/advance", post(ops::advance))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(crate::dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    let request_id = axum::http::HeaderName::from_static("request-id");
    let trace = TraceLayer::new_for_http().make_span_with(|request: &Request| {
        let id = request
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info_span!("request", id, method = %request.method(), path = %request.uri().path())
    });
    api.layer(middleware::from_fn_with_state(
        state.clone(),
        idempotency::idempotency,
    ))
    .layer(middleware::from_fn(measure))
    .layer(DefaultBodyLimit::max(idempotency::BODY_BYTES_MAX))
    .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
        .into_response()
    }))
    .layer(catalog_cors())
    .layer(
        tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(request_id.clone(), UlidRequestId))
            .layer(trace)
            .layer(PropagateRequestIdLayer::new(request_id)),
    )
    .with_state(state)
}

/// A browser page on any origin may read the catalog with a publishable key (GET only); writes and
/// secret keys stay server-side, which the SDK also enforces.
fn catalog_cors() -> tower_http::cors::CorsLayer {
    use axum::http::{Method, header};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET])
        .allow_headers([header::AUTHORIZATION])
        .expose_headers([axum::http::HeaderName::from_static("request-id")])
}

/// Request ids are `req_` + a ULID: unique and sortable by time, like every other id here.
#[derive(Clone, Copy)]
struct UlidRequestId;

impl MakeRequestId for UlidRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("req_{}", ulid::Ulid::new());
        axum::http::HeaderValue::from_str(&id)
            .ok()
            .map(RequestId::new)
    }
}
