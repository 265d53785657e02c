//! The JSON shapes of API.md as OpenAPI schemas.
//!
//! Request bodies are documented by the very structs the handlers parse (they derive `ToSchema`
//! where they are declared). Answers are built as JSON in `crate::views`; the types below describe
//! them and are never constructed. They are closed (`additionalProperties: false`) and every field
//! is required (API.md: a field with no value is present as `null`), so an answer that gains,
//! loses or retypes a field without this file fails schemathesis's response-conformance check in
//! `scripts/test.d/25-schemathesis.sh`; the TypeScript SDK's types are checked against them in
//! `sdk/typescript/test/openapi-types.test.ts`.

#![allow(dead_code)]

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A user id of the app's own: 1 to 128 characters of `A-Z a-z 0-9 _ . : @ -`.
#[derive(Serialize, ToSchema)]
#[schema(
    example = "ana",
    pattern = "^[A-Za-z0-9_.:@-]{1,128}$",
    min_length = 1,
    max_length = 128
)]
pub struct UserId(String);

/// What is metered, `category.model`: lowercase, at most 128 characters.
#[derive(Serialize, ToSchema)]
#[schema(
    example = "image.gemini-3-1-flash-image-preview",
    pattern = "^[a-z0-9][a-z0-9_-]*\\.[a-z0-9][a-z0-9_.-]*$",
    min_length = 3,
    max_length = 128
)]
pub struct ModelKey(String);

/// A model key, a whole category (`image.*`) or everything (`*`).
#[derive(Serialize, ToSchema)]
#[schema(
    example = "image.*",
    pattern = "^(\\*|[a-z0-9][a-z0-9_-]*\\.(\\*|[a-z0-9][a-z0-9_.-]*))$",
    min_length = 1,
    max_length = 128
)]
pub struct Pattern(String);

/// An id chosen by the app (plan, pack, limit, item) or a unit: 1 to 64 characters of
/// `A-Z a-z 0-9 _ . -`.
#[derive(Serialize, ToSchema)]
#[schema(
    example = "pro",
    pattern = "^[A-Za-z0-9_.-]{1,64}$",
    min_length = 1,
    max_length = 64
)]
pub struct Slug(String);

/// A display name: 1 to 200 characters, not all blank (the server trims it).
#[derive(Serialize, ToSchema)]
#[schema(example = "Pro", pattern = "\\S", min_length = 1, max_length = 200)]
pub struct Name(String);

/// A quantity: a positive integer, at most 2^53 − 1.
#[derive(Serialize, ToSchema)]
#[schema(example = 1, minimum = 1, maximum = 9_007_199_254_740_991_i64)]
pub struct Quantity(u64);

/// An amount that may be 0 (a price, a plan limit of a "0-quota free plan"), at most 2^53 − 1.
#[derive(Serialize, ToSchema)]
#[schema(example = 900, minimum = 0, maximum = 9_007_199_254_740_991_i64)]
pub struct Amount(u64);

/// An RFC 3339 UTC timestamp.
#[derive(Serialize, ToSchema)]
#[schema(example = "2026-11-22T21:40:00Z", format = DateTime)]
pub struct Timestamp(String);

/// A field that is always `null` in this shape (e.g. `balanceId` of a plan allocation).
fn always_null() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Null)
        .description(Some("Always `null` here."))
        .build()
}

// ---- errors ------------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    Unprocessable,
    RateLimited,
    Internal,
    Unavailable,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// Machine-readable, e.g. `plan_not_found`, `parameter_invalid`.
    #[schema(example = "plan_not_found")]
    pub code: String,
    /// For a human; may change between versions.
    pub message: String,
    /// The field at fault, where one is (`amount`, `limits[0].match[1]`).
    #[schema(required = true)]
    pub param: Option<String>,
}

/// Every non-2xx answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"error": {"type": "not_found", "code": "plan_not_found",
    "message": "no plan with id 'platinum'", "param": null}}))]
pub struct Error {
    pub error: ErrorDetail,
}

