//! Webhooks out: `/v1/webhook-endpoints` and `GET /v1/events` (API.md, "Webhooks out"). The
//! endpoints belong to the key's app and mode; delivery itself runs in `crate::webhooks`, never
//! here: a handler only reads or changes the registry.

use super::error::ApiError;
use super::extract::{Body, Path, Secret};
use super::openapi::schemas::{self as doc, Error};
use crate::engine::notice::NoticeType;
use crate::persistence::history::EVENTS_KEEP_MS;
use crate::state::AppState;
use crate::views;
use crate::webhooks::endpoint::{self, Endpoint, EventFilter};
use crate::webhooks::registry::EndpointPatch;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use std::collections::HashMap;
use utoipa::ToSchema;

/// An endpoint as API.md shows it; the secret only where it says so.
fn endpoint_view(e: &Endpoint, with_secret: bool) -> Value {
    let mut view = json!({
        "id": e.id,
        "url": e.url,
        "events": e.events.names(),
        "description": e.description,
        "enabled": e.enabled,
        "createdAt": e.created_at.rfc3339(),
    });
    if with_secret {
        view["secret"] = Value::String(e.secret.clone());
    }
    view
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://example.com/vevee-events", "events": ["credits.low", "credits.depleted"],
    "description": "Top-up prompts"}))]
pub struct CreateEndpointBody {
    /// `http://` or `https://` with a host, at most 2048 characters.
    #[schema(max_length = 2048)]
    url: String,
    /// Event types, or `["*"]` for every type.
    #[schema(value_type = Vec<doc::EventTypeOrAll>, min_items = 1)]
    events: Vec<String>,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    description: Option<String>,
}

/// `Some(None)` for an explicit `null`, so that PATCH can clear a field.
fn explicit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true}))]
pub struct UpdateEndpointBody {
    #[serde(default)]
    #[schema(max_length = 2048)]
    url: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<doc::EventTypeOrAll>>, min_items = 1)]
    events: Option<Vec<String>>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>, max_length = 500)]
    description: Option<Option<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

fn parse_events(events: Vec<String>) -> Result<EventFilter, ApiError> {
    Ok(EventFilter::parse(&events)?)
}

#[utoipa::path(post, path = "/v1/webhook-endpoints", operation_id = "createWebhookEndpoint",
    tag = "Webhooks", summary = "Add a webhook endpoint",
    description = "The endpoint receives the key's mode's events of the listed types, signed per \
        Standard Webhooks with its `secret`, which this answer shows once. At most 16 endpoints \
        per app and mode.",
    security(("secretKey" = [])), request_body = CreateEndpointBody,
    responses(
        (status = 200, description = "The endpoint, with its secret", body = doc::WebhookEndpointWithSecret),
        (status = 400, description = "Invalid `url`, `events` or `description` (`parameter_invalid`)", body = Error),
        (status = 409, description = "16 endpoints already (`too_many_endpoints`)", body = Error)))]
pub async fn create_endpoint(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Body(body): Body<CreateEndpointBody>,
) -> Result<Json<Value>, ApiError> {
    let url = endpoint::parse_url(&body.url)?;
    let events = parse_events(body.events)?;
    let description = endpoint::parse_description(body.description)?;
    let clock = s.engine.clock(&caller.app)?;
    let now = || clock.now(caller.mode);
    let created = s
        .webhooks
        .registry
        .create(&caller.app, caller.mode, url, events, description, now)
        .await?;
    Ok(Json(endpoint_view(&created, true)))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints", operation_id = "listWebhookEndpoints",
    tag = "Webhooks", summary = "The key's mode's webhook endpoints", security(("secretKey" = [])),
    responses((status = 200, description = "Oldest first, without secrets", body = doc::WebhookEndpointList)))]
pub async fn list_endpoints(
    State(s): State<AppState>,
    Secret(caller): Secret,
) -> Result<Json<Value>, ApiError> {
    let data: Vec<Value> = s
        .webhooks
        .endpoints(&caller.app, caller.mode)
        .iter()
        .map(|e| endpoint_view(e, false))
        .collect();
    Ok(Json(json!({"data": data})))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", operation_id = "getWebhookEndpoint",
    tag = "Webhooks", summary = "One webhook endpoint", security(("secretKey" = [])),
    params(("id" = String, Path, description = "The endpoint's id, `we_…`")),
    responses(
        (status = 200, description = "The endpoint, without its secret", body = doc::WebhookEndpoint),
        (status = 404, description = "No such endpoint in this mode (`endpoint_not_found`)", body = Error)))]
pub async fn get_endpoint(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = s.webhooks.registry.get(&caller.app, caller.mode, &id)?;
    Ok(Json(endpoint_view(&found, false)))
}

#[utoipa::path(patch, path = "/v1/webhook-endpoints/{id}", operation_id = "updateWebhookEndpoint",
    tag = "Webhooks", summary = "Change a webhook endpoint",
    description = "Only the fields sent change. `enabled: false` pauses the endpoint: nothing \
        is sent to it, and its pending deliveries and the events made meanwhile wait for it (at \
        most 10,000; beyond, they are dropped). `enabled: true` turns it back on, also one the \
        server disabled (failing too long, outbox full): what waited is sent, and new \
        events again.",
    security(("secretKey" = [])),
    request_body(content = Option<UpdateEndpointBody>, description = "The fields to change; none (or no body) changes nothing"),
    params(("id" = String, Path, description = "The endpoint's id, `we_…`")),
    responses(
        (status = 200, description = "The endpoint, without its secret", body = doc::WebhookEndpoint),
        (status = 400, description = "Invalid `url`, `events` or `description` (`parameter_invalid`)", body = Error),
        (status = 404, description = "No such endpoint in this mode (`endpoint_not_found`)", body = Error)))]
