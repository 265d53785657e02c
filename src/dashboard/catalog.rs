//! The Plans & Credit Packs page and its forms. The catalog is one per app, shared by both modes;
//! the pages still carry the mode so the switch stays where the operator is.

use super::forms::{self, Errors, Op, PackForm, PlanForm};
use super::{
    Ctx, Dashboard, Problem, Section, Signed, SignedForm, field_error, layout, number, parse_mode,
};
use crate::engine::catalog::{CatalogCommand, Pack, Plan, Price};
use crate::engine::catalog_input::{pack_from, plan_from};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use std::collections::HashMap;

fn price_text(price: &Price) -> String {
    if price.amount == 0 {
        return "Free".into();
    }
    let amount = forms::format_money(price.amount);
    let money = if price.currency == "usd" {
        format!("${amount}")
    } else {
        format!("{amount} {}", price.currency.to_uppercase())
    };
    match price.interval {
        Some(i) => format!("{money} / {}", i.as_str()),
        None => money,
    }
}

fn expiry_text(days: Option<u32>) -> String {
    match days {
        None => "Never expires".into(),
        Some(1) => "Expires 1 day after the grant".into(),
        Some(d) => format!("Expires {d} days after the grant"),
    }
}

fn plan_card(ctx: &Ctx, plan: &Plan, subscribers: i64) -> Markup {
    html! {
        article.card.plan id=(format!("plan-{}", plan.id)) {
            h3 { (plan.name) " " span.muted { "(" (plan.id) ")" } }
            p.price { (price_text(&plan.price)) }
            p { "Active subscribers (test and live): " strong.subscribers { (subscribers) } }
            @if plan.limits.is_empty() {
                p.muted { "No limits: this plan covers no model." }
            } @else {
                table.limits {
                    caption.visually-hidden { "Limits of " (plan.name) }
                    thead { tr { th { "Limit" } th { "Covers" } th { "Amount" } th { "Period" } } }
                    tbody {
                        @for l in &plan.limits {
                            tr {
                                td { (l.name) }
                                td { @for (i, p) in l.patterns.iter().enumerate() {
                                    @if i > 0 { ", " } code { (p.to_string()) }
                                } }
                                td { (number(l.limit)) " " (l.unit) }
                                td { (l.period.as_str()) }
                            }
                        }
                    }
                }
            }
            a.button.secondary href=(ctx.url(&format!("plans/{}/edit", plan.id))) {
                "Edit plan " span.visually-hidden { (plan.name) }
            }
        }
    }
}

fn pack_card(ctx: &Ctx, pack: &Pack) -> Markup {
    html! {
        article.card.pack id=(format!("pack-{}", pack.id)) {
            h3 { (pack.name) " " span.muted { "(" (pack.id) ")" } }
            p.price { (price_text(&pack.price)) }
            p { (expiry_text(pack.expires_in_days)) }
            @if let Some(stripe) = &pack.stripe_price_id {
                p { "Stripe price: " code { (stripe) } }
            }
            ul.items {
                @for item in &pack.items {
                    li { (number(item.amount)) " " (item.unit) " of " code { (item.pattern.to_string()) } }
                }
            }
            @if pack.archived {
                p.badge { "Archived: not for sale, can still be granted" }
            } @else {
                div.actions {
                    a.button.secondary href=(ctx.url(&format!("packs/{}/edit", pack.id))) {
                        "Edit credit pack " span.visually-hidden { (pack.name) }
                    }
                    a.button.danger href=(ctx.url(&format!("packs/{}/archive", pack.id))) {
                        "Archive " span.visually-hidden { (pack.name) }
                    }
                }
            }
        }
    }
}

