//! Plans and credit packs: `/v1/plans` and `/v1/credit-packs`.

use super::error::ApiError;
use super::extract::{Body, Path, Secret};
use crate::access::Caller;
use crate::engine::catalog::CatalogCommand;
use crate::engine::catalog_input::{
    ItemInput, LimitInput, PackInput, PlanInput, PriceInput, pack_from, plan_from,
};
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use utoipa::ToSchema;

use super::number::{optional_whole, optional_whole_u32, whole};
use super::openapi::schemas::{self as doc, Error};

/// A price in the currency's smallest unit; `interval` is for plans only (`null`: free).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PriceBody {
    #[serde(deserialize_with = "whole")]
    #[schema(value_type = doc::Amount)]
    pub amount: u64,
    /// A three-letter ISO currency code.
    #[schema(pattern = "^[A-Za-z]{3}$", example = "usd")]
    pub currency: String,
    #[serde(default)]
    #[schema(value_type = Option<doc::Interval>)]
    pub interval: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitBody {
    /// Unique within the plan.
    #[schema(value_type = doc::Slug)]
    pub id: String,
    /// 1 to 200 characters; the id when omitted.
    #[serde(default)]
    #[schema(value_type = Option<doc::Name>)]
    pub name: Option<String>,
    /// The models the limit charges: at least one pattern.
    #[serde(rename = "match")]
    #[schema(value_type = Vec<doc::Pattern>, min_items = 1)]
    pub patterns: Vec<String>,
    #[serde(deserialize_with = "whole")]
    #[schema(value_type = doc::Amount)]
    pub limit: u64,
    #[schema(value_type = doc::Slug, example = "count")]
    pub unit: String,
    #[schema(value_type = doc::Period)]
    pub period: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"id": "pro", "name": "Pro",
    "price": {"amount": 900, "currency": "usd", "interval": "month"},
    "limits": [{"id": "images", "name": "Images", "match": ["image.*"], "limit": 40,
                "unit": "count", "period": "month"}]}))]
pub struct PlanBody {
    /// Required with POST; with PUT, omitted, `null` or equal to the id in the path.
    #[serde(default)]
    #[schema(value_type = Option<doc::Slug>)]
    pub id: Option<String>,
    #[schema(value_type = doc::Name)]
    pub name: String,
    /// Free (0 usd, no interval) when omitted.
    #[serde(default)]
    pub price: Option<PriceBody>,
    /// 0 to 100 limits, ids unique within the plan.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub limits: Vec<LimitBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ItemBody {
    /// Unique within the pack; `item_N` (its position from 1) when omitted.
    #[serde(default)]
    #[schema(value_type = Option<doc::Slug>)]
    pub id: Option<String>,
    #[serde(rename = "match")]
    #[schema(value_type = doc::Pattern)]
    pub pattern: String,
    #[serde(deserialize_with = "whole")]
    #[schema(value_type = doc::Quantity)]
    pub amount: u64,
    #[schema(value_type = doc::Slug, example = "count")]
    pub unit: String,
    /// `credits.low` fires when a balance of this item drops to this or below (1 to `amount`).
    #[serde(default, deserialize_with = "optional_whole")]
    #[schema(value_type = Option<doc::Quantity>)]
    pub low_balance_threshold: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"id": "cpk_creator_bundle", "name": "Creator Bundle",
    "price": {"amount": 1500, "currency": "usd"}, "expiresInDays": 90,
    "stripePriceId": "price_123",
    "items": [{"id": "dalle", "match": "image.dall-e-3", "amount": 10, "unit": "count"},
              {"id": "veo", "match": "video.veo-3", "amount": 5, "unit": "seconds"}]}))]
pub struct PackBody {
    /// Required with POST; with PUT, omitted, `null` or equal to the id in the path.
    #[serde(default)]
    #[schema(value_type = Option<doc::Slug>)]
    pub id: Option<String>,
    #[schema(value_type = doc::Name)]
    pub name: String,
    /// 0 usd when omitted; no `interval` on a pack.
    #[serde(default)]
    pub price: Option<PriceBody>,
    /// Days from the grant until the credits expire; `null`: never.
    #[serde(default, deserialize_with = "optional_whole_u32")]
    #[schema(minimum = 1, maximum = 36500)]
    pub expires_in_days: Option<u32>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    pub stripe_price_id: Option<String>,
    #[serde(default)]
    pub archived: Option<bool>,
    /// 1 to 100 items, ids unique within the pack.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ItemBody>,
}

// The bodies are the API's own request types (they carry its JSON names and its OpenAPI
// description); the catalog's rules take the plain inputs below, which the dashboard's forms
// build as well.

impl From<PriceBody> for PriceInput {
    fn from(body: PriceBody) -> PriceInput {
        PriceInput {
            amount: body.amount,
            currency: body.currency,
            interval: body.interval,
        }
    }
}

impl From<LimitBody> for LimitInput {
    fn from(body: LimitBody) -> LimitInput {
        LimitInput {
            id: body.id,
            name: body.name,
            patterns: body.patterns,
            limit: body.limit,
            unit: body.unit,
            period: body.period,
        }
    }
}

