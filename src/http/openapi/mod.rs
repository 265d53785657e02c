//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json` and printed by
//! `vevee openapi`.
//!
//! It is generated from the code: every handler carries `#[utoipa::path]`, the router's table
//! (`super::api_routes`) registers handlers through `utoipa_axum::routes!`, so a route and its
//! description are one entry; request bodies are the structs the handlers parse. What every
//! operation shares (the auth schemes, the error answers of auth, bodies and idempotency keys) is
//! added here once, by rule, so that no operation can forget one.

pub mod schemas;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use utoipa::OpenApi as _;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HttpMethod, ObjectBuilder, OpenApi, Ref, RefOr, Required, Type,
};

/// Security scheme names, as operations refer to them.
pub const SECRET_KEY: &str = "secretKey";
pub const PUBLISHABLE_KEY: &str = "publishableKey";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "vevee",
        description = "Usage metering and credit packs for AI-generation apps. Before every \
            generation your backend reserves what it will cost; it commits when the provider \
            answered and releases when it failed. vevee spends the user's plan quota first, then \
            their credit packs, and keeps a ledger from which every balance can be rebuilt.\n\n\
            Conventions: JSON bodies with camelCase fields; a field with no value is present as \
            `null`; quantities are positive integers up to 2^53 − 1; timestamps are RFC 3339 UTC. \
            A POST may carry `Idempotency-Key`: a 2xx answer is replayed for 24 h to the same key, \
            method, path and body. Every non-2xx answer has the body \
            `{\"error\": {\"type\", \"code\", \"message\", \"param\"}}`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    components(schemas(schemas::Error)),
    tags(
        (name = "Catalog", description = "Plans and credit packs: one catalog per app, shared by test and live mode."),
        (name = "Subscriptions", description = "A user's plan."),
        (name = "Credits", description = "Grants of credit packs, balances, revokes."),
        (name = "Reservations", description = "Reserve before a generation, commit or release after it."),
        (name = "Usage", description = "Counters, balances and the ledger of a user."),
        (name = "Stripe", description = "Stripe's webhook: paid checkouts grant, refunds revoke."),
        (name = "Test clock", description = "Moves time in test mode (test keys only)."),
        (name = "Webhooks", description = "Endpoints that receive the app's events, signed per Standard Webhooks, and the events for polling."),
        (name = "Operations", description = "Health, readiness, metrics and this document; no key."),
    )
)]
struct ApiDoc;

/// The document the router's table describes, before the shared rules are applied.
pub fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// The finished document.
pub fn document() -> OpenApi {
    let (_, mut doc) = super::api_routes().split_for_parts();
    apply_conventions(&mut doc);
    doc
}

/// The document as pretty JSON, built once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApi",
    tag = "Operations",
    summary = "This API as an OpenAPI 3.1 document",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json()).into_response()
}

/// The shared error answers, as `#/components/responses/…`.
const SHARED_RESPONSES: &[(&str, &str)] = &[
    (
        "BadRequest",
        "Invalid request (`invalid_request`): malformed JSON (`invalid_json`), an unknown field \
         (`unknown_parameter`), a missing one (`parameter_missing`), a wrong value \
         (`parameter_invalid`, with `param`), or an invalid `Idempotency-Key`.",
    ),
    (
        "Unauthorized",
        "No key (`missing_api_key`), or not a configured one (`invalid_api_key`).",
    ),
    (
        "Forbidden",
        "A publishable key on an endpoint that needs a secret key (`secret_key_required`).",
    ),
    (
        "IdempotencyConflict",
        "The `Idempotency-Key` was used with another request (`idempotency_key_reused`) or that \
         request is still running (`idempotency_key_in_use`).",
    ),
    (
        "PayloadTooLarge",
        "The body is over 1 MiB (`body_too_large`).",
    ),
    (
        "RateLimited",
        "Over the test-mode request budget (`sandbox_rate_limited`) or overloaded (`overloaded`); \
         nothing was applied. Retry after `Retry-After` seconds.",
    ),
];

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
}

fn idempotency_key_header() -> Parameter {
    // What the server accepts: visible ASCII, spaces and tabs, at least one visible character,
    // at most 255 characters.
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[\\t -~]*[!-~][\\t -~]*$"))
        .max_length(Some(255))
        .build();
    let mut parameter = Parameter::new("Idempotency-Key");
    parameter.parameter_in = ParameterIn::Header;
    parameter.required = Required::False;
    parameter.description = Some(
        "Makes a retry safe: a 2xx answer is stored for 24 h and replayed (with \
         `Idempotent-Replayed: true`) for the same key, method, path and body."
            .into(),
    );
    parameter.schema = Some(schema.into());
    parameter
}

fn add_response(operation: &mut Operation, status: &str, name: &str) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))));
}

/// The rules every operation follows, from API.md's conventions.
fn apply_conventions(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        SECRET_KEY,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A secret key, `sk_test_…` or `sk_live_…`: every endpoint. Server-side only. \
                     The key's mode picks the data set (test and live never mix).",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        PUBLISHABLE_KEY,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A publishable key, `pk_test_…` or `pk_live_…`: reads of the catalog only \
                     (plans and credit packs); anything else answers 403.",
                ))
                .build(),
        ),
    );
    for (name, description) in SHARED_RESPONSES {
        components
            .responses
            .insert((*name).to_owned(), RefOr::T(error_response(description)));
    }
    for (_, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Put, item.put.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
            (HttpMethod::Patch, item.patch.as_mut()),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                apply_to_operation(method, operation);
            }
        }
    }
}

fn apply_to_operation(method: HttpMethod, operation: &mut Operation) {
    let schemes: Vec<String> = operation
        .security
        .iter()
        .flatten()
        .filter_map(|s| serde_json::to_value(s).ok())
        .filter_map(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
        .flatten()
        .collect();
    let keyed = !schemes.is_empty();
    if keyed {
        add_response(operation, "401", "Unauthorized");
        add_response(operation, "429", "RateLimited");
        if !schemes.iter().any(|s| s == PUBLISHABLE_KEY) {
            add_response(operation, "403", "Forbidden");
        }
    }
    if let Some(body) = operation.request_body.as_mut() {
        if let RefOr::T(body) = body {
            optional_body_is_absent_not_null(body);
        }
        add_response(operation, "400", "BadRequest");
        add_response(operation, "413", "PayloadTooLarge");
    }
    if method == HttpMethod::Post && keyed {
        add_response(operation, "400", "BadRequest");
        add_response(operation, "409", "IdempotencyConflict");
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .push(RefOr::T(idempotency_key_header()));
    }
}

/// utoipa writes an optional body (`Option<T>`) as "T or null"; the server takes an absent body
/// or `{}` but not `null`, so the document says "T, not required".
fn optional_body_is_absent_not_null(body: &mut utoipa::openapi::request_body::RequestBody) {
    use utoipa::openapi::schema::Schema;
    for content in body.content.values_mut() {
        let RefOr::T(content) = content else {
            continue;
        };
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let not_null: Vec<_> = one_of
            .items
            .iter()
            .filter(|item| !matches!(item, RefOr::T(Schema::Object(o)) if o.schema_type == Type::Null.into()))
            .cloned()
            .collect();
        if let [only] = not_null.as_slice() {
            content.schema = Some(only.clone());
            body.required = Some(Required::False);
        }
    }
}