pub async fn update_endpoint(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(body): Body<UpdateEndpointBody>,
) -> Result<Json<Value>, ApiError> {
    let patch = EndpointPatch {
        url: body.url.as_deref().map(endpoint::parse_url).transpose()?,
        events: body.events.map(parse_events).transpose()?,
        description: body
            .description
            .map(endpoint::parse_description)
            .transpose()?,
        enabled: body.enabled,
    };
    let updated = s
        .webhooks
        .registry
        .update(&caller.app, caller.mode, &id, patch)
        .await?;
    Ok(Json(endpoint_view(&updated, false)))
}

#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", operation_id = "deleteWebhookEndpoint",
    tag = "Webhooks", summary = "Delete a webhook endpoint",
    description = "Its pending deliveries are dropped; the events stay in `GET /v1/events`.",
    security(("secretKey" = [])),
    params(("id" = String, Path, description = "The endpoint's id, `we_…`")),
    responses(
        (status = 200, description = "Deleted", body = doc::WebhookEndpointDeleted),
        (status = 404, description = "No such endpoint in this mode (`endpoint_not_found`)", body = Error)))]
pub async fn delete_endpoint(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.webhooks
        .registry
        .delete(&caller.app, caller.mode, &id)
        .await?;
    Ok(Json(json!({"id": id, "deleted": true})))
}

/// Rotation takes no parameters; an empty object is the only body it accepts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {}

#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/rotate-secret", operation_id = "rotateWebhookSecret",
    tag = "Webhooks", summary = "Give an endpoint a new secret",
    description = "For 24 h both the new and the previous secret sign every delivery (two \
        space-separated signatures), so the receiver can switch without losing an event.",
    security(("secretKey" = [])), request_body(content = Option<RotateBody>, description = "Empty, or `{}`"),
    params(("id" = String, Path, description = "The endpoint's id, `we_…`")),
    responses(
        (status = 200, description = "The endpoint, with its new secret", body = doc::WebhookEndpointWithSecret),
        (status = 404, description = "No such endpoint in this mode (`endpoint_not_found`)", body = Error)))]
pub async fn rotate_secret(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(RotateBody {}): Body<RotateBody>,
) -> Result<Json<Value>, ApiError> {
    let now_ms = crate::actors::clock::real_now().0;
    let rotated = s
        .webhooks
        .registry
        .rotate(&caller.app, caller.mode, &id, now_ms)
        .await?;
    Ok(Json(endpoint_view(&rotated, true)))
}

const EVENTS_PAGE_MAX: usize = 100;
const EVENTS_PAGE_DEFAULT: usize = 50;

#[utoipa::path(get, path = "/v1/events", operation_id = "listEvents",
    tag = "Webhooks", summary = "The key's mode's events, newest first",
    description = "The events of the last 30 days, the same objects the webhooks deliver: for \
        apps that poll instead of receiving.",
    security(("secretKey" = [])),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 50 by default"),
        ("startingAfter" = Option<String>, Query, description = "The id of the last event of the previous page"),
        ("type" = Option<doc::EventType>, Query, description = "Only events of this type")),
    responses(
        (status = 200, description = "A page of events", body = doc::EventPage),
        (status = 400, description = "Invalid `limit` or `type`, or an unknown `startingAfter` (`unknown_cursor`)", body = Error)))]
pub async fn list_events(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = match query.get("limit") {
        None => EVENTS_PAGE_DEFAULT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=EVENTS_PAGE_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    "must be an integer from 1 to 100",
                ));
            }
        },
    };
    let kind = query
        .get("type")
        .map(|t| {
            NoticeType::parse(t).ok_or_else(|| {
                ApiError::invalid("type", format_args!("'{t}' is not an event type"))
            })
        })
        .transpose()?;
    let starting_after = query.get("startingAfter").cloned();
    // Events are written to the history just before their journal batch is flushed: wait for
    // that flush, so the page shows nothing a crash could take back.
    s.engine.flush().await?;
    let since = s
        .engine
        .now(&caller.app, caller.mode)?
        .plus_ms(-EVENTS_KEEP_MS);
    let history = s.webhooks.history.clone();
    let (app, mode) = (caller.app.clone(), caller.mode);
    let cursor = starting_after.clone();
    let page = tokio::task::spawn_blocking(move || {
        let events = history.events_newest_first(&app, mode, cursor.as_deref())?;
        let mut data = Vec::new();
        let mut has_more = false;
        for item in events {
            let Ok(stored) = item else {
                return Some(Err(()));
            };
            if stored.notice.at < since {
                break;
            }
            if kind.is_some_and(|k| k != stored.notice.notice.kind) {
                continue;
            }
            if data.len() == limit {
                has_more = true;
                break;
            }
            data.push(views::event(mode, &stored.user, &stored.notice));
        }
        Some(Ok((data, has_more)))
    })
    .await
    .map_err(|_| internal())?;
    match page {
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_cursor",
            format!(
                "no event with id '{}' in this mode's last 30 days",
                starting_after.unwrap_or_default()
            ),
        )
        .param("startingAfter")),
        Some(Err(())) => {
            tracing::error!("reading the events failed");
            Err(internal())
        }
        Some(Ok((data, has_more))) => Ok(Json(json!({"data": data, "hasMore": has_more}))),
    }
}

fn internal() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal error",
    )
}
