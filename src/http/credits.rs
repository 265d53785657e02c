//! Grants, balances and revokes: `/v1/credits/…`.

use super::error::ApiError;
use super::extract::{Body, Path, Secret};
use super::users::{owner, user_key};
use crate::actors::user_actor::{Request, View};
use crate::engine::event::GrantSource;
use crate::engine::{Command, Ts, UserKey};
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::openapi::schemas::{self as doc, Error};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"userId": "ana", "packId": "cpk_gemini_topup",
    "externalRef": "cs_test_1", "source": "purchase"}))]
pub struct GrantBody {
    #[schema(value_type = doc::UserId)]
    user_id: String,
    pack_id: String,
    /// The app's reference of the purchase, e.g. a Checkout Session id.
    #[schema(min_length = 1, max_length = 255)]
    external_ref: String,
    #[schema(value_type = doc::GrantSource)]
    source: String,
    #[serde(default)]
    #[schema(max_length = 1000)]
    notes: Option<String>,
    /// Overrides the pack's default; must be in the future.
    #[serde(default)]
    #[schema(value_type = Option<doc::Timestamp>)]
    expires_at: Option<String>,
}

const TEXT_BYTES_MAX: usize = 1000;
/// API.md's bound on `externalRef`; the Stripe webhook holds session, payment and charge ids to it.
pub const EXTERNAL_REF_BYTES_MAX: usize = 255;

pub fn external_ref_fits(value: &str) -> bool {
    (1..=EXTERNAL_REF_BYTES_MAX).contains(&value.len())
}

pub fn text(param: &str, value: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.len() > max => Err(ApiError::invalid(
            param,
            format!("must be at most {max} bytes"),
        )),
        v => Ok(v),
    }
}

/// Grants a pack; shared by the API and the Stripe webhook.
pub async fn grant(
    s: &AppState,
    key: UserKey,
    command: Command,
) -> Result<(StatusCode, Value), ApiError> {
    let user = key.user.clone();
    let Command::Grant {
        pack_id,
        external_ref,
        ..
    } = &command
    else {
        unreachable!("grant is called with a grant command");
    };
    let (pack_id, external_ref) = (pack_id.clone(), external_ref.clone());
    match s.engine.user(key, Request::Command(command)).await? {
        View::Granted { created, balances } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((
                status,
                json!({
                    "userId": user.as_str(),
                    "packId": pack_id,
                    "externalRef": external_ref,
                    "created": created,
                    "balances": balances.iter().map(|b| views::balance(&user, b)).collect::<Vec<_>>(),
                }),
            ))
        }
        other => Err(ApiError::unexpected(&other)),
    }
}

#[utoipa::path(post, path = "/v1/credits/grants", operation_id = "createGrant", tag = "Credits",
    summary = "Grant a credit pack to a user",
    description = "One balance per pack item, in item order. (app, mode, user, pack, externalRef) is granted once: a repeat answers 200 with `created: false` and the first grant's balances.",
    security(("secretKey" = [])), request_body = GrantBody,
    responses(
        (status = 201, description = "Granted", body = doc::Grant,
            links(("GetBalance" = (operation_id = "getBalance", parameters(("id" = "$response.body#/balances/0/id")))),
                  ("RevokeBalance" = (operation_id = "revokeBalance", parameters(("id" = "$response.body#/balances/0/id")))),
                  ("ReserveFromBalance" = (operation_id = "reserve",
                      request_body = json!({"userId": "$response.body#/userId",
                          "model": "$response.body#/balances/0/match", "amount": 1}))))),
        (status = 200, description = "Granted before: nothing granted now", body = doc::Grant),
        (status = 400, description = "Invalid body; `expiresAt` not in the future (`expires_at_in_past`)", body = Error),
        (status = 404, description = "No such pack (`pack_not_found`)", body = Error)))]
pub async fn create_grant(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Body(body): Body<GrantBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = user_key(&caller, &body.user_id, "userId")?;
    if !external_ref_fits(&body.external_ref) {
        return Err(ApiError::invalid(
            "externalRef",
            "must be 1 to 255 characters",
        ));
    }
    let source = GrantSource::parse(&body.source)
        .ok_or_else(|| ApiError::invalid("source", "must be purchase, grant or adjustment"))?;
    let expires_at = body
        .expires_at
        .map(|t| {
            Ts::parse_rfc3339(&t)
                .ok_or_else(|| ApiError::invalid("expiresAt", "must be an RFC 3339 timestamp"))
        })
        .transpose()?;
    let command = Command::Grant {
        pack_id: body.pack_id.into(),
        external_ref: body.external_ref.into(),
        source,
        notes: text("notes", body.notes, TEXT_BYTES_MAX)?,
        expires_at,
        payment_intent: None,
        expiring_notice_days: s.expiring_notice_days(&key.app),
    };
    let (status, view) = grant(&s, key, command).await?;
    Ok((status, Json(view)))
}

async fn balance_call(
    s: &AppState,
    key: UserKey,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let user = key.user.clone();
    match s.engine.user(key, request).await? {
        View::Balance(b) => Ok(Json(views::balance(&user, &b))),
        other => Err(ApiError::unexpected(&other)),
    }
}

#[utoipa::path(get, path = "/v1/credits/balances/{id}", operation_id = "getBalance", tag = "Credits",
    summary = "Get a balance", security(("secretKey" = [])),
    params(("id" = String, Path, description = "A balance id, `bal_…`")),
    responses(
        (status = 200, description = "The balance", body = doc::Balance),
        (status = 404, description = "No such balance (`balance_not_found`)", body = Error)))]
pub async fn get_balance(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = owner(&s, &caller, &id, "balance_not_found")?;
    balance_call(&s, key, Request::Balance(id)).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"reason": "refund"}))]
pub struct RevokeBody {
    /// Why; not blank, at most 1000 bytes.
    #[schema(pattern = "\\S", max_length = 1000)]
    reason: String,
}

#[utoipa::path(post, path = "/v1/credits/balances/{id}/revoke", operation_id = "revokeBalance", tag = "Credits",
    summary = "Revoke a balance",
    description = "`remaining` becomes 0, with a `credits.revoked` ledger entry. A second revoke changes nothing.",
    security(("secretKey" = [])), request_body = RevokeBody,
    params(("id" = String, Path, description = "A balance id, `bal_…`")),
    responses(
        (status = 200, description = "The revoked balance", body = doc::Balance),
        (status = 404, description = "No such balance (`balance_not_found`)", body = Error)))]
pub async fn revoke(
    State(s): State<AppState>,
    Secret(caller): Secret,
    Path(id): Path<String>,
    Body(body): Body<RevokeBody>,
) -> Result<Json<Value>, ApiError> {
    let key = owner(&s, &caller, &id, "balance_not_found")?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::invalid(
            "reason",
            "must say why the balance is revoked",
        ));
    }
    let reason = text("reason", Some(body.reason), TEXT_BYTES_MAX)?;
    balance_call(
        &s,
        key,
        Request::Command(Command::Revoke {
            balance_id: id.into(),
            reason,
        }),
    )
    .await
}
