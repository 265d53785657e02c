//! Plans and credit packs: `/v1/plans` and `/v1/credit-packs`.

use super::error::ApiError;
use super::extract::{Body, Caller, Path, Secret};
use super::{AppState, views};
use crate::engine::catalog::{CatalogCommand, Interval, Limit, Pack, PackItem, Plan, Price};
use crate::engine::ids::{AMOUNT_MAX, Pattern, parse_amount, parse_limit, parse_slug};
use crate::engine::time::{Period, Ts};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PriceBody {
    pub amount: u64,
    pub currency: String,
    #[serde(default)]
    pub interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitBody {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub patterns: Vec<String>,
    pub limit: u64,
    pub unit: String,
    pub period: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlanBody {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub price: Option<PriceBody>,
    #[serde(default)]
    pub limits: Vec<LimitBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ItemBody {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "match")]
    pub pattern: String,
    pub amount: u64,
    pub unit: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackBody {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub price: Option<PriceBody>,
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    #[serde(default)]
    pub stripe_price_id: Option<String>,
    #[serde(default)]
    pub archived: Option<bool>,
    pub items: Vec<ItemBody>,
}

/// Items and limits per plan or pack.
const PARTS_MAX: usize = 100;
const NAME_BYTES_MAX: usize = 200;
const EXPIRES_IN_DAYS_MAX: u32 = 36_500;

fn display_name(param: &str, text: &str) -> Result<String, ApiError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.len() > NAME_BYTES_MAX {
        return Err(ApiError::invalid(param, "must be 1 to 200 characters"));
    }
    Ok(trimmed.to_owned())
}

fn id_of(path_id: Option<String>, body_id: Option<String>) -> Result<String, ApiError> {
    let id = match (path_id, body_id) {
        (Some(p), Some(b)) if p != b => {
            return Err(ApiError::invalid("id", "must match the id in the path"));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "parameter_missing",
                "missing required parameter 'id'",
            )
            .param("id"));
        }
    };
    parse_slug(&id).map_err(|e| ApiError::invalid("id", e))
}

fn price(body: Option<PriceBody>, recurring: bool) -> Result<Price, ApiError> {
    let Some(body) = body else {
        return Ok(Price {
            amount: 0,
            currency: "usd".into(),
            interval: None,
        });
    };
    if body.amount > AMOUNT_MAX {
        return Err(ApiError::invalid(
            "price.amount",
            "must be at most 9007199254740991",
        ));
    }
    let currency = body.currency.to_ascii_lowercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(ApiError::invalid(
            "price.currency",
            "must be a three-letter ISO currency code",
        ));
    }
    let interval = match body.interval.as_deref() {
        None => None,
        Some(_) if !recurring => {
            return Err(ApiError::invalid(
                "price.interval",
                "is not allowed on a credit pack",
            ));
        }
        Some("month") => Some(Interval::Month),
        Some("year") => Some(Interval::Year),
        Some(_) => {
            return Err(ApiError::invalid(
                "price.interval",
                "must be month, year or null",
            ));
        }
    };
    Ok(Price {
        amount: body.amount,
        currency,
        interval,
    })
}

fn unit(param: &str, text: &str) -> Result<String, ApiError> {
    parse_slug(text).map_err(|e| ApiError::invalid(param, e))
}