// ---- catalog -----------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Month,
    Year,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Lifetime,
    Day,
    Week,
    Month,
    Year,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanPrice {
    #[schema(value_type = Amount)]
    pub amount: u64,
    #[schema(example = "usd")]
    pub currency: String,
    /// `null` for a free plan.
    #[schema(required = true)]
    pub interval: Option<Interval>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanLimit {
    #[schema(value_type = Slug)]
    pub id: String,
    pub name: String,
    #[serde(rename = "match")]
    #[schema(value_type = Vec<Pattern>)]
    pub patterns: Vec<String>,
    #[schema(value_type = Amount)]
    pub limit: u64,
    #[schema(value_type = Slug)]
    pub unit: String,
    pub period: Period,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"id": "pro", "name": "Pro",
    "price": {"amount": 900, "currency": "usd", "interval": "month"},
    "limits": [{"id": "images", "name": "Images", "match": ["image.*"], "limit": 40,
                "unit": "count", "period": "month"}],
    "createdAt": "2026-11-22T21:40:00Z", "updatedAt": "2026-11-22T21:40:00Z"}))]
pub struct Plan {
    #[schema(value_type = Slug)]
    pub id: String,
    pub name: String,
    pub price: PlanPrice,
    pub limits: Vec<PlanLimit>,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
    #[schema(value_type = Timestamp)]
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanList {
    pub data: Vec<Plan>,
    pub has_more: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackPrice {
    #[schema(value_type = Amount)]
    pub amount: u64,
    #[schema(example = "usd")]
    pub currency: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackItem {
    #[schema(value_type = Slug)]
    pub id: String,
    #[serde(rename = "match")]
    #[schema(value_type = Pattern)]
    pub pattern: String,
    #[schema(value_type = Quantity)]
    pub amount: u64,
    #[schema(value_type = Slug)]
    pub unit: String,
    /// `credits.low` fires when a balance of this item drops to this or below; `null`: never.
    #[serde(rename = "lowBalanceThreshold")]
    #[schema(value_type = Option<Quantity>)]
    pub low_balance_threshold: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"id": "cpk_creator_bundle", "name": "Creator Bundle",
    "price": {"amount": 1500, "currency": "usd"}, "expiresInDays": 90,
    "stripePriceId": "price_123", "archived": false,
    "items": [{"id": "dalle", "match": "image.dall-e-3", "amount": 10, "unit": "count"},
              {"id": "veo", "match": "video.veo-3", "amount": 5, "unit": "seconds"}],
    "createdAt": "2026-11-22T21:40:00Z", "updatedAt": "2026-11-22T21:40:00Z"}))]
pub struct Pack {
    #[schema(value_type = Slug)]
    pub id: String,
    pub name: String,
    pub price: PackPrice,
    /// `null`: the credits never expire.
    #[schema(required = true, minimum = 1, maximum = 36500)]
    pub expires_in_days: Option<u32>,
    #[schema(required = true)]
    pub stripe_price_id: Option<String>,
    pub archived: bool,
    pub items: Vec<PackItem>,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
    #[schema(value_type = Timestamp)]
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackList {
    pub data: Vec<Pack>,
    pub has_more: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deleted {
    #[schema(value_type = Slug)]
    pub id: String,
    pub deleted: bool,
}

// ---- subscriptions and usage -------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Canceled,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"userId": "ana", "planId": "pro", "status": "active",
    "currentPeriodStart": "2026-11-22T21:40:00Z", "createdAt": "2026-11-20T09:00:00Z"}))]
pub struct Subscription {
    #[schema(value_type = UserId)]
    pub user_id: String,
    pub plan_id: String,
    pub status: SubscriptionStatus,
    #[schema(value_type = Timestamp)]
    pub current_period_start: String,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Counter {
    pub plan_id: String,
    pub limit_id: String,
    pub name: String,
    #[serde(rename = "match")]
    #[schema(value_type = Vec<Pattern>)]
    pub patterns: Vec<String>,
    pub unit: String,
    pub period: Period,
    pub limit: u64,
    pub used: u64,
    pub reserved: u64,
    pub remaining: u64,
    /// `null` for a lifetime limit.
    #[schema(required = true, value_type = Option<Timestamp>)]
    pub period_start: Option<String>,
    #[schema(required = true, value_type = Option<Timestamp>)]
    pub resets_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Usage {
    #[schema(value_type = UserId)]
    pub user_id: String,
    /// The active subscription, `null` without one.
    #[schema(required = true)]
    pub subscription: Option<Subscription>,
    pub counters: Vec<Counter>,
    /// The active balances.
    pub credits: Vec<Balance>,
}

// ---- credits -----------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BalanceStatus {
    Active,
    Expired,
    Revoked,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    Purchase,
    Grant,
    Adjustment,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"id": "bal_01JD5ZQ3A8K2V6N9W4X7Y0B1C2", "userId": "ana",
    "packId": "cpk_gemini_topup", "packItemId": "gemini",
    "match": "image.gemini-3-1-flash-image-preview", "unit": "count", "granted": 50,
    "remaining": 49, "reserved": 0, "committed": 1, "revoked": 0, "expired": 0,
    "status": "active", "source": "purchase", "externalRef": "cs_test_1", "notes": null,
    "expiresAt": null, "createdAt": "2026-11-22T21:40:00Z"}))]
