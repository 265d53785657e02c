//! Subscriptions, usage and the ledger: `/v1/users/{userId}/…`.

use super::error::ApiError;
use super::extract::{Body, Path, Secret};
use crate::access::Caller;
use crate::actors::user_actor::{Request, View};
use crate::engine::ids::{Pattern, UserId};
use crate::engine::{Command, UserKey};
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

use super::openapi::schemas::{self as doc, Error};

pub fn user_key(caller: &Caller, user: &str, param: &str) -> Result<UserKey, ApiError> {
    let user = UserId::parse(user).map_err(|e| ApiError::invalid(param, e))?;
    Ok(UserKey {
        app: caller.app.clone(),
        mode: caller.mode,
        user,
    })
}

/// The user whose actor issued `id` (a reservation or a balance), in the caller's app and mode;
/// otherwise a 404 with `code`.
pub fn owner(
    s: &AppState,
    caller: &Caller,
    id: &str,
    code: &'static str,
) -> Result<UserKey, ApiError> {
    s.engine
        .owner_of(&caller.app, caller.mode, id)
        .ok_or_else(|| {
            let what = code.trim_end_matches("_not_found");
            ApiError::not_found(code, format!("no {what} with id '{id}'"))
        })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"planId": "pro"}))]
pub struct SubscriptionBody {
    plan_id: String,
}

async fn subscription_call(
    s: &AppState,
    key: UserKey,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let user = key.user.clone();
    match s.engine.user(key, request).await? {
        View::Subscription(sub) => Ok(Json(views::subscription(&user, &sub))),
        other => Err(ApiError::unexpected(&other)),
    }
}

#[utoipa::path(put, path = "/v1/users/{userId}/subscription", operation_id = "putSubscription",
    tag = "Subscriptions", summary = "Subscribe a user to a plan",
    description = "The same plan again changes nothing; another plan starts a new period now.",
    security(("secretKey" = [])), request_body = SubscriptionBody, params(("userId" = doc::UserId, Path, description = "The app's own user id")),
    responses(
        (status = 200, description = "The subscription", body = doc::Subscription),
        (status = 400, description = "Invalid user id or body", body = Error),
        (status = 404, description = "No such plan (`plan_not_found`)", body = Error)))]
pub async fn put_subscription(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(user): Path<String>,
    Body(body): Body<SubscriptionBody>,
) -> Result<Json<Value>, ApiError> {
    let key = user_key(&caller, &user, "userId")?;
    let command = Command::Subscribe {
        plan_id: body.plan_id.into(),
    };
    subscription_call(&s, key, Request::Command(command)).await
}

#[utoipa::path(get, path = "/v1/users/{userId}/subscription", operation_id = "getSubscription",
    tag = "Subscriptions", summary = "Get a user's subscription", security(("secretKey" = [])), params(("userId" = doc::UserId, Path, description = "The app's own user id")),
    responses(
        (status = 200, description = "The subscription, also a canceled one", body = doc::Subscription),
        (status = 400, description = "Invalid user id (`parameter_invalid`)", body = Error),
        (status = 404, description = "The user never had one (`no_subscription`)", body = Error)))]
pub async fn get_subscription(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    subscription_call(
        &s,
        user_key(&caller, &user, "userId")?,
        Request::Subscription,
    )
    .await
}

#[utoipa::path(delete, path = "/v1/users/{userId}/subscription", operation_id = "cancelSubscription",
    tag = "Subscriptions", summary = "Cancel a user's subscription",
    description = "A second cancel answers the same. The user's credits stay spendable.",
    security(("secretKey" = [])), params(("userId" = doc::UserId, Path, description = "The app's own user id")),
    responses(
        (status = 200, description = "The canceled subscription", body = doc::Subscription),
        (status = 400, description = "Invalid user id (`parameter_invalid`)", body = Error),
        (status = 404, description = "The user never had one (`no_subscription`)", body = Error)))]
pub async fn cancel_subscription(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = user_key(&caller, &user, "userId")?;
    subscription_call(&s, key, Request::Command(Command::Cancel)).await
}

#[utoipa::path(get, path = "/v1/users/{userId}/usage", operation_id = "getUsage",
    tag = "Usage", summary = "A user's counters and active balances", security(("secretKey" = [])),
    params(("userId" = doc::UserId, Path, description = "The app's own user id"),
        ("match" = Option<doc::Pattern>, Query, description = "Only counters and balances whose patterns overlap it")),
    responses(
        (status = 200, description = "Usage", body = doc::Usage),
        (status = 400, description = "Invalid user id or `match`", body = Error)))]
pub async fn usage(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(user): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let key = user_key(&caller, &user, "userId")?;
    let filter = query
        .get("match")
        .map(|m| Pattern::parse(m).map_err(|e| ApiError::invalid("match", e)))
        .transpose()?;
    let user = key.user.clone();
    match s.engine.user(key, Request::Usage(filter)).await? {
        View::Usage(u) => Ok(Json(views::usage(&user, &u))),
        other => Err(ApiError::unexpected(&other)),
    }
}

const LEDGER_PAGE_MAX: usize = 500;
const LEDGER_PAGE_DEFAULT: usize = 50;

#[utoipa::path(get, path = "/v1/users/{userId}/ledger", operation_id = "getLedger",
    tag = "Usage", summary = "A user's ledger, newest first", security(("secretKey" = [])),
    params(("userId" = doc::UserId, Path, description = "The app's own user id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size, 50 by default"),
        ("startingAfter" = Option<String>, Query, description = "The id of the last entry of the previous page")),
    responses(
        (status = 200, description = "A page of entries", body = doc::LedgerPage),
        (status = 400, description = "Invalid user id or `limit`, or an unknown `startingAfter` (`unknown_cursor`)", body = Error)))]
pub async fn ledger(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(user): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let key = user_key(&caller, &user, "userId")?;
    let limit = match query.get("limit") {
        None => LEDGER_PAGE_DEFAULT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=LEDGER_PAGE_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    "must be an integer from 1 to 500",
                ));
            }
        },
    };
    let starting_after = query.get("startingAfter").cloned();
    let user = key.user.clone();
    let page = s.engine.ledger(key, limit, starting_after).await?;
    Ok(Json(views::LedgerPageView {
        data: page
            .entries
            .iter()
            .map(|line| views::LedgerEntryView::new(&user, line))
            .collect(),
        has_more: page.has_more,
    })
    .into_response())
}