/// `GET /dashboard/{mode}/plans`: the plans grid, then the credit packs.
pub async fn page(
    State(s): State<Dashboard>,
    Signed(session): Signed,
    Path(mode): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Markup, Problem> {
    let mode = parse_mode(&mode)?;
    let ctx = Ctx::new(&s, &session, mode, "plans".into(), Section::Catalog);
    let catalog = s.engine.catalog(&session.app)?;
    let (live, archived): (Vec<_>, Vec<_>) = catalog.packs.values().partition(|p| !p.archived);
    let notice = query.get("saved").map(String::as_str);
    let content = html! {
        h1 { "Plans & Credit Packs" }
        p.muted { "The catalog is shared by test and live mode." }
        @if let Some(notice) = notice {
            p.notice role="status" { "Saved: " (notice) }
        }
        section aria-labelledby="plans-heading" {
            div.section-head {
                h2 #plans-heading { "Plans" }
                a.button href=(ctx.url("plans/new")) { "New plan" }
            }
            div.grid {
                @for plan in catalog.plans.values() {
                    (plan_card(&ctx, plan, s.engine.subscribers(&session.app, &plan.id)))
                }
                @if catalog.plans.is_empty() { p.muted { "No plans yet." } }
            }
        }
        section #packs aria-labelledby="packs-heading" {
            div.section-head {
                h2 #packs-heading { "Credit packs" }
                a.button href=(ctx.url("packs/new")) { "New credit pack" }
            }
            div.grid {
                @for pack in &live { (pack_card(&ctx, pack)) }
                @if live.is_empty() { p.muted { "No credit packs for sale." } }
            }
            @if !archived.is_empty() {
                details {
                    summary { "Archived credit packs (" (archived.len()) ")" }
                    div.grid { @for pack in &archived { (pack_card(&ctx, pack)) } }
                }
            }
        }
    };
    Ok(layout(&ctx, "Plans & Credit Packs", content))
}

fn text_input(
    key: &str,
    label: &str,
    value: &str,
    errors: &Errors,
    extra: Markup,
    readonly: bool,
) -> Markup {
    named_input(key, key, label, value, errors, extra, readonly)
}

/// An input whose error key differs from its name: row inputs share one name per column
/// (`item_match`, …) so that the rows come back in order.
fn named_input(
    key: &str,
    name: &str,
    label: &str,
    value: &str,
    errors: &Errors,
    extra: Markup,
    readonly: bool,
) -> Markup {
    let id = format!("f-{}", key.replace('.', "-"));
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) name=(name) type="text" value=(value) readonly[readonly]
                aria-invalid=[errors.get(key).map(|_| "true")]
                aria-describedby=[errors.get(key).map(|_| format!("{}-error", key.replace('.', "-")))];
            (extra)
            (field_error(errors, key))
        }
    }
}

fn hint(text: &str) -> Markup {
    html! { p.hint { (text) } }
}

/// The hidden first button, so that Enter in a field saves rather than removing a row.
fn default_submit() -> Markup {
    html! { button.default-submit type="submit" name="op" value="save" tabindex="-1" aria-hidden="true" { "Save" } }
}

/// A row button that works as a plain submit, and with htmx swaps only the form.
fn row_button(form_id: &str, action: &str, op: &str, text: Markup, class: &str) -> Markup {
    html! {
        button type="submit" name="op" value=(op) class=(class)
            hx-post=(action) hx-target=(format!("#{form_id}")) hx-select=(format!("#{form_id}"))
            hx-swap="outerHTML" { (text) }
    }
}