pub struct Balance {
    pub id: String,
    #[schema(value_type = UserId)]
    pub user_id: String,
    pub pack_id: String,
    pub pack_item_id: String,
    #[serde(rename = "match")]
    #[schema(value_type = Pattern)]
    pub pattern: String,
    pub unit: String,
    pub granted: u64,
    /// What can be spent now.
    pub remaining: u64,
    /// Held by pending reservations.
    pub reserved: u64,
    pub committed: u64,
    pub revoked: u64,
    pub expired: u64,
    pub status: BalanceStatus,
    pub source: GrantSource,
    pub external_ref: String,
    #[schema(required = true)]
    pub notes: Option<String>,
    /// `null`: never expires.
    #[schema(required = true, value_type = Option<Timestamp>)]
    pub expires_at: Option<String>,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    #[schema(value_type = UserId)]
    pub user_id: String,
    pub pack_id: String,
    pub external_ref: String,
    /// `false`: this (user, pack, externalRef) was granted before; nothing was granted now.
    pub created: bool,
    /// One per pack item, in item order.
    pub balances: Vec<Balance>,
}

// ---- reservations ------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Pending,
    Committed,
    Released,
    Expired,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanSource {
    Plan,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreditsSource {
    Credits,
}

/// The plan part of a reservation, charged to one covering limit.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanAllocation {
    pub source: PlanSource,
    pub limit_id: String,
    #[schema(required = true, schema_with = always_null)]
    pub balance_id: Option<String>,
    pub amount: u64,
}

/// A credit part of a reservation, from one balance.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditsAllocation {
    pub source: CreditsSource,
    #[schema(required = true, schema_with = always_null)]
    pub limit_id: Option<String>,
    pub balance_id: String,
    pub amount: u64,
}

/// One source of a reservation: a plan limit or a credit balance.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Allocation {
    Plan(PlanAllocation),
    Credits(CreditsAllocation),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NoSubscription,
    CreditsExhausted,
    NotInPlan,
    PlanExhausted,
    PlanAndCreditsExhausted,
}

/// What plan and credits could give at the time of the decision.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Available {
    pub plan: u64,
    pub credits: u64,
}

/// An allowed reservation (also the answer to commit, release and get).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"reservationId": "res_01JD5ZQ3A8K2V6N9W4X7Y0B1C2", "allowed": true,
    "reasons": [], "status": "pending", "userId": "ana",
    "model": "image.gemini-3-1-flash-image-preview", "amount": 1,
    "allocations": [{"source": "plan", "limitId": "images", "balanceId": null, "amount": 1}],
    "expiresAt": "2026-11-22T21:50:00Z", "createdAt": "2026-11-22T21:40:00Z",
    "metadata": null, "committedAmount": null, "response": null, "errorCode": null}))]
pub struct Reservation {
    pub reservation_id: String,
    pub allowed: bool,
    /// Always empty on an allowed reservation.
    pub reasons: Vec<Reason>,
    pub status: ReservationStatus,
    #[schema(value_type = UserId)]
    pub user_id: String,
    #[schema(value_type = ModelKey)]
    pub model: String,
    pub amount: u64,
    /// The plan part first (one entry per covering limit, each with the plan's whole part), then
    /// the credits in matcher order.
    pub allocations: Vec<Allocation>,
    #[schema(value_type = Timestamp)]
    pub expires_at: String,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
    /// The JSON given at reserve, or `null`.
    #[schema(required = true)]
    pub metadata: Option<Value>,
    /// `null` until committed.
    #[schema(required = true)]
    pub committed_amount: Option<u64>,
    /// The JSON given at commit, or `null`.
    #[schema(required = true)]
    pub response: Option<Value>,
    /// The code given at release, or `null`.
    #[schema(required = true)]
    pub error_code: Option<String>,
}

