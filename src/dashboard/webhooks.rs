//! The webhooks page of one mode: the app's endpoints, their recent deliveries, and the actions
//! (add, enable, disable, delete, resend). It changes endpoints through the same registry and
//! parse functions as `/v1/webhook-endpoints`, so the dashboard cannot accept what the API refuses.

use super::{Ctx, Dashboard, Problem, Section, Signed, SignedForm, layout, parse_mode, when};
use crate::engine::Ts;
use crate::engine::notice::NoticeType;
use crate::http::error::ApiError;
use crate::webhooks::delivery::{OUTBOX_ROWS_PER_ENDPOINT_MAX, Outcome};
use crate::webhooks::endpoint::{self, Endpoint, EventFilter};
use crate::webhooks::registry::EndpointPatch;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use std::collections::HashMap;

fn problem(e: impl Into<ApiError>) -> Problem {
    e.into().into()
}

fn ms_text(ms: i64) -> String {
    when(Ts(ms))
}

fn endpoint_card(s: &Dashboard, ctx: &Ctx, e: &Endpoint) -> Markup {
    let recent = s.webhooks.activity.recent(&e.id);
    let base = format!("webhooks/{}", e.id);
    html! {
        article.card id=(e.id) {
            h3 { (e.url) }
            p.muted {
                code { (e.id) } " · "
                @if e.enabled { "enabled" } @else { strong { "disabled" } }
                " · events: " (e.events.names().join(", "))
                @if let Some(d) = &e.description { " · " (d) }
            }
            @if let Some(reason) = &e.disabled_reason {
                p.error role="alert" { "The server disabled this endpoint: " (reason) "." }
            }
            @if !e.enabled {
                p.muted {
                    "Nothing is sent to it while it is disabled. Its pending deliveries and the \
                     events made since wait for it (up to " (OUTBOX_ROWS_PER_ENDPOINT_MAX) "; \
                     beyond, they are dropped); enabling it sends them."
                }
            }
            div.actions {
                form method="post" action=(ctx.url(&format!("{base}/{}", if e.enabled { "disable" } else { "enable" }))) {
                    (ctx.csrf_field())
                    button.secondary type="submit" { @if e.enabled { "Disable" } @else { "Enable" } }
                }
                a.button.danger href=(ctx.url(&format!("{base}/delete"))) { "Delete…" }
            }
            details open[!recent.is_empty()] {
                summary { "Recent deliveries (" (recent.len()) ")" }
                @if recent.is_empty() {
                    p.muted { "No attempts yet." }
                } @else {
                    table {
                        thead { tr {
                            th { "When" } th { "Event" } th { "Type" } th { "Status" }
                            th { "Response" } th { "Attempts" } th { "Next retry" } th {}
                        } }
                        tbody {
                            @for a in &recent {
                                tr {
                                    td { (ms_text(a.at_ms)) }
                                    td { code { (a.event_id) } }
                                    td { (a.kind.as_str()) }
                                    td { (a.outcome.as_str()) }
                                    td {
                                        @if let Some(code) = a.status { (code) }
                                        @else if let Some(error) = &a.error { (error) }
                                    }
                                    td { (a.attempts) }
                                    td { @if let Some(next) = a.next_at_ms { (ms_text(next)) } @else { "—" } }
                                    td {
                                        @if e.enabled && a.outcome != Outcome::Retrying {
                                            form method="post" action=(ctx.url(&format!("{base}/resend"))) {
                                                (ctx.csrf_field())
                                                input type="hidden" name="event_id" value=(a.event_id);
                                                button.secondary.small type="submit" { "Resend" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn new_endpoint_form(ctx: &Ctx, url: &str, error: Option<&str>) -> Markup {
    html! {
        form #new-endpoint method="post" action=(ctx.url("webhooks/new")) {
            (ctx.csrf_field())
            @if let Some(error) = error { p.error role="alert" { (error) } }
            div.field {
                label for="f-url" { "URL" }
                input #f-url name="url" type="text" value=(url) placeholder="https://example.com/vevee-events";
            }
            fieldset.field {
                legend { "Events" }
                div.radio {
                    input #f-ev-all type="checkbox" name="events" value="*" checked;
                    label for="f-ev-all" { "Every event (*)" }
                }
                @for t in NoticeType::ALL {
                    div.radio {
                        input id=(format!("f-ev-{}", t.as_str())) type="checkbox" name="events" value=(t.as_str());
                        label for=(format!("f-ev-{}", t.as_str())) { (t.as_str()) }
                    }
                }
            }
            div.field {
                label for="f-description" { "Description (optional)" }
                input #f-description name="description" type="text";
            }
            div.actions { button type="submit" { "Add endpoint" } }
        }
    }
}

fn page_markup(
    s: &Dashboard,
    ctx: &Ctx,
    notice: Option<&str>,
    secret: Option<&Endpoint>,
    form: Markup,
) -> Markup {
    let endpoints = s.webhooks.endpoints(&ctx.app, ctx.mode);
    let disabled: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| e.disabled_reason.is_some())
        .collect();
    let content = html! {
        h1 { "Webhooks" }
        p.muted {
            "Signed POSTs (Standard Webhooks) of this mode's events to your endpoints. "
            (ctx.mode.as_str()) "-mode events go to " (ctx.mode.as_str()) "-mode endpoints only."
        }
        @if let Some(notice) = notice { p.notice role="status" { (notice) } }
        @for e in &disabled {
            p.error role="alert" {
                "Endpoint " (e.url) " was disabled: " (e.disabled_reason.as_deref().unwrap_or("")) "."
            }
        }
        @if let Some(e) = secret {
            div.notice role="status" {
                p { "Signing secret of " (e.url) ". It is shown only now: copy it to your receiver." }
                p { code #endpoint-secret { (e.secret) } }
            }
        }
        section aria-labelledby="endpoints-heading" {
            h2 #endpoints-heading { "Endpoints (" (endpoints.len()) " of " (endpoint::ENDPOINTS_PER_SCOPE_MAX) ")" }
            @if endpoints.is_empty() { p.muted { "No endpoints yet." } }
            @for e in &endpoints { (endpoint_card(s, ctx, e)) }
        }
        section aria-labelledby="new-heading" {
            h2 #new-heading { "New endpoint" }
            (form)
        }
    };
    layout(ctx, "Webhooks", content)
}

fn ctx_for(
    s: &Dashboard,
    session: &super::auth::Session,
    mode: &str,
    here: &str,
) -> Result<Ctx, Problem> {
    Ok(Ctx::new(
        s,
        session,
        parse_mode(mode)?,
        here.into(),
        Section::Webhooks,
    ))
}

/// `GET /dashboard/{mode}/webhooks`.
pub async fn page(
    State(s): State<Dashboard>,
    Signed(session): Signed,
    Path(mode): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Markup, Problem> {
    let ctx = ctx_for(&s, &session, &mode, "webhooks")?;
    let notice = query.get("done").map(String::as_str);
    Ok(page_markup(
        &s,
        &ctx,
        notice,
        None,
        new_endpoint_form(&ctx, "", None),
    ))
}

fn done(ctx: &Ctx, what: &str) -> Response {
    let query = super::query_value(what);
    Redirect::to(&format!("{}?done={query}", ctx.url("webhooks"))).into_response()
}

/// `POST /dashboard/{mode}/webhooks/new`: the answer shows the secret once, so it is a page,
/// not a redirect (the secret must not sit in a URL or the history).
pub async fn create(
    State(s): State<Dashboard>,
    Path(mode): Path<String>,
    form: SignedForm,
) -> Result<Response, Problem> {
    let ctx = ctx_for(&s, &form.session, &mode, "webhooks")?;
    let url = form.fields.get("url").trim().to_owned();
    let events: Vec<String> = form
        .fields
        .all("events")
        .iter()
        .map(|e| e.to_string())
        .collect();
    // "Every event" checked with some types means every event.
    let events = if events.iter().any(|e| e == "*") {
        vec!["*".to_owned()]
    } else {
        events
    };
    let description =
        Some(form.fields.get("description").trim().to_owned()).filter(|d| !d.is_empty());
    let parsed = endpoint::parse_url(&url).and_then(|url| {
        Ok((
            url,
            EventFilter::parse(&events)?,
            endpoint::parse_description(description)?,
        ))
    });
    let refuse = |message: String| {
        let markup = page_markup(
            &s,
            &ctx,
            None,
            None,
            new_endpoint_form(&ctx, &url, Some(&message)),
        );
        Ok((StatusCode::BAD_REQUEST, markup).into_response())
    };
    let (parsed_url, filter, description) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return refuse(e.to_string()),
    };
    let clock = s.engine.clock(&ctx.app)?;
    let now = || clock.now(ctx.mode);
    match s
        .webhooks
        .registry
        .create(&ctx.app, ctx.mode, parsed_url, filter, description, now)
        .await
    {
        Ok(created) => Ok(page_markup(
            &s,
            &ctx,
            Some("Endpoint added."),
            Some(&created),
            new_endpoint_form(&ctx, "", None),
        )
        .into_response()),
        Err(e) => refuse(ApiError::from(e).message),
    }
}

async fn set_enabled(
    s: &Dashboard,
    ctx: &Ctx,
    id: &str,
    enabled: bool,
) -> Result<Response, Problem> {
    let patch = EndpointPatch {
        enabled: Some(enabled),
        ..EndpointPatch::default()
    };
    let e = s
        .webhooks
        .registry
        .update(&ctx.app, ctx.mode, id, patch)
        .await
        .map_err(problem)?;
    Ok(done(
        ctx,
        &format!("{} {}", e.url, if enabled { "enabled" } else { "disabled" }),
    ))
}

pub async fn enable(
    State(s): State<Dashboard>,
    Path((mode, id)): Path<(String, String)>,
    form: SignedForm,
) -> Result<Response, Problem> {
    let ctx = ctx_for(&s, &form.session, &mode, "webhooks")?;
    set_enabled(&s, &ctx, &id, true).await
}

pub async fn disable(
    State(s): State<Dashboard>,
    Path((mode, id)): Path<(String, String)>,
    form: SignedForm,
) -> Result<Response, Problem> {
    let ctx = ctx_for(&s, &form.session, &mode, "webhooks")?;
    set_enabled(&s, &ctx, &id, false).await
}

/// `GET …/delete`: what deleting does, and a confirmation.
pub async fn delete_page(
    State(s): State<Dashboard>,
    Signed(session): Signed,
    Path((mode, id)): Path<(String, String)>,
) -> Result<Markup, Problem> {
    let ctx = ctx_for(&s, &session, &mode, "webhooks")?;
    let e = s
        .webhooks
        .registry
        .get(&ctx.app, ctx.mode, &id)
        .map_err(problem)?;
    let content = html! {
        h1 { "Delete the endpoint " (e.url) "?" }
        p { "Its pending deliveries are dropped and it receives nothing more. The events stay \
             available from GET /v1/events for 30 days. This cannot be undone." }
        form method="post" action=(ctx.url(&format!("webhooks/{id}/delete"))) {
            (ctx.csrf_field())
            div.actions {
                button.danger type="submit" { "Yes, delete it" }
                a.button.secondary href=(ctx.url("webhooks")) { "No, keep it" }
            }
        }
    };
    Ok(layout(&ctx, "Delete webhook endpoint", content))
}

pub async fn delete(
    State(s): State<Dashboard>,
    Path((mode, id)): Path<(String, String)>,
    form: SignedForm,
) -> Result<Response, Problem> {
    let ctx = ctx_for(&s, &form.session, &mode, "webhooks")?;
    let e = s
        .webhooks
        .registry
        .get(&ctx.app, ctx.mode, &id)
        .map_err(problem)?;
    s.webhooks
        .registry
        .delete(&ctx.app, ctx.mode, &id)
        .await
        .map_err(problem)?;
    Ok(done(&ctx, &format!("{} deleted", e.url)))
}

/// `POST …/resend`: the event goes to the endpoint again now, with the same `webhook-id`.
pub async fn resend(
    State(s): State<Dashboard>,
    Path((mode, id)): Path<(String, String)>,
    form: SignedForm,
) -> Result<Response, Problem> {
    let ctx = ctx_for(&s, &form.session, &mode, "webhooks")?;
    let e = s
        .webhooks
        .registry
        .get(&ctx.app, ctx.mode, &id)
        .map_err(problem)?;
    let event = form.fields.get("event_id").to_owned();
    s.webhooks
        .resend(&e, &event)
        .await
        .map_err(|error| Problem::new(StatusCode::CONFLICT, "Not resent", error.to_string()))?;
    Ok(done(&ctx, &format!("{event} queued for {}", e.url)))
}
