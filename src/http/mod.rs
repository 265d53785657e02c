//! The HTTP layer of API.md: authenticate, parse, validate, call the
//! [`Engine`](crate::actors::Engine), render. Nothing else.
//!
//! [`routes`](fn@routes) are the API's routes (one module per resource, each handler
//! documented for `/openapi.json` through [`api_routes`]); [`layered`] adds what every answer of
//! the server shares. `startup` merges the dashboard's pages between the two, so this module does
//! not know the dashboard. Refusals of every layer below become answers in [`error`] alone; the
//! request bodies here are the API's own types, converted into the engine's inputs.

pub mod batch;
pub mod catalog;
pub mod credits;
pub mod docs;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod number;
pub mod openapi;
pub mod ops;
pub mod reservations;
pub mod serve;
pub mod strict;
pub mod stripe;
pub mod users;
pub mod webhooks;

use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use error::ApiError;
use std::collections::HashMap;
use std::time::Instant;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// The per-route middleware, one layer rather than three (each `from_fn` layer clones the boxed
/// route service it wraps on every request): counts requests and their latency by route and
/// status, runs catalog reads through CORS, and every other request through `Idempotency-Key`.
async fn front(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let response = if is_cors_request(&request) {
        with_catalog_cors(request, next).await
    } else {
        idempotency::idempotency(State(s), request, next).await
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let seconds = started.elapsed().as_secs_f64();
    RequestMetrics::with(route, response.status().as_u16(), |m| {
        m.requests.increment(1);
        m.seconds.record(seconds);
    });
    response
}

/// The metric handles of one (route, status): looked up in the registry once per thread, not
/// once per request (a lookup hashes the labels and allocates their strings).
struct RequestMetrics {
    requests: metrics::Counter,
    seconds: metrics::Histogram,
}

/// Route → (status, handles). A handful of routes and statuses: a short vector per route.
type RequestMetricsByRoute = HashMap<Box<str>, Vec<(u16, RequestMetrics)>>;

thread_local! {
    static REQUEST_METRICS: std::cell::RefCell<RequestMetricsByRoute> =
        std::cell::RefCell::new(HashMap::new());
}

impl RequestMetrics {
    fn with(route: &str, status: u16, f: impl FnOnce(&RequestMetrics)) {
        REQUEST_METRICS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if !cache.contains_key(route) {
                cache.insert(route.into(), Vec::new());
            }
            let by_status = cache.get_mut(route).expect("inserted above");
            let at = match by_status.iter().position(|(s, _)| *s == status) {
                Some(at) => at,
                None => {
                    let labels = [("route", route.to_owned()), ("status", status.to_string())];
                    let handles = RequestMetrics {
                        requests: metrics::counter!("vevee_http_requests_total", &labels),
                        seconds: metrics::histogram!("vevee_http_request_seconds", &labels),
                    };
                    by_status.push((status, handles));
                    by_status.len() - 1
                }
            };
            f(&by_status[at].1);
        });
    }
}

/// The table of documented routes: each handler carries `#[utoipa::path]` with its method and
/// path, and `routes!` registers it under those, so the router and `/openapi.json` cannot
/// disagree. A route added with `.route` instead is missing from the document, which
/// `tests/it/openapi.rs` reports.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(catalog::list_plans, catalog::create_plan))
        .routes(routes!(
            catalog::get_plan,
            catalog::put_plan,
            catalog::delete_plan
        ))
        .routes(routes!(catalog::list_packs, catalog::create_pack))
        .routes(routes!(catalog::get_pack, catalog::put_pack))
        .routes(routes!(catalog::archive_pack))
        .routes(routes!(
            users::put_subscription,
            users::get_subscription,
            users::cancel_subscription
        ))
        .routes(routes!(users::usage))
        .routes(routes!(users::ledger))
        .routes(routes!(credits::create_grant))
        .routes(routes!(credits::get_balance))
        .routes(routes!(credits::revoke))
        .routes(routes!(reservations::reserve))
        .routes(routes!(reservations::get))
        .routes(routes!(reservations::commit))
        .routes(routes!(reservations::release))
        .routes(routes!(reservations::check))
        .routes(routes!(reservations::consume))
        .routes(routes!(batch::batch))
        .routes(routes!(webhooks::list_endpoints, webhooks::create_endpoint))
        .routes(routes!(
            webhooks::get_endpoint,
            webhooks::update_endpoint,
            webhooks::delete_endpoint
        ))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::list_events))
        .routes(routes!(stripe::webhook))
        .routes(routes!(ops::clock))
        .routes(routes!(ops::advance))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(docs::page))
}