fn pack_form(ctx: &Ctx, form: &PackForm, errors: &Errors, editing: bool) -> Markup {
    let action = if editing {
        ctx.url(&format!("packs/{}/edit", form.id))
    } else {
        ctx.url("packs/new")
    };
    let never = form.expires != "days";
    html! {
        form #pack-form method="post" action=(action) novalidate {
            (default_submit())
            (ctx.csrf_field())
            @if let Some(message) = errors.get("form") {
                p.error role="alert" { (message) }
            }
            (text_input("name", "Name", &form.name, errors, hint("Shown to buyers, e.g. Creator Bundle"), false))
            (text_input("id", "Id", &form.id, errors,
                hint(if editing { "The id cannot change." } else { "Used by the API, e.g. cpk_creator_bundle" }), editing))
            div.row2 {
                (text_input("price", "Price", &form.price, errors, hint("In the currency's main unit, e.g. 15.00"), false))
                (text_input("currency", "Currency", &form.currency, errors, hint("Three letters, e.g. usd"), false))
            }
            fieldset.field {
                legend { "Default expiry" }
                div.radio {
                    input #f-expires-never type="radio" name="expires" value="never" checked[never];
                    label for="f-expires-never" { "Never" }
                }
                div.radio {
                    input #f-expires-days type="radio" name="expires" value="days" checked[!never];
                    label for="f-expires-days" { "After a number of days" }
                }
                label for="f-expires_days" { "Days after the grant" }
                input #f-expires_days name="expires_days" type="text" inputmode="numeric"
                    value=(form.expires_days) aria-invalid=[errors.get("expires_days").map(|_| "true")];
                (field_error(errors, "expires_days"))
            }
            (text_input("stripe_price_id", "Stripe price id (optional)", &form.stripe_price_id, errors,
                hint("e.g. price_123; leave empty if the pack is not sold through Stripe Checkout"), false))
            fieldset.items {
                legend { "Items" }
                (hint("Each item gives an exact amount of one model (image.dall-e-3) or a whole category (image.*)."))
                (field_error(errors, "items"))
                @for (i, item) in form.items.iter().enumerate() {
                    div.item-row data-row=(i) {
                        p.row-title { "Item " (i + 1) }
                        (named_input(&format!("item.{i}.match"), "item_match", "Model or category", &item.pattern, errors, html!{}, false))
                        (named_input(&format!("item.{i}.amount"), "item_amount", "Amount", &item.amount, errors, html!{}, false))
                        (unit_input(&format!("item.{i}.unit"), "item_unit", &item.unit, errors))
                        (named_input(&format!("item.{i}.lowBalanceThreshold"), "item_low", "Low-balance alert at (optional)", &item.low, errors,
                            hint("credits.low fires when the balance's remaining drops to this or below; blank for none"), false))
                        (named_input(&format!("item.{i}.id"), "item_id", "Item id (optional)", &item.id, errors, html!{}, false))
                        (row_button("pack-form", &action, &format!("remove_row:{i}"),
                            html! { "Remove item " (i + 1) }, "secondary small"))
                    }
                }
                (row_button("pack-form", &action, "add_row", html! { "Add item" }, "secondary"))
            }
            datalist #units { option value="count"; option value="seconds"; option value="tokens"; option value="credits"; }
            div.actions {
                button type="submit" name="op" value="save" {
                    @if editing { "Save credit pack" } @else { "Create credit pack" }
                }
                a.button.secondary href=(format!("{}#packs", ctx.url("plans"))) { "Cancel" }
            }
        }
    }
}

fn unit_input(key: &str, name: &str, value: &str, errors: &Errors) -> Markup {
    let id = format!("f-{}", key.replace('.', "-"));
    html! {
        div.field {
            label for=(id) { "Unit" }
            input id=(id) name=(name) type="text" list="units" value=(value)
                aria-invalid=[errors.get(key).map(|_| "true")];
            (field_error(errors, key))
        }
    }
}

fn form_page(ctx: &Ctx, title: &str, status: StatusCode, form: Markup) -> Response {
    let content = html! {
        p { a href=(ctx.url("plans")) { "← Plans & Credit Packs" } }
        h1 { (title) }
        (form)
    };
    (status, layout(ctx, title, content)).into_response()
}

pub async fn new_pack(
    State(s): State<Dashboard>,
    Signed(session): Signed,
    Path(mode): Path<String>,
) -> Result<Response, Problem> {
    let ctx = Ctx::new(
        &s,
        &session,
        parse_mode(&mode)?,
        "packs/new".into(),
        Section::Catalog,
    );
    let form = pack_form(&ctx, &PackForm::blank(), &Errors::default(), false);
    Ok(form_page(&ctx, "New credit pack", StatusCode::OK, form))
}

pub async fn edit_pack(
    State(s): State<Dashboard>,
    Signed(session): Signed,
    Path((mode, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let here = format!("packs/{id}/edit");
    let ctx = Ctx::new(&s, &session, parse_mode(&mode)?, here, Section::Catalog);
    let catalog = s.engine.catalog(&session.app)?;
    let pack = catalog
        .packs
        .get(id.as_str())
        .ok_or_else(|| pack_missing(&id))?;
    let form = pack_form(&ctx, &PackForm::from_pack(pack), &Errors::default(), true);
    Ok(form_page(
        &ctx,
        &format!("Edit {}", pack.name),
        StatusCode::OK,
        form,
    ))
}

fn pack_missing(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("No credit pack with id '{id}'."),
    )
}

fn plan_missing(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("No plan with id '{id}'."),
    )
}