impl From<PlanBody> for PlanInput {
    fn from(body: PlanBody) -> PlanInput {
        PlanInput {
            id: body.id,
            name: body.name,
            price: body.price.map(PriceInput::from),
            limits: body.limits.into_iter().map(LimitInput::from).collect(),
        }
    }
}

impl From<ItemBody> for ItemInput {
    fn from(body: ItemBody) -> ItemInput {
        ItemInput {
            id: body.id,
            pattern: body.pattern,
            amount: body.amount,
            unit: body.unit,
            low_balance_threshold: body.low_balance_threshold,
        }
    }
}

impl From<PackBody> for PackInput {
    fn from(body: PackBody) -> PackInput {
        PackInput {
            id: body.id,
            name: body.name,
            price: body.price.map(PriceInput::from),
            expires_in_days: body.expires_in_days,
            stripe_price_id: body.stripe_price_id,
            archived: body.archived,
            items: body.items.into_iter().map(ItemInput::from).collect(),
        }
    }
}

#[utoipa::path(get, path = "/v1/plans", operation_id = "listPlans", tag = "Catalog",
    summary = "List the plans", security(("secretKey" = []), ("publishableKey" = [])),
    responses((status = 200, description = "Every plan of the app", body = doc::PlanList)))]
pub async fn list_plans(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let catalog = s.engine.catalog(&caller.app)?;
    Ok(Json(views::list(
        catalog.plans.values().map(|p| views::plan(p)).collect(),
    )))
}

#[utoipa::path(get, path = "/v1/plans/{id}", operation_id = "getPlan", tag = "Catalog",
    summary = "Get a plan", security(("secretKey" = []), ("publishableKey" = [])),
    params(("id" = String, Path, description = "The plan's id", example = "pro")),
    responses(
        (status = 200, description = "The plan", body = doc::Plan),
        (status = 404, description = "No such plan (`plan_not_found`)", body = Error)))]
pub async fn get_plan(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let catalog = s.engine.catalog(&caller.app)?;
    let plan = catalog
        .plans
        .get(id.as_str())
        .ok_or_else(|| ApiError::not_found("plan_not_found", format!("no plan with id '{id}'")))?;
    Ok(Json(views::plan(plan)))
}

async fn change_plan(
    s: &AppState,
    app: &str,
    command: CatalogCommand,
    id: &str,
) -> Result<Value, ApiError> {
    let catalog = s.engine.change_catalog(app, command).await?;
    Ok(catalog
        .plans
        .get(id)
        .map(|p| views::plan(p))
        .unwrap_or(Value::Null))
}

#[utoipa::path(post, path = "/v1/plans", operation_id = "createPlan", tag = "Catalog",
    summary = "Create a plan", security(("secretKey" = [])), request_body = PlanBody,
    responses(
        (status = 201, description = "Created", body = doc::Plan,
            links(("GetPlan" = (operation_id = "getPlan", parameters(("id" = "$response.body#/id")))),
                  ("DeletePlan" = (operation_id = "deletePlan", parameters(("id" = "$response.body#/id")))),
                  ("SubscribeToPlan" = (operation_id = "putSubscription",
                      request_body = json!({"planId": "$response.body#/id"}))))),
        (status = 409, description = "The id is taken (`plan_exists`), or an `Idempotency-Key` conflict", body = Error)))]
pub async fn create_plan(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Body(body): Body<PlanBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let plan = plan_from(None, body.into())?;
    let id = plan.id.clone();
    let view = change_plan(&s, &caller.app, CatalogCommand::CreatePlan(plan), &id).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(put, path = "/v1/plans/{id}", operation_id = "putPlan", tag = "Catalog",
    summary = "Create or replace a plan",
    description = "A changed limit applies to subscribers from their next operation; `used` carries over by limit id.",
    security(("secretKey" = [])), request_body = PlanBody,
    params(("id" = doc::Slug, Path, description = "The plan's id")),
    responses(
        (status = 200, description = "The plan as stored", body = doc::Plan),
        (status = 400, description = "Invalid id or body (`parameter_invalid`), or a body id that is not the path's", body = Error)))]
pub async fn put_plan(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(body): Body<PlanBody>,
) -> Result<Json<Value>, ApiError> {
    let plan = plan_from(Some(id.clone()), body.into())?;
    Ok(Json(
        change_plan(&s, &caller.app, CatalogCommand::PutPlan(plan), &id).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/plans/{id}", operation_id = "deletePlan", tag = "Catalog",
    summary = "Delete a plan", security(("secretKey" = [])),
    params(("id" = String, Path, description = "The plan's id")),
    responses(
        (status = 200, description = "Deleted", body = doc::Deleted),
        (status = 404, description = "No such plan (`plan_not_found`)", body = Error),
        (status = 409, description = "An active subscription in either mode uses it (`plan_in_use`)", body = Error)))]
pub async fn delete_plan(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.engine
        .change_catalog(&caller.app, CatalogCommand::DeletePlan(id.clone()))
        .await?;
    Ok(Json(serde_json::json!({"id": id, "deleted": true})))
}

#[utoipa::path(get, path = "/v1/credit-packs", operation_id = "listCreditPacks", tag = "Catalog",
    summary = "List the credit packs", security(("secretKey" = []), ("publishableKey" = [])),
    params(("includeArchived" = Option<bool>, Query, description = "Also list archived packs")),
    responses(
        (status = 200, description = "The packs, archived ones only with `includeArchived=true`", body = doc::PackList),
        (status = 400, description = "`includeArchived` is not `true` or `false`", body = Error)))]