/// A denied reservation: nothing is held.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"reservationId": null, "allowed": false,
    "reasons": ["plan_exhausted"], "available": {"plan": 0, "credits": 0}}))]
pub struct Denial {
    #[schema(required = true, schema_with = always_null)]
    pub reservation_id: Option<String>,
    pub allowed: bool,
    pub reasons: Vec<Reason>,
    pub available: Available,
}

/// `POST /v1/reservations` and `/v1/consume`: a reservation, or a denial.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Decision {
    Allowed(Box<Reservation>),
    Denied(Denial),
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"allowed": true, "reasons": [],
    "allocations": [{"source": "plan", "limitId": "images", "balanceId": null, "amount": 1}],
    "available": {"plan": 2, "credits": 0}}))]
pub struct Check {
    pub allowed: bool,
    pub reasons: Vec<Reason>,
    pub allocations: Vec<Allocation>,
    pub available: Available,
}

// ---- ledger ------------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub enum LedgerType {
    #[serde(rename = "credits.granted")]
    CreditsGranted,
    #[serde(rename = "credits.revoked")]
    CreditsRevoked,
    #[serde(rename = "credits.expired")]
    CreditsExpired,
    #[serde(rename = "usage.reserved")]
    UsageReserved,
    #[serde(rename = "usage.committed")]
    UsageCommitted,
    #[serde(rename = "usage.released")]
    UsageReleased,
    #[serde(rename = "usage.expired")]
    UsageExpired,
    #[serde(rename = "subscription.updated")]
    SubscriptionUpdated,
    #[serde(rename = "subscription.canceled")]
    SubscriptionCanceled,
}

/// A ledger entry; fields that do not apply to its type are `null`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LedgerEntry {
    pub id: String,
    #[schema(value_type = Timestamp)]
    pub at: String,
    #[serde(rename = "type")]
    pub kind: LedgerType,
    #[schema(value_type = UserId)]
    pub user_id: String,
    #[schema(required = true)]
    pub amount: Option<u64>,
    #[schema(required = true)]
    pub balance_id: Option<String>,
    #[schema(required = true)]
    pub pack_id: Option<String>,
    #[schema(required = true)]
    pub limit_id: Option<String>,
    #[schema(required = true)]
    pub reservation_id: Option<String>,
    #[schema(required = true)]
    pub allocations: Option<Vec<Allocation>>,
    #[schema(required = true)]
    pub external_ref: Option<String>,
    #[schema(required = true)]
    pub source: Option<GrantSource>,
    #[schema(required = true)]
    pub reason: Option<String>,
    #[schema(required = true)]
    pub notes: Option<String>,
    #[schema(required = true)]
    pub plan_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LedgerPage {
    /// Newest first.
    pub data: Vec<LedgerEntry>,
    pub has_more: bool,
}

// ---- Stripe, test clock, operations -------------------------------------------------------------

/// A handled Stripe event. `ignored` is set for events that change nothing; `created` and
/// `balances` (ids) for a checkout that granted; `revoked` (balance ids) for a full refund.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StripeReceived {
    pub received: bool,
    pub ignored: Option<bool>,
    pub created: Option<bool>,
    pub balances: Option<Vec<String>>,
    pub revoked: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Clock {
    #[schema(value_type = Timestamp)]
    pub now: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Status {
    #[schema(example = "serving")]
    pub status: String,
}

// ---- batch -------------------------------------------------------------------------------------

/// `POST /v1/batch`: 1 to 1,000 operations, each shaped as its single call's body plus `op`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"operations": [
    {"op": "reserve", "userId": "ana", "model": "image.dall-e-3", "amount": 1},
    {"op": "consume", "userId": "ana", "model": "image.dall-e-3", "amount": 1},
    {"op": "check", "userId": "ana", "model": "image.dall-e-3", "amount": 1}]}))]