/// Adds or removes a row, or validates and saves through the same rules as the API.
async fn submit_pack(
    s: &Dashboard,
    ctx: &Ctx,
    fields: &forms::Fields,
    existing: Option<&Pack>,
) -> Result<Response, Problem> {
    let mut form = PackForm::from_fields(fields);
    let editing = existing.is_some();
    if let Some(pack) = existing {
        form.id = pack.id.to_string();
    }
    let title = if editing {
        "Edit credit pack"
    } else {
        "New credit pack"
    };
    let op = Op::parse(fields.get("op"));
    if op != Op::Save {
        form.apply(op);
        let page = pack_form(ctx, &form, &Errors::default(), editing);
        return Ok(form_page(ctx, title, StatusCode::OK, page));
    }
    let refuse = |errors: Errors| {
        let page = pack_form(ctx, &form, &errors, editing);
        Ok(form_page(ctx, title, StatusCode::BAD_REQUEST, page))
    };
    let (input, rows) = match form.to_input(existing.map(|p| p.archived)) {
        Ok(parsed) => parsed,
        Err(errors) => return refuse(errors),
    };
    let pack = match pack_from(existing.map(|p| p.id.to_string()), input) {
        Ok(pack) => pack,
        Err(e) => return refuse(forms::place(&e, &rows)),
    };
    let name = pack.name.clone();
    let command = if editing {
        CatalogCommand::PutPack(pack)
    } else {
        CatalogCommand::CreatePack(pack)
    };
    match s.engine.change_catalog(&ctx.app, command).await {
        Ok(_) => Ok(saved(ctx, &format!("credit pack {name}"), "packs")),
        Err(e) => refuse(forms::place_refusal(e)),
    }
}

fn saved(ctx: &Ctx, what: &str, anchor: &str) -> Response {
    let query = super::query_value(what);
    Redirect::to(&format!("{}?saved={query}#{anchor}", ctx.url("plans"))).into_response()
}

pub async fn create_pack(
    State(s): State<Dashboard>,
    Path(mode): Path<String>,
    form: SignedForm,
) -> Result<Response, Problem> {
    let ctx = Ctx::new(
        &s,
        &form.session,
        parse_mode(&mode)?,
        "packs/new".into(),
        Section::Catalog,
    );
    submit_pack(&s, &ctx, &form.fields, None).await
}

pub async fn save_pack(
    State(s): State<Dashboard>,
    Path((mode, id)): Path<(String, String)>,
    form: SignedForm,
) -> Result<Response, Problem> {
    let here = format!("packs/{id}/edit");
    let ctx = Ctx::new(
        &s,
        &form.session,
        parse_mode(&mode)?,
        here,
        Section::Catalog,
    );
    let catalog = s.engine.catalog(&ctx.app)?;
    let pack = catalog
        .packs
        .get(id.as_str())
        .ok_or_else(|| pack_missing(&id))?;
    submit_pack(&s, &ctx, &form.fields, Some(pack)).await
}

pub async fn archive_page(
    State(s): State<Dashboard>,
    Signed(session): Signed,
    Path((mode, id)): Path<(String, String)>,
) -> Result<Markup, Problem> {
    let here = format!("packs/{id}/archive");
    let ctx = Ctx::new(&s, &session, parse_mode(&mode)?, here, Section::Catalog);
    let catalog = s.engine.catalog(&session.app)?;
    let pack = catalog
        .packs
        .get(id.as_str())
        .ok_or_else(|| pack_missing(&id))?;
    let content = html! {
        h1 { "Archive " (pack.name) "?" }
        p { "An archived credit pack is no longer listed for sale. Balances already granted stay \
             as they are, and the pack can still be granted (a purchase may complete after \
             archiving). This cannot be undone from the dashboard." }
        form method="post" action=(ctx.url(&format!("packs/{id}/archive"))) {
            (ctx.csrf_field())
            div.actions {
                button.danger type="submit" { "Yes, archive " (pack.name) }
                a.button.secondary href=(format!("{}#packs", ctx.url("plans"))) { "No, keep it" }
            }
        }
    };
    Ok(layout(&ctx, "Archive credit pack", content))
}

pub async fn archive(
    State(s): State<Dashboard>,
    Path((mode, id)): Path<(String, String)>,
    form: SignedForm,
) -> Result<Response, Problem> {
    let ctx = Ctx::new(
        &s,
        &form.session,
        parse_mode(&mode)?,
        "plans".into(),
        Section::Catalog,
    );
    let catalog = s
        .engine
        .change_catalog(&ctx.app, CatalogCommand::ArchivePack(id.clone()))
        .await?;
    let name = catalog
        .packs
        .get(id.as_str())
        .map_or(id.clone(), |p| p.name.clone());
    Ok(saved(
        &ctx,
        &format!("credit pack {name} archived"),
        "packs",
    ))
}