pub fn plan_from(path_id: Option<String>, body: PlanBody) -> Result<Plan, ApiError> {
    let id = id_of(path_id, body.id)?;
    let name = display_name("name", &body.name)?;
    let price = price(body.price, true)?;
    if body.limits.len() > PARTS_MAX {
        return Err(ApiError::invalid("limits", "may hold at most 100 limits"));
    }
    let mut seen = HashSet::new();
    let mut limits = Vec::with_capacity(body.limits.len());
    for (i, l) in body.limits.into_iter().enumerate() {
        let at = |field: &str| format!("limits[{i}].{field}");
        let id = parse_slug(&l.id).map_err(|e| ApiError::invalid(&at("id"), e))?;
        if !seen.insert(id.clone()) {
            return Err(ApiError::invalid(&at("id"), "repeats another limit's id"));
        }
        if l.patterns.is_empty() {
            return Err(ApiError::invalid(
                &at("match"),
                "must hold at least one pattern",
            ));
        }
        let patterns = l
            .patterns
            .iter()
            .enumerate()
            .map(|(j, p)| {
                Pattern::parse(p)
                    .map_err(|e| ApiError::invalid(&format!("limits[{i}].match[{j}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limit = parse_limit(l.limit).map_err(|e| ApiError::invalid(&at("limit"), e))?;
        let period = Period::parse(&l.period).ok_or_else(|| {
            ApiError::invalid(&at("period"), "must be lifetime, day, week, month or year")
        })?;
        let name = match l.name {
            Some(n) => display_name(&at("name"), &n)?,
            None => id.clone(),
        };
        limits.push(Limit {
            id,
            name,
            patterns,
            limit,
            unit: unit(&at("unit"), &l.unit)?,
            period,
        });
    }
    Ok(Plan {
        id,
        name,
        price,
        limits,
        created_at: Ts(0),
        updated_at: Ts(0),
    })
}

pub fn pack_from(path_id: Option<String>, body: PackBody) -> Result<Pack, ApiError> {
    let id = id_of(path_id, body.id)?;
    let name = display_name("name", &body.name)?;
    let price = price(body.price, false)?;
    if body
        .expires_in_days
        .is_some_and(|d| d == 0 || d > EXPIRES_IN_DAYS_MAX)
    {
        return Err(ApiError::invalid(
            "expiresInDays",
            "must be null (never) or 1 to 36500 days",
        ));
    }
    if let Some(stripe) = &body.stripe_price_id {
        if stripe.is_empty() || stripe.len() > 255 {
            return Err(ApiError::invalid(
                "stripePriceId",
                "must be 1 to 255 characters",
            ));
        }
    }
    if body.items.is_empty() || body.items.len() > PARTS_MAX {
        return Err(ApiError::invalid("items", "must hold 1 to 100 items"));
    }
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(body.items.len());
    for (i, item) in body.items.into_iter().enumerate() {
        let at = |field: &str| format!("items[{i}].{field}");
        let pattern =
            Pattern::parse(&item.pattern).map_err(|e| ApiError::invalid(&at("match"), e))?;
        let amount = parse_amount(item.amount).map_err(|e| ApiError::invalid(&at("amount"), e))?;
        let unit = unit(&at("unit"), &item.unit)?;
        let id = match item.id {
            Some(id) => parse_slug(&id).map_err(|e| ApiError::invalid(&at("id"), e))?,
            None => format!("item_{}", i + 1),
        };
        if !seen.insert(id.clone()) {
            return Err(ApiError::invalid(&at("id"), "repeats another item's id"));
        }
        items.push(PackItem {
            id,
            pattern,
            amount,
            unit,
        });
    }
    Ok(Pack {
        id,
        name,
        price,
        expires_in_days: body.expires_in_days,
        stripe_price_id: body.stripe_price_id,
        archived: body.archived.unwrap_or(false),
        items,
        created_at: Ts(0),
        updated_at: Ts(0),
    })
}

pub async fn list_plans(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let catalog = s.engine.catalog(&caller.app)?;
    Ok(Json(views::list(
        catalog.plans.values().map(|p| views::plan(p)).collect(),
    )))
}

pub async fn get_plan(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let catalog = s.engine.catalog(&caller.app)?;
    let plan = catalog
        .plans
        .get(&id)
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

pub async fn create_plan(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Body(body): Body<PlanBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let plan = plan_from(None, body)?;
    let id = plan.id.clone();
    let view = change_plan(&s, &caller.app, CatalogCommand::CreatePlan(plan), &id).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn put_plan(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(body): Body<PlanBody>,
) -> Result<Json<Value>, ApiError> {
    let plan = plan_from(Some(id.clone()), body)?;
    Ok(Json(
        change_plan(&s, &caller.app, CatalogCommand::PutPlan(plan), &id).await?,
    ))
}

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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackQuery {
    #[serde(default)]
    include_archived: Option<String>,
}

pub async fn list_packs(
    State(s): State<AppState>,
    caller: Caller,
    Query(query): Query<PackQuery>,
) -> Result<Json<Value>, ApiError> {
    let archived = match query.include_archived.as_deref() {
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

pub async fn get_pack(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let catalog = s.engine.catalog(&caller.app)?;
    let pack = catalog.packs.get(&id).ok_or_else(|| {
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

pub async fn create_pack(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Body(body): Body<PackBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let pack = pack_from(None, body)?;
    let id = pack.id.clone();
    let view = change_pack(&s, &caller.app, CatalogCommand::CreatePack(pack), &id).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn put_pack(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(body): Body<PackBody>,
) -> Result<Json<Value>, ApiError> {
    let pack = pack_from(Some(id.clone()), body)?;
    Ok(Json(
        change_pack(&s, &caller.app, CatalogCommand::PutPack(pack), &id).await?,
    ))
}

/// The archive call takes no parameters; an empty object is the only body it accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParameters {}

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