pub struct BatchBody {
    /// `{"op": "reserve" | "consume" | "check" | "commit" | "release", ...}`: the fields of the
    /// single call (`reservationId` for commit and release). Any value is accepted here: a
    /// malformed operation is a 400 in its own result slot, not for the whole batch (API.md).
    #[schema(min_items = 1, max_items = 1000)]
    pub operations: Vec<serde_json::Value>,
}

/// One operation's answer: what the single call would have answered.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchResult {
    pub status: u16,
    /// The single call's body: a reservation, a decision, or `{"error": {...}}`.
    pub body: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub results: Vec<BatchResult>,
}

// ---- webhooks out ------------------------------------------------------------------------------

/// An event type (API.md, "Webhooks out").
#[derive(Serialize, ToSchema)]
pub enum EventType {
    #[serde(rename = "credits.granted")]
    CreditsGranted,
    #[serde(rename = "credits.revoked")]
    CreditsRevoked,
    #[serde(rename = "credits.expired")]
    CreditsExpired,
    #[serde(rename = "credits.low")]
    CreditsLow,
    #[serde(rename = "credits.depleted")]
    CreditsDepleted,
    #[serde(rename = "credits.expiring")]
    CreditsExpiring,
    #[serde(rename = "plan.limit_reached")]
    PlanLimitReached,
    #[serde(rename = "subscription.updated")]
    SubscriptionUpdated,
    #[serde(rename = "subscription.canceled")]
    SubscriptionCanceled,
    #[serde(rename = "reservation.expired")]
    ReservationExpired,
}

/// An event type, or `*` (alone) for every type.
#[derive(Serialize, ToSchema)]
pub enum EventTypeOrAll {
    #[serde(rename = "*")]
    All,
    #[serde(rename = "credits.granted")]
    CreditsGranted,
    #[serde(rename = "credits.revoked")]
    CreditsRevoked,
    #[serde(rename = "credits.expired")]
    CreditsExpired,
    #[serde(rename = "credits.low")]
    CreditsLow,
    #[serde(rename = "credits.depleted")]
    CreditsDepleted,
    #[serde(rename = "credits.expiring")]
    CreditsExpiring,
    #[serde(rename = "plan.limit_reached")]
    PlanLimitReached,
    #[serde(rename = "subscription.updated")]
    SubscriptionUpdated,
    #[serde(rename = "subscription.canceled")]
    SubscriptionCanceled,
    #[serde(rename = "reservation.expired")]
    ReservationExpired,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"id": "we_01JD5ZQ3A8K2V6N9W4X7Y0B1C2", "url": "https://example.com/vevee-events",
    "events": ["credits.low"], "description": null, "enabled": true,
    "createdAt": "2026-11-22T21:40:00Z"}))]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<EventTypeOrAll>,
    #[schema(required = true)]
    pub description: Option<String>,
    /// `false` once the app or the server (after 24 h of failures) disabled it.
    pub enabled: bool,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
}

/// An endpoint with its secret: only in the answers to create and rotate-secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookEndpointWithSecret {
    pub id: String,
    pub url: String,
    pub events: Vec<EventTypeOrAll>,
    #[schema(required = true)]
    pub description: Option<String>,
    pub enabled: bool,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
    /// `whsec_` + base64 of 32 random bytes: the Standard Webhooks signing key.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/=]+$")]
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointList {
    /// Oldest first.
    pub data: Vec<WebhookEndpoint>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointDeleted {
    pub id: String,
    pub deleted: bool,
}

/// The data of `plan.limit_reached`: the counter that ran out.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitReached {
    #[schema(value_type = UserId)]
    pub user_id: String,
    pub counter: Counter,
}

/// The object an event carries, as it was when it fired: a Balance (`credits.*`), a Subscription,
/// a Reservation (`reservation.expired`) or the counter of `plan.limit_reached`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventData {
    Balance(Balance),
    Subscription(Subscription),
    Reservation(Reservation),
    LimitReached(LimitReached),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventMode {
    Live,
    Test,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    /// `evt_…`; also the `webhook-id` of its deliveries.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    #[schema(value_type = Timestamp)]
    pub created_at: String,
    pub mode: EventMode,
    pub data: EventData,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventPage {
    /// Newest first.
    pub data: Vec<Event>,
    pub has_more: bool,
}
