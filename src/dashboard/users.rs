//! The support view of one user in one mode, and its actions (change or cancel the subscription,
//! grant a pack, revoke a balance). Every action is a form that first shows what it will do and
//! asks for confirmation, then calls the engine as the API does and shows the ledger entries it
//! wrote.

use super::forms::{Errors, Fields};
use super::{
    Ctx, Dashboard, Problem, Section, Signed, SignedForm, bar, field_error, layout, number,
    query_value, when,
};
use crate::actors::user_actor::{Request, View};
use crate::engine::catalog::Catalog;
use crate::engine::event::{EventKind, GrantSource};
use crate::engine::ids::UserId;
use crate::engine::ledger::{LedgerLine, LedgerPage};
use crate::engine::read::Usage;
use crate::engine::user::{Balance, BalanceStatus, Reservation, SubscriptionStatus};
use crate::engine::{Command, Mode, Name, UserKey};
use crate::http::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use std::collections::{HashMap, HashSet};

/// Ledger entries per page of the ledger table.
const PAGE_ENTRIES: usize = 25;
/// Pending reservations per page of their table: a user may hold tens of thousands.
const PENDING_PAGE_ROWS: usize = 50;
/// The scan for balances, pending reservations and the chart reads the ledger in pages of this
/// many entries, at most [`SCAN_PAGES_MAX`] of them; an older entry is not looked at.
const SCAN_PAGE_ENTRIES: usize = 500;
const SCAN_PAGES_MAX: usize = 20;
/// Balances shown that are no longer active (each costs a read of its own).
const ENDED_BALANCES_MAX: usize = 100;
const TEXT_BYTES_MAX: usize = 1000;
const EXTERNAL_REF_BYTES_MAX: usize = 255;

async fn call(s: &Dashboard, key: &UserKey, request: Request) -> Result<View, Problem> {
    Ok(s.engine.user(key.clone(), request).await?)
}

async fn ledger(
    s: &Dashboard,
    key: &UserKey,
    limit: usize,
    starting_after: Option<String>,
) -> Result<LedgerPage, Problem> {
    Ok(s.engine.ledger(key.clone(), limit, starting_after).await?)
}

/// Everything the user page shows.
struct UserData {
    usage: Usage,
    page: LedgerPage,
    /// Active balances first, then ended ones, each group newest first.
    balances: Vec<Balance>,
    pending: Vec<Reservation>,
    consumption: super::chart::Consumption,
    /// Whether the scan stopped before the user's first entry.
    scan_cut: bool,
    has_history: bool,
}

async fn load(s: &Dashboard, key: &UserKey, after: Option<String>) -> Result<UserData, Problem> {
    let usage = match call(s, key, Request::Usage(None)).await? {
        View::Usage(u) => u,
        other => return Err(ApiError::unexpected(&other).into()),
    };
    let page = ledger(s, key, PAGE_ENTRIES, after).await?;
    let mut scan: Vec<LedgerLine> = Vec::new();
    let mut cursor = None;
    let mut scan_cut = false;
    for round in 0.. {
        let part = ledger(s, key, SCAN_PAGE_ENTRIES, cursor).await?;
        cursor = part.entries.last().map(|l| l.event.id.to_string());
        scan.extend(part.entries);
        if !part.has_more {
            break;
        }
        if round + 1 == SCAN_PAGES_MAX {
            scan_cut = true;
            break;
        }
    }
    let now = s.engine.now(&key.app, key.mode)?;
    let mut balances: Vec<Balance> = usage.credits.iter().rev().cloned().collect();
    let active: HashSet<Name> = balances.iter().map(|b| b.id.clone()).collect();
    let ended_ids: Vec<&str> = scan
        .iter()
        .filter_map(|l| match &l.event.kind {
            EventKind::CreditsGranted(g) if !active.contains(&g.balance_id) => {
                Some(g.balance_id.as_str())
            }
            _ => None,
        })
        .take(ENDED_BALANCES_MAX)
        .collect();
    for id in ended_ids {
        if let View::Balance(b) = call(s, key, Request::Balance(id.to_owned())).await? {
            balances.push(b);
        }
    }
    let pending = match call(s, key, Request::Pending).await? {
        View::Pending(pending) => pending,
        other => return Err(ApiError::unexpected(&other).into()),
    };
    Ok(UserData {
        consumption: super::chart::consumption(&scan, now),
        has_history: !scan.is_empty(),
        usage,
        page,
        balances,
        pending,
        scan_cut,
    })
}