pub async fn list_packs(
    State(s): State<AppState>,
    caller: Caller,
    // A map, not a struct: a repeated parameter then reads as its last value instead of being a
    // plain-text rejection from axum (found by schemathesis).
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let archived = match query.get("includeArchived").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "includeArchived",
                "must be true or false",
            ));
        }
    };
    let catalog = s.engine.catalog(&caller.app)?;
    let packs = catalog
        .packs
        .values()
        .filter(|p| archived || !p.archived)
        .map(|p| views::pack(p));
    Ok(Json(views::list(packs.collect())))
}

#[utoipa::path(get, path = "/v1/credit-packs/{id}", operation_id = "getCreditPack", tag = "Catalog",
    summary = "Get a credit pack", security(("secretKey" = []), ("publishableKey" = [])),
    params(("id" = String, Path, description = "The pack's id", example = "cpk_creator_bundle")),
    responses(
        (status = 200, description = "The pack", body = doc::Pack),
        (status = 404, description = "No such pack (`pack_not_found`)", body = Error)))]
pub async fn get_pack(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let catalog = s.engine.catalog(&caller.app)?;
    let pack = catalog.packs.get(id.as_str()).ok_or_else(|| {
        ApiError::not_found("pack_not_found", format!("no credit pack with id '{id}'"))
    })?;
    Ok(Json(views::pack(pack)))
}

async fn change_pack(
    s: &AppState,
    app: &str,
    command: CatalogCommand,
    id: &str,
) -> Result<Value, ApiError> {
    let catalog = s.engine.change_catalog(app, command).await?;
    Ok(catalog
        .packs
        .get(id)
        .map(|p| views::pack(p))
        .unwrap_or(Value::Null))
}

#[utoipa::path(post, path = "/v1/credit-packs", operation_id = "createCreditPack", tag = "Catalog",
    summary = "Create a credit pack", security(("secretKey" = [])), request_body = PackBody,
    responses(
        (status = 201, description = "Created", body = doc::Pack,
            links(("GetCreditPack" = (operation_id = "getCreditPack", parameters(("id" = "$response.body#/id")))),
                  ("GrantCreditPack" = (operation_id = "createGrant",
                      request_body = json!({"userId": "ana", "packId": "$response.body#/id",
                          "externalRef": "cs_test_1", "source": "purchase"}))))),
        (status = 409, description = "The id is taken (`pack_exists`), or an `Idempotency-Key` conflict", body = Error)))]
pub async fn create_pack(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Body(body): Body<PackBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let pack = pack_from(None, body.into())?;
    let id = pack.id.clone();
    let view = change_pack(&s, &caller.app, CatalogCommand::CreatePack(pack), &id).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(put, path = "/v1/credit-packs/{id}", operation_id = "putCreditPack", tag = "Catalog",
    summary = "Create or replace a credit pack", description = "An edit changes future grants only.",
    security(("secretKey" = [])), request_body = PackBody,
    params(("id" = doc::Slug, Path, description = "The pack's id")),
    responses(
        (status = 200, description = "The pack as stored", body = doc::Pack),
        (status = 400, description = "Invalid id or body (`parameter_invalid`), or a body id that is not the path's", body = Error)))]
pub async fn put_pack(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(body): Body<PackBody>,
) -> Result<Json<Value>, ApiError> {
    let pack = pack_from(Some(id.clone()), body.into())?;
    Ok(Json(
        change_pack(&s, &caller.app, CatalogCommand::PutPack(pack), &id).await?,
    ))
}

/// The archive call takes no parameters; an empty object is the only body it accepts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParameters {}

#[utoipa::path(post, path = "/v1/credit-packs/{id}/archive", operation_id = "archiveCreditPack", tag = "Catalog",
    summary = "Archive a credit pack",
    description = "It leaves the default list; it can still be granted (a purchase may complete after archiving).",
    security(("secretKey" = [])), request_body(content = Option<NoParameters>, description = "Empty, or `{}`"),
    params(("id" = String, Path, description = "The pack's id")),
    responses(
        (status = 200, description = "The archived pack", body = doc::Pack),
        (status = 404, description = "No such pack (`pack_not_found`)", body = Error)))]
pub async fn archive_pack(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(NoParameters {}): Body<NoParameters>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        change_pack(
            &s,
            &caller.app,
            CatalogCommand::ArchivePack(id.clone()),
            &id,
        )
        .await?,
    ))
}