/// Every route of API.md, and `/docs`. The layers every answer goes through are added by
/// [`layered`], once the dashboard's pages are merged in (`startup` does both).
pub fn routes(state: AppState) -> Router {
    let (documented, _) = api_routes().split_for_parts();
    documented
        // Swagger UI's own files, for `/docs`: not API operations.
        .route("/docs/{file}", get(docs::asset))
        .with_state(state)
}

/// The server's routes (the API's and the dashboard's, merged) with what every answer shares:
/// JSON answers for an unknown route or method, `front` (metrics by route, CORS on catalog
/// reads, `Idempotency-Key`), the body limit, a JSON 500 for a panic, request ids and tracing.
pub fn layered(routes: Router, state: AppState) -> Router {
    let routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    let request_id = axum::http::HeaderName::from_static("request-id");
    let trace = TraceLayer::new_for_http().make_span_with(|request: &Request| {
        let id = request
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // DEBUG: at the default INFO level a request costs no span. Log lines inside a request
        // carry its id when the filter lets DEBUG spans through (`RUST_LOG=vevee=debug`).
        tracing::debug_span!("request", id, method = %request.method(), path = %request.uri().path())
    });
    routes
        .layer(middleware::from_fn_with_state(state, front))
        .layer(DefaultBodyLimit::max(idempotency::BODY_BYTES_MAX))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            )
            .into_response()
        }))
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), UlidRequestId))
                .layer(trace)
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
}

/// A browser page on any origin may read the catalog with a publishable key (GET only); writes and
/// secret keys stay server-side, which the SDK also enforces. Layered on the catalog's GET routes
/// only (each layered before its other methods are added), so no other route answers a browser
/// on another origin, the dashboard included.
fn catalog_cors() -> tower_http::cors::CorsLayer {
    use axum::http::{Method, header};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET])
        .allow_headers([header::AUTHORIZATION])
        .expose_headers([axum::http::HeaderName::from_static("request-id")])
}

/// The catalog's read paths: the only ones a browser on another origin may call.
fn is_catalog_read(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    ["/v1/plans", "/v1/credit-packs"].iter().any(|base| {
        path == *base
            || path
                .strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    })
}

/// Catalog reads and their preflights: the only requests [`catalog_cors`] answers, so no other
/// route answers a browser on another origin.
fn is_cors_request(request: &Request) -> bool {
    use axum::http::Method;
    matches!(*request.method(), Method::GET | Method::OPTIONS)
        && is_catalog_read(request.uri().path())
}

/// Runs a catalog read (or its preflight) through [`catalog_cors`].
async fn with_catalog_cors(request: Request, next: Next) -> Response {
    let inner = tower::service_fn(move |request: Request| {
        let next = next.clone();
        async move { Ok::<_, std::convert::Infallible>(next.run(request).await) }
    });
    match tower::ServiceExt::oneshot(tower::Layer::layer(&catalog_cors(), inner), request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

/// Request ids are `req_` + a ULID: unique and sortable by time, like every other id here.
#[derive(Clone, Copy)]
struct UlidRequestId;

impl MakeRequestId for UlidRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        // Encoded on the stack: `req_` + 26 characters of Crockford base32.
        let mut encoded = [0u8; ulid::ULID_LEN];
        ulid::Ulid::new().array_to_str(&mut encoded);
        let mut id = [0u8; 4 + ulid::ULID_LEN];
        id[..4].copy_from_slice(b"req_");
        id[4..].copy_from_slice(&encoded);
        axum::http::HeaderValue::from_bytes(&id)
            .ok()
            .map(RequestId::new)
    }
}