fn user_url(ctx: &Ctx, user: &str) -> String {
    format!("{}?user={}", ctx.url("users"), query_value(user))
}

fn lookup_form(ctx: &Ctx, user: &str, errors: &Errors) -> Markup {
    html! {
        form.lookup method="get" action=(ctx.url("users")) role="search" {
            div.field {
                label for="f-user" { "User id" }
                div.inline {
                    input #f-user name="user" type="text" value=(user) required
                        aria-invalid=[errors.get("user").map(|_| "true")];
                    button type="submit" { "Look up" }
                }
                (field_error(errors, "user"))
            }
        }
    }
}

/// `GET /dashboard/{mode}/users?user=…&after=…`.
pub async fn page(
    State(s): State<Dashboard>,
    Signed(session): Signed,
    Path(mode): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    let mode = super::parse_mode(&mode)?;
    let user = query.get("user").map(|u| u.trim()).unwrap_or_default();
    let here = if user.is_empty() {
        "users".to_owned()
    } else {
        format!("users?user={}", query_value(user))
    };
    let ctx = Ctx::new(&s, &session, mode, here, Section::Users);
    if user.is_empty() {
        let content = html! { h1 { "Users" } (lookup_form(&ctx, "", &Errors::default())) };
        return Ok(layout(&ctx, "Users", content).into_response());
    }
    let after = query.get("after").filter(|a| !a.is_empty()).cloned();
    let pending_from = query
        .get("pending")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let view = ListPages {
        after,
        pending_from,
    };
    render_user(&s, &ctx, user, view, &Fields::default(), &Errors::default()).await
}

/// Which pages of the user page's long lists to show.
#[derive(Debug, Default)]
struct ListPages {
    /// The ledger after this entry id.
    after: Option<String>,
    /// Pending reservations from this index.
    pending_from: usize,
}

/// The user page; with `errors`, an action was refused and `typed` is what its form held.
async fn render_user(
    s: &Dashboard,
    ctx: &Ctx,
    user: &str,
    view: ListPages,
    typed: &Fields,
    errors: &Errors,
) -> Result<Response, Problem> {
    let ListPages {
        after,
        pending_from,
    } = view;
    let user_id = match UserId::parse(user) {
        Ok(id) => id,
        Err(e) => {
            let errors = Errors([("user".to_owned(), format!("User id {e}"))].into());
            let content = html! { h1 { "Users" } (lookup_form(ctx, user, &errors)) };
            return Ok((StatusCode::BAD_REQUEST, layout(ctx, "Users", content)).into_response());
        }
    };
    let key = UserKey {
        app: Name::from(&ctx.app),
        mode: ctx.mode,
        user: user_id,
    };
    let data = load(s, &key, after.clone()).await?;
    let catalog = s.engine.catalog(&ctx.app)?;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let content = html! {
        h1 { "User " code { (user) } }
        (lookup_form(ctx, user, &Errors::default()))
        @if !data.has_history {
            p.notice role="status" {
                "No activity for this user in " (ctx.mode.as_str()) " mode yet. "
                "A grant or a subscription below starts one."
            }
        }
        (subscription_section(ctx, user, &data.usage, &catalog, typed, errors))
        (balances_section(ctx, user, &data.balances, &catalog, typed, errors, data.scan_cut))
        (grant_section(ctx, user, &catalog, typed, errors))
        (pending_section(ctx, user, &data.pending, pending_from))
        section aria-labelledby="chart-heading" {
            h2 #chart-heading { "Consumption, last 30 days" }
            (super::chart::render(&data.consumption))
            @if data.scan_cut { p.muted { "Only the newest 10,000 ledger entries were read." } }
        }
        section #ledger aria-labelledby="ledger-heading" {
            h2 #ledger-heading { "Ledger" }
            p.muted { "Newest first." }
            (ledger_table(&data.page.entries, &catalog))
            nav.pager aria-label="Ledger pages" {
                @if after.is_some() {
                    a href=(format!("{}#ledger", user_url(ctx, user))) { "Newest entries" }
                }
                @if data.page.has_more {
                    @if let Some(last) = data.page.entries.last() {
                        a href=(format!("{}&after={}#ledger", user_url(ctx, user), query_value(&last.event.id))) {
                            "Older entries"
                        }
                    }
                }
            }
        }
    };
    Ok((status, layout(ctx, &format!("User {user}"), content)).into_response())
}