fn plan_form(ctx: &Ctx, form: &PlanForm, errors: &Errors, editing: bool) -> Markup {
    let action = if editing {
        ctx.url(&format!("plans/{}/edit", form.id))
    } else {
        ctx.url("plans/new")
    };
    html! {
        form #plan-form method="post" action=(action) novalidate {
            (default_submit())
            (ctx.csrf_field())
            @if let Some(message) = errors.get("form") {
                p.error role="alert" { (message) }
            }
            (text_input("name", "Name", &form.name, errors, hint("e.g. Pro"), false))
            (text_input("id", "Id", &form.id, errors,
                hint(if editing { "The id cannot change." } else { "Used by the API, e.g. pro" }), editing))
            div.row2 {
                (text_input("price", "Price", &form.price, errors, hint("In the currency's main unit; 0 for a free plan"), false))
                (text_input("currency", "Currency", &form.currency, errors, html!{}, false))
            }
            div.field {
                label for="f-interval" { "Billing interval" }
                select #f-interval name="interval" {
                    @for (value, text) in [("", "None (free plan)"), ("month", "Monthly"), ("year", "Yearly")] {
                        option value=(value) selected[form.interval == value] { (text) }
                    }
                }
                (field_error(errors, "interval"))
            }
            fieldset.items {
                legend { "Limits" }
                (hint("A limit charges every model that one of its patterns covers: a model key, category.* or *. Separate patterns with commas."))
                (field_error(errors, "limits"))
                @for (i, l) in form.limits.iter().enumerate() {
                    div.item-row data-row=(i) {
                        p.row-title { "Limit " (i + 1) }
                        (named_input(&format!("limit.{i}.id"), "limit_id", "Limit id", &l.id, errors, html!{}, false))
                        (named_input(&format!("limit.{i}.name"), "limit_name", "Limit name", &l.name, errors, html!{}, false))
                        (named_input(&format!("limit.{i}.match"), "limit_match", "Covers (patterns)", &l.patterns, errors, html!{}, false))
                        (named_input(&format!("limit.{i}.limit"), "limit_amount", "Amount per period", &l.limit, errors, html!{}, false))
                        (unit_input(&format!("limit.{i}.unit"), "limit_unit", &l.unit, errors))
                        div.field {
                            label for=(format!("f-limit-{i}-period")) { "Period" }
                            select id=(format!("f-limit-{i}-period")) name="limit_period" {
                                @for p in ["lifetime", "day", "week", "month", "year"] {
                                    option value=(p) selected[l.period == p] { (p) }
                                }
                                @if !["lifetime", "day", "week", "month", "year"].contains(&l.period.as_str()) {
                                    option value=(l.period) selected { (l.period) }
                                }
                            }
                            (field_error(errors, &format!("limit.{i}.period")))
                        }
                        (row_button("plan-form", &action, &format!("remove_row:{i}"),
                            html! { "Remove limit " (i + 1) }, "secondary small"))
                    }
                }
                (row_button("plan-form", &action, "add_row", html! { "Add limit" }, "secondary"))
            }
            datalist #units { option value="count"; option value="seconds"; option value="tokens"; }
            div.actions {
                button type="submit" name="op" value="save" {
                    @if editing { "Save plan" } @else { "Create plan" }
                }
                a.button.secondary href=(ctx.url("plans")) { "Cancel" }
            }
        }
    }
}

pub async fn new_plan(
    State(s): State<Dashboard>,
    Signed(session): Signed,
    Path(mode): Path<String>,
) -> Result<Response, Problem> {
    let ctx = Ctx::new(
        &s,
        &session,
        parse_mode(&mode)?,
        "plans/new".into(),
        Section::Catalog,
    );
    let form = plan_form(&ctx, &PlanForm::blank(), &Errors::default(), false);
    Ok(form_page(&ctx, "New plan", StatusCode::OK, form))
}