fn plan_name(catalog: &Catalog, id: &str) -> String {
    catalog
        .plans
        .get(id)
        .map_or(id.to_owned(), |p| p.name.clone())
}

fn pack_name(catalog: &Catalog, id: &str) -> String {
    catalog
        .packs
        .get(id)
        .map_or(id.to_owned(), |p| p.name.clone())
}

fn subscription_section(
    ctx: &Ctx,
    user: &str,
    usage: &Usage,
    catalog: &Catalog,
    typed: &Fields,
    errors: &Errors,
) -> Markup {
    let sub = usage.subscription.as_ref();
    let active = sub.filter(|s| s.status == SubscriptionStatus::Active);
    let chosen = match typed.get("plan") {
        "" => active.map_or("", |s| s.plan_id.as_str()),
        plan => plan,
    };
    html! {
        section aria-labelledby="sub-heading" {
            h2 #sub-heading { "Subscription" }
            @match sub {
                None => p { "No subscription, ever." },
                Some(s) if s.status == SubscriptionStatus::Canceled => p {
                    "Canceled (was on " strong { (plan_name(catalog, &s.plan_id)) } "). "
                    "Credits stay spendable."
                },
                Some(s) => p {
                    "On " strong.plan-name { (plan_name(catalog, &s.plan_id)) } " (" code { (s.plan_id) } ")"
                    ", current period since " (when(s.current_period_start))
                    ", subscribed since " (when(s.created_at)) "."
                },
            }
            @for c in &usage.counters {
                div.counter {
                    h3 { (c.limit.name) " " span.muted { "(" (c.limit.period.as_str()) ")" } }
                    (bar(c.used.saturating_add(c.reserved), c.limit.limit, format!(
                        "{} used of {} {}{}",
                        number(c.used), number(c.limit.limit), c.limit.unit,
                        if c.reserved > 0 { format!(", {} reserved", number(c.reserved)) } else { String::new() }
                    )))
                    p.muted {
                        @match c.resets_at {
                            Some(t) => { "Resets " (when(t)) },
                            None => "Never resets (lifetime)",
                        }
                    }
                }
            }
            div.actions-row {
                form method="post" action=(ctx.url(&format!("users/{}/subscribe", query_value(user)))) {
                    (ctx.csrf_field())
                    div.field {
                        label for="f-plan" { "Plan" }
                        div.inline {
                            select #f-plan name="plan" {
                                @for plan in catalog.plans.values() {
                                    option value=(plan.id) selected[plan.id == chosen] { (plan.name) " (" (plan.id) ")" }
                                }
                            }
                            button type="submit" {
                                @if active.is_some() { "Change plan" } @else { "Subscribe" }
                            }
                        }
                        (field_error(errors, "subscribe.plan"))
                    }
                }
                @if active.is_some() {
                    form method="post" action=(ctx.url(&format!("users/{}/cancel", query_value(user)))) {
                        (ctx.csrf_field())
                        button.danger type="submit" { "Cancel subscription" }
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn balances_section(
    ctx: &Ctx,
    user: &str,
    balances: &[Balance],
    catalog: &Catalog,
    typed: &Fields,
    errors: &Errors,
    scan_cut: bool,
) -> Markup {
    html! {
        section #balances aria-labelledby="balances-heading" {
            h2 #balances-heading { "Credit balances" }
            @if balances.is_empty() { p.muted { "No balances." } }
            div.grid {
                @for b in balances {
                    article.card.balance.(b.status.as_str()) id=(format!("balance-{}", b.id)) {
                        h3 { (pack_name(catalog, &b.pack_id)) " · " code { (b.pattern.to_string()) } }
                        (bar(b.remaining, b.granted, format!(
                            "{} of {} {} left{}",
                            number(b.remaining), number(b.granted), b.unit,
                            if b.reserved > 0 { format!(", {} reserved", number(b.reserved)) } else { String::new() }
                        )))
                        dl.facts {
                            dt { "Status" } dd.status { (b.status.as_str()) }
                            dt { "Expires" } dd { (b.expires_at.map_or("never".to_owned(), when)) }
                            dt { "Source" } dd { (b.source.as_str()) }
                            dt { "External ref" } dd { code { (b.external_ref) } }
                            @if let Some(notes) = &b.notes { dt { "Notes" } dd { (notes) } }
                            dt { "Granted" } dd { (when(b.created_at)) }
                            dt { "Balance id" } dd { code.small { (b.id) } }
                        }
                        @if b.status == BalanceStatus::Active {
                            @let key = format!("revoke.{}.reason", b.id);
                            @let id = format!("f-reason-{}", b.id);
                            @let typed_reason = if typed.get("balance") == b.id { typed.get("reason") } else { "" };
                            form.revoke method="post" action=(ctx.url(&format!("users/{}/revoke", query_value(user)))) {
                                (ctx.csrf_field())
                                input type="hidden" name="balance" value=(b.id);
                                div.field {
                                    label for=(id) { "Reason for revoking" }
                                    div.inline {
                                        input id=(id) name="reason" type="text" value=(typed_reason)
                                            aria-invalid=[errors.get(&key).map(|_| "true")];
                                        button.danger type="submit" { "Revoke" }
                                    }
                                    (field_error(errors, &key))
                                }
                            }
                        }
                    }
                }
            }
            @if scan_cut { p.muted { "Ended balances older than the newest 10,000 ledger entries are not shown." } }
        }
    }
}

fn grant_section(
    ctx: &Ctx,
    user: &str,
    catalog: &Catalog,
    typed: &Fields,
    errors: &Errors,
) -> Markup {
    let source = match typed.get("source") {
        "" => "grant",
        s => s,
    };
    let external_ref = match typed.get("external_ref") {
        "" => format!("dashboard_{}", ulid::Ulid::new().to_string().to_lowercase()),
        r => r.to_owned(),
    };
    html! {
        section aria-labelledby="grant-heading" {
            h2 #grant-heading { "Grant a credit pack" }
            form.grant method="post" action=(ctx.url(&format!("users/{}/grant", query_value(user)))) {
                (ctx.csrf_field())
                div.field {
                    label for="f-grant-pack" { "Credit pack" }
                    select #f-grant-pack name="pack" {
                        @for pack in catalog.packs.values() {
                            option value=(pack.id) selected[typed.get("pack") == pack.id] {
                                (pack.name) " (" (pack.id) ")" @if pack.archived { " · archived" }
                            }
                        }
                    }
                    (field_error(errors, "grant.pack"))
                }
                div.field {
                    label for="f-grant-source" { "Source" }
                    select #f-grant-source name="source" {
                        option value="grant" selected[source == "grant"] { "grant (a gift)" }
                        option value="adjustment" selected[source == "adjustment"] { "adjustment (a correction)" }
                    }
                    (field_error(errors, "grant.source"))
                }
                div.field {
                    label for="f-grant-ref" { "External reference" }
                    input #f-grant-ref name="external_ref" type="text" value=(external_ref)
                        aria-invalid=[errors.get("grant.external_ref").map(|_| "true")];
                    p.hint { "A grant with the same pack and reference is made only once." }
                    (field_error(errors, "grant.external_ref"))
                }
                div.field {
                    label for="f-grant-notes" { "Notes" }
                    textarea #f-grant-notes name="notes" rows="2" { (typed.get("notes")) }
                    (field_error(errors, "grant.notes"))
                }
                button type="submit" { "Grant" }
            }
        }
    }
}

/// One page of the pending reservations, [`PENDING_PAGE_ROWS`] from `from`.
fn pending_section(ctx: &Ctx, user: &str, pending: &[Reservation], from: usize) -> Markup {
    let from = from.min(pending.len());
    let to = from.saturating_add(PENDING_PAGE_ROWS).min(pending.len());
    let page_url = |at: usize| format!("{}&pending={at}#pending-heading", user_url(ctx, user));
    html! {
        section aria-labelledby="pending-heading" {
            h2 #pending-heading { "Pending reservations" }
            @if pending.is_empty() {
                p.muted { "None." }
            } @else {
                p.muted { (number((from + 1) as u64)) "–" (number(to as u64)) " of " (number(pending.len() as u64)) ", newest first." }
                div.table-wrap {
                    table {
                        thead { tr { th { "Reservation" } th { "Model" } th { "Amount" } th { "Made" } th { "Expires" } } }
                        tbody {
                            @for r in &pending[from..to] {
                                tr {
                                    td { code.small { (r.id) } }
                                    td { code { (r.model.as_str()) } }
                                    td { (number(r.amount)) }
                                    td { (when(r.created_at)) }
                                    td { (when(r.expires_at)) }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="Pending reservation pages" {
                    @if from > 0 {
                        a href=(page_url(from.saturating_sub(PENDING_PAGE_ROWS))) { "Newer reservations" }
                    }
                    @if to < pending.len() {
                        a href=(page_url(to)) { "Older reservations" }
                    }
                }
            }
        }
    }
}

/// The amount an entry moved, where it names one.
fn entry_amount(line: &LedgerLine) -> Option<u64> {
    match &line.event.kind {
        EventKind::CreditsGranted(g) => Some(g.amount),
        EventKind::CreditsRevoked { amount, .. }
        | EventKind::CreditsExpired { amount, .. }
        | EventKind::UsageCommitted { amount, .. } => Some(*amount),
        EventKind::UsageReserved(r) => Some(r.amount),
        EventKind::UsageReleased { .. } | EventKind::UsageExpired { .. } => {
            line.reservation.as_ref().map(|r| r.amount)
        }
        EventKind::SubscriptionUpdated { .. }
        | EventKind::SubscriptionCanceled { .. }
        | EventKind::Noticed(_) => None,
    }
}

fn entry_details(line: &LedgerLine, catalog: &Catalog) -> Markup {
    let model = line.reservation.as_ref().map(|r| r.model.as_str());
    html! {
        @match &line.event.kind {
            EventKind::CreditsGranted(g) => {
                (g.unit) " of " code { (g.pattern.to_string()) } " from " (pack_name(catalog, &g.pack_id))
                " · source " (g.source.as_str()) " · ref " code { (g.external_ref) }
                @if let Some(notes) = &g.notes { " · notes: " (notes) }
                " · " code.small { (g.balance_id) }
            }
            EventKind::CreditsRevoked { balance_id, reason, reservation_id, .. } => {
                @if let Some(reason) = reason { "reason: " strong { (reason) } " · " }
                @if let Some(r) = reservation_id { "came back from " code.small { (r) } " · " }
                code.small { (balance_id) }
            }
            EventKind::CreditsExpired { balance_id, reservation_id, .. } => {
                @if let Some(r) = reservation_id { "came back from " code.small { (r) } " · " }
                code.small { (balance_id) }
            }
            EventKind::UsageReserved(r) => {
                code { (r.model.as_str()) } " · " code.small { (r.reservation_id) }
            }
            EventKind::UsageCommitted { reservation_id, .. }
            | EventKind::UsageExpired { reservation_id } => {
                @if let Some(m) = model { code { (m) } " · " }
                code.small { (reservation_id) }
            }
            EventKind::UsageReleased { reservation_id, error_code } => {
                @if let Some(m) = model { code { (m) } " · " }
                @if let Some(e) = error_code { "error " (e) " · " }
                code.small { (reservation_id) }
            }
            EventKind::SubscriptionUpdated { plan_id, period_start } => {
                "plan " strong { (plan_name(catalog, plan_id)) } " · period from " (when(*period_start))
            }
            EventKind::SubscriptionCanceled { plan_id } => {
                "plan " strong { (plan_name(catalog, plan_id)) }
            }
            // Notices have no ledger line.
            EventKind::Noticed(_) => {}
        }
    }
}

fn ledger_table(lines: &[LedgerLine], catalog: &Catalog) -> Markup {
    html! {
        @if lines.is_empty() {
            p.muted { "No entries." }
        } @else {
            div.table-wrap {
                table.ledger {
                    thead { tr { th { "When" } th { "Type" } th { "Amount" } th { "Details" } } }
                    tbody {
                        @for line in lines {
                            tr data-type=(line.event.kind.type_name()) {
                                td { (when(line.event.at)) }
                                td.type { code { (line.event.kind.type_name()) } }
                                td.num { (entry_amount(line).map(number).unwrap_or_default()) }
                                td { (entry_details(line, catalog)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An action read from its form, checked as the API checks the same request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Subscribe {
        plan_id: String,
    },
    Cancel,
    Grant {
        pack_id: String,
        source: GrantSource,
        external_ref: String,
        notes: Option<String>,
    },
    Revoke {
        balance_id: String,
        reason: String,
    },
}

impl Action {
    pub fn parse(kind: &str, f: &Fields) -> Result<Action, Errors> {
        let error =
            |key: &str, message: &str| Errors([(key.to_owned(), message.to_owned())].into());
        match kind {
            "subscribe" => match f.get("plan") {
                "" => Err(error("subscribe.plan", "Plan: choose one")),
                plan => Ok(Action::Subscribe {
                    plan_id: plan.to_owned(),
                }),
            },
            "cancel" => Ok(Action::Cancel),
            "grant" => {
                let pack_id = f.get("pack").to_owned();
                if pack_id.is_empty() {
                    return Err(error("grant.pack", "Credit pack: choose one"));
                }
                let source = match f.get("source") {
                    "grant" => GrantSource::Grant,
                    "adjustment" => GrantSource::Adjustment,
                    _ => return Err(error("grant.source", "Source must be grant or adjustment")),
                };
                let external_ref = f.get("external_ref").trim().to_owned();
                if external_ref.is_empty() || external_ref.len() > EXTERNAL_REF_BYTES_MAX {
                    return Err(error(
                        "grant.external_ref",
                        "External reference must be 1 to 255 characters",
                    ));
                }
                let notes = f.get("notes").trim();
                if notes.len() > TEXT_BYTES_MAX {
                    return Err(error("grant.notes", "Notes must be at most 1000 bytes"));
                }
                Ok(Action::Grant {
                    pack_id,
                    source,
                    external_ref,
                    notes: (!notes.is_empty()).then(|| notes.to_owned()),
                })
            }
            "revoke" => {
                let balance_id = f.get("balance").to_owned();
                let key = format!("revoke.{balance_id}.reason");
                let reason = f.get("reason").trim();
                if reason.is_empty() {
                    return Err(error(&key, "Reason: say why the balance is revoked"));
                }
                if reason.len() > TEXT_BYTES_MAX {
                    return Err(error(&key, "Reason must be at most 1000 bytes"));
                }
                Ok(Action::Revoke {
                    balance_id,
                    reason: reason.to_owned(),
                })
            }
            _ => Err(error("form", "Unknown action")),
        }
    }

    /// The API command; grants expire with the app's `expiring_notice_days`.
    fn command(&self, expiring_notice_days: u32) -> Command {
        match self.clone() {
            Action::Subscribe { plan_id } => Command::Subscribe {
                plan_id: plan_id.into(),
            },
            Action::Cancel => Command::Cancel,
            Action::Grant {
                pack_id,
                source,
                external_ref,
                notes,
            } => Command::Grant {
                pack_id: pack_id.into(),
                external_ref: external_ref.into(),
                source,
                notes,
                expires_at: None,
                payment_intent: None,
                expiring_notice_days,
            },
            Action::Revoke { balance_id, reason } => Command::Revoke {
                balance_id: balance_id.into(),
                reason: Some(reason),
            },
        }
    }

    /// The form fields that carry this action through the confirmation page.
    fn hidden(&self) -> Vec<(&'static str, String)> {
        match self {
            Action::Subscribe { plan_id } => vec![("plan", plan_id.clone())],
            Action::Cancel => vec![],
            Action::Grant {
                pack_id,
                source,
                external_ref,
                notes,
            } => vec![
                ("pack", pack_id.clone()),
                ("source", source.as_str().to_owned()),
                ("external_ref", external_ref.clone()),
                ("notes", notes.clone().unwrap_or_default()),
            ],
            Action::Revoke { balance_id, reason } => {
                vec![("balance", balance_id.clone()), ("reason", reason.clone())]
            }
        }
    }

    fn path(&self) -> &'static str {
        match self {
            Action::Subscribe { .. } => "subscribe",
            Action::Cancel => "cancel",
            Action::Grant { .. } => "grant",
            Action::Revoke { .. } => "revoke",
        }
    }

    /// Whether a ledger entry is one this action writes.
    pub fn wrote(&self, kind: &EventKind) -> bool {
        match (self, kind) {
            (Action::Subscribe { plan_id }, EventKind::SubscriptionUpdated { plan_id: p, .. }) => {
                p == plan_id
            }
            (Action::Cancel, EventKind::SubscriptionCanceled { .. }) => true,
            (
                Action::Grant {
                    pack_id,
                    external_ref,
                    ..
                },
                EventKind::CreditsGranted(g),
            ) => &g.pack_id == pack_id && &g.external_ref == external_ref,
            (
                Action::Revoke { balance_id, .. },
                EventKind::CreditsRevoked {
                    balance_id: b,
                    reservation_id: None,
                    ..
                },
            ) => b == balance_id,
            _ => false,
        }
    }
}

/// What the confirmation page says the action will do.
fn describe(
    action: &Action,
    user: &str,
    mode: Mode,
    catalog: &Catalog,
    balance: Option<&Balance>,
) -> Markup {
    html! {
        @match action {
            Action::Subscribe { plan_id } => {
                "Move " code { (user) } " to the plan " strong { (plan_name(catalog, plan_id)) }
                " in " (mode.as_str()) " mode? A different plan starts a new period now."
            }
            Action::Cancel => {
                "Cancel the subscription of " code { (user) } " in " (mode.as_str())
                " mode? Their credits stay spendable."
            }
            Action::Grant { pack_id, source, external_ref, notes } => {
                "Grant " strong { (pack_name(catalog, pack_id)) } " to " code { (user) } " in "
                (mode.as_str()) " mode, as a " (source.as_str()) " with reference " code { (external_ref) }
                @if let Some(n) = notes { " and the notes “" (n) "”" } "?"
                @if let Some(pack) = catalog.packs.get(pack_id.as_str()) {
                    ul { @for item in &pack.items {
                        li { (number(item.amount)) " " (item.unit) " of " code { (item.pattern.to_string()) } }
                    } }
                }
            }
            Action::Revoke { reason, .. } => {
                "Revoke the balance "
                @if let Some(b) = balance {
                    strong { (number(b.remaining)) " " (b.unit) " of " (b.pattern.to_string()) }
                    " from " (pack_name(catalog, &b.pack_id))
                }
                " of " code { (user) } " with the reason “" (reason) "”? What is left is taken away."
            }
        }
    }
}

fn confirm_text(action: &Action) -> &'static str {
    match action {
        Action::Subscribe { .. } => "Yes, change plan",
        Action::Cancel => "Yes, cancel subscription",
        Action::Grant { .. } => "Yes, grant",
        Action::Revoke { .. } => "Yes, revoke",
    }
}

async fn act(
    s: Dashboard,
    mode: String,
    user: String,
    form: SignedForm,
    kind: &str,
) -> Result<Response, Problem> {
    let mode = super::parse_mode(&mode)?;
    let here = format!("users?user={}", query_value(&user));
    let ctx = Ctx::new(&s, &form.session, mode, here, Section::Users);
    let action = match Action::parse(kind, &form.fields) {
        Ok(a) => a,
        Err(errors) => {
            return render_user(&s, &ctx, &user, ListPages::default(), &form.fields, &errors).await;
        }
    };
    let user_id = UserId::parse(&user).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "Not accepted",
            format!("User id {e}"),
        )
    })?;
    let key = UserKey {
        app: Name::from(&ctx.app),
        mode,
        user: user_id,
    };
    let catalog = s.engine.catalog(&ctx.app)?;
    let balance = match &action {
        Action::Revoke { balance_id, .. } => {
            match call(&s, &key, Request::Balance(balance_id.clone())).await? {
                View::Balance(b) => Some(b),
                other => return Err(ApiError::unexpected(&other).into()),
            }
        }
        _ => None,
    };
    let back = user_url(&ctx, &user);
    if form.fields.get("confirm") != "yes" {
        let content = html! {
            h1 { "Please confirm" }
            p.confirm-text { (describe(&action, &user, mode, &catalog, balance.as_ref())) }
            form method="post" action=(ctx.url(&format!("users/{}/{}", query_value(&user), action.path()))) {
                (ctx.csrf_field())
                @for (name, value) in action.hidden() {
                    input type="hidden" name=(name) value=(value);
                }
                input type="hidden" name="confirm" value="yes";
                div.actions {
                    button.danger[matches!(action, Action::Revoke { .. } | Action::Cancel)] type="submit" {
                        (confirm_text(&action))
                    }
                    a.button.secondary href=(back) { "No, go back" }
                }
            }
        };
        return Ok(layout(&ctx, "Please confirm", content).into_response());
    }
    let head = ledger(&s, &key, 1, None)
        .await?
        .entries
        .first()
        .map(|l| l.event.id.clone());
    let view = call(
        &s,
        &key,
        Request::Command(action.command(s.expiring_notice_days(&key.app))),
    )
    .await?;
    let recent = ledger(&s, &key, 50, None).await?;
    let written: Vec<LedgerLine> = recent
        .entries
        .into_iter()
        .take_while(|l| Some(&l.event.id) != head.as_ref())
        .filter(|l| action.wrote(&l.event.kind))
        .collect();
    let outcome = match (&action, &view) {
        (_, _) if !written.is_empty() => "Done. The ledger now holds:",
        (Action::Grant { .. }, View::Granted { created: false, .. }) => {
            "Nothing new: this pack was already granted with this reference."
        }
        (Action::Revoke { .. }, _) => "Nothing changed: the balance was not active.",
        (Action::Subscribe { .. }, _) => "Nothing changed: the user is already on this plan.",
        _ => "Nothing changed.",
    };
    let content = html! {
        h1 { "Done" }
        p.confirm-text { (describe(&action, &user, mode, &catalog, balance.as_ref())) }
        p.notice role="status" { (outcome) }
        (ledger_table(&written, &catalog))
        p { a.button href=(back) { "Back to user " (user) } }
    };
    Ok(layout(&ctx, "Done", content).into_response())
}

pub async fn subscribe(
    State(s): State<Dashboard>,
    Path((mode, user)): Path<(String, String)>,
    form: SignedForm,
) -> Result<Response, Problem> {
    act(s, mode, user, form, "subscribe").await
}

pub async fn cancel(
    State(s): State<Dashboard>,
    Path((mode, user)): Path<(String, String)>,
    form: SignedForm,
) -> Result<Response, Problem> {
    act(s, mode, user, form, "cancel").await
}

pub async fn grant(
    State(s): State<Dashboard>,
    Path((mode, user)): Path<(String, String)>,
    form: SignedForm,
) -> Result<Response, Problem> {
    act(s, mode, user, form, "grant").await
}

pub async fn revoke(
    State(s): State<Dashboard>,
    Path((mode, user)): Path<(String, String)>,
    form: SignedForm,
) -> Result<Response, Problem> {
    act(s, mode, user, form, "revoke").await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_grant_form_becomes_the_api_grant_command() {
        let f = fields(&[
            ("pack", "cpk_creator_bundle"),
            ("source", "adjustment"),
            ("external_ref", " support_42 "),
            ("notes", "  sorry for the outage "),
        ]);
        let action = Action::parse("grant", &f).unwrap();
        assert_eq!(
            action.command(3),
            Command::Grant {
                pack_id: "cpk_creator_bundle".into(),
                external_ref: "support_42".into(),
                source: GrantSource::Adjustment,
                notes: Some("sorry for the outage".into()),
                expires_at: None,
                payment_intent: None,
                expiring_notice_days: 3,
            }
        );
        // The confirmation page carries the same fields on.
        let again = Fields(
            action
                .hidden()
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v))
                .collect(),
        );
        assert_eq!(Action::parse("grant", &again).unwrap(), action);
    }

    #[test]
    fn a_purchase_cannot_be_made_up_from_the_dashboard() {
        let f = fields(&[("pack", "p"), ("source", "purchase"), ("external_ref", "r")]);
        let errors = Action::parse("grant", &f).unwrap_err();
        assert!(errors.get("grant.source").is_some());
        let f = fields(&[("pack", "p"), ("source", "grant"), ("external_ref", "")]);
        assert!(
            Action::parse("grant", &f)
                .unwrap_err()
                .get("grant.external_ref")
                .is_some()
        );
    }

    #[test]
    fn a_revoke_needs_a_reason_next_to_its_balance() {
        let f = fields(&[("balance", "bal_1"), ("reason", "   ")]);
        let errors = Action::parse("revoke", &f).unwrap_err();
        assert!(errors.get("revoke.bal_1.reason").is_some());
        let f = fields(&[("balance", "bal_1"), ("reason", "chargeback")]);
        let action = Action::parse("revoke", &f).unwrap();
        assert_eq!(
            action.command(3),
            Command::Revoke {
                balance_id: "bal_1".into(),
                reason: Some("chargeback".into())
            }
        );
    }

    #[test]
    fn only_the_entries_an_action_writes_are_shown_as_its_result() {
        let revoke = Action::Revoke {
            balance_id: "bal_1".into(),
            reason: "r".into(),
        };
        let revoked = |balance: &str, reservation: Option<&str>| EventKind::CreditsRevoked {
            balance_id: balance.into(),
            amount: 1,
            reason: None,
            reservation_id: reservation.map(Name::from),
        };
        assert!(revoke.wrote(&revoked("bal_1", None)));
        assert!(!revoke.wrote(&revoked("bal_2", None)));
        assert!(!revoke.wrote(&revoked("bal_1", Some("res_1"))));
        let cancel = Action::Cancel;
        assert!(cancel.wrote(&EventKind::SubscriptionCanceled {
            plan_id: "pro".into()
        }));
        assert!(!cancel.wrote(&revoked("bal_1", None)));
    }

    #[test]
    fn user_ids_are_escaped_in_links() {
        assert_eq!(query_value("u_1.a-b"), "u_1.a-b");
        assert_eq!(query_value("a@b:c"), "a%40b%3Ac");
    }
}