pub async fn edit_plan(
    State(s): State<Dashboard>,
    Signed(session): Signed,
    Path((mode, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let here = format!("plans/{id}/edit");
    let ctx = Ctx::new(&s, &session, parse_mode(&mode)?, here, Section::Catalog);
    let catalog = s.engine.catalog(&session.app)?;
    let plan = catalog
        .plans
        .get(id.as_str())
        .ok_or_else(|| plan_missing(&id))?;
    let form = plan_form(&ctx, &PlanForm::from_plan(plan), &Errors::default(), true);
    Ok(form_page(
        &ctx,
        &format!("Edit {}", plan.name),
        StatusCode::OK,
        form,
    ))
}

async fn submit_plan(
    s: &Dashboard,
    ctx: &Ctx,
    fields: &forms::Fields,
    existing: Option<&Plan>,
) -> Result<Response, Problem> {
    let mut form = PlanForm::from_fields(fields);
    let editing = existing.is_some();
    if let Some(plan) = existing {
        form.id = plan.id.to_string();
    }
    let title = if editing { "Edit plan" } else { "New plan" };
    let op = Op::parse(fields.get("op"));
    if op != Op::Save {
        form.apply(op);
        let page = plan_form(ctx, &form, &Errors::default(), editing);
        return Ok(form_page(ctx, title, StatusCode::OK, page));
    }
    let refuse = |errors: Errors| {
        let page = plan_form(ctx, &form, &errors, editing);
        Ok(form_page(ctx, title, StatusCode::BAD_REQUEST, page))
    };
    let (input, rows) = match form.to_input() {
        Ok(parsed) => parsed,
        Err(errors) => return refuse(errors),
    };
    let plan = match plan_from(existing.map(|p| p.id.to_string()), input) {
        Ok(plan) => plan,
        Err(e) => return refuse(forms::place(&e, &rows)),
    };
    let name = plan.name.clone();
    let command = if editing {
        CatalogCommand::PutPlan(plan)
    } else {
        CatalogCommand::CreatePlan(plan)
    };
    match s.engine.change_catalog(&ctx.app, command).await {
        Ok(_) => Ok(saved(ctx, &format!("plan {name}"), "plans-heading")),
        Err(e) => refuse(forms::place_refusal(e)),
    }
}

pub async fn create_plan(
    State(s): State<Dashboard>,
    Path(mode): Path<String>,
    form: SignedForm,
) -> Result<Response, Problem> {
    let ctx = Ctx::new(
        &s,
        &form.session,
        parse_mode(&mode)?,
        "plans/new".into(),
        Section::Catalog,
    );
    submit_plan(&s, &ctx, &form.fields, None).await
}

pub async fn save_plan(
    State(s): State<Dashboard>,
    Path((mode, id)): Path<(String, String)>,
    form: SignedForm,
) -> Result<Response, Problem> {
    let here = format!("plans/{id}/edit");
    let ctx = Ctx::new(
        &s,
        &form.session,
        parse_mode(&mode)?,
        here,
        Section::Catalog,
    );
    let catalog = s.engine.catalog(&ctx.app)?;
    let plan = catalog
        .plans
        .get(id.as_str())
        .ok_or_else(|| plan_missing(&id))?;
    submit_plan(&s, &ctx, &form.fields, Some(plan)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_read_as_money() {
        let usd = |amount, interval| Price {
            amount,
            currency: "usd".into(),
            interval,
        };
        assert_eq!(price_text(&usd(0, None)), "Free");
        assert_eq!(price_text(&usd(1500, None)), "$15.00");
        assert_eq!(
            price_text(&usd(900, Some(crate::engine::catalog::Interval::Month))),
            "$9.00 / month"
        );
        let eur = Price {
            amount: 400,
            currency: "eur".into(),
            interval: None,
        };
        assert_eq!(price_text(&eur), "4.00 EUR");
        assert_eq!(expiry_text(None), "Never expires");
        assert_eq!(expiry_text(Some(90)), "Expires 90 days after the grant");
    }

    #[test]
    fn row_inputs_post_by_column_name_and_keep_their_error_ids() {
        let errors = Errors(
            [(
                "item.1.amount".to_owned(),
                "Amount must be a positive integer".to_owned(),
            )]
            .into(),
        );
        let html = named_input(
            "item.1.amount",
            "item_amount",
            "Amount",
            "0",
            &errors,
            html! {},
            false,
        )
        .into_string();
        assert!(html.contains(r#"name="item_amount""#), "{html}");
        assert!(html.contains(r#"id="f-item-1-amount""#), "{html}");
        assert!(html.contains(r#"aria-invalid="true""#), "{html}");
        assert!(html.contains("Amount must be a positive integer"), "{html}");
    }
}
