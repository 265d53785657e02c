//! `POST /v1/batch`: many reservation calls in one request.
//!
//! Each operation is parsed and validated by the same functions as its single route
//! ([`reservations`]), and its answer rendered by the same [`reservations::answer`], so a slot is
//! what the single call would have answered. The valid operations are grouped per user, in batch
//! order; each user's group goes to its actor as one message, all users at once, and the batch
//! answers once every group's reply is in: each comes when that user's changes are durable.

use super::error::ApiError;
use super::extract::{Body, Secret, parse_json};
use super::openapi::schemas as doc;
use super::reservations::{
    self, Call, CheckBody, CommitBody, ConsumeBody, ReleaseBody, ReserveBody, Shape,
};
use crate::access::Caller;
use crate::actors::user_actor::Request;
use crate::engine::UserKey;
use crate::engine::ids::UserId;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// At most this many operations in one batch (API.md).
pub const OPERATIONS_MAX: usize = 1000;

/// The whole body. Operations stay raw here: a malformed one is a 400 in its own slot, not for
/// the whole batch, so each is parsed on its own below.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    operations: Vec<Box<RawValue>>,
}

/// Just the `op` of an operation, to know which shape to parse it as.
#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
}

// The operations are the single calls' bodies plus `op` (and `reservationId`, the single call's
// path). serde cannot flatten into a struct that refuses unknown fields, so the fields are written
// again; the `From` impls below name every field, so the two cannot drift apart silently. Field
// order matches the single bodies, so a missing field is reported the same way.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReserveOp {
    #[allow(dead_code)]
    op: serde::de::IgnoredAny,
    user_id: String,
    model: String,
    amount: u64,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    metadata: Option<Value>,
}

impl From<ReserveOp> for ReserveBody {
    fn from(o: ReserveOp) -> ReserveBody {
        ReserveBody {
            user_id: o.user_id,
            model: o.model,
            amount: o.amount,
            ttl_seconds: o.ttl_seconds,
            metadata: o.metadata,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConsumeOp {
    #[allow(dead_code)]
    op: serde::de::IgnoredAny,
    user_id: String,
    model: String,
    amount: u64,
    #[serde(default)]
    metadata: Option<Value>,
}

impl From<ConsumeOp> for ConsumeBody {
    fn from(o: ConsumeOp) -> ConsumeBody {
        ConsumeBody {
            user_id: o.user_id,
            model: o.model,
            amount: o.amount,
            metadata: o.metadata,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CheckOp {
    #[allow(dead_code)]
    op: serde::de::IgnoredAny,
    user_id: String,
    model: String,
    amount: u64,
}

impl From<CheckOp> for CheckBody {
    fn from(o: CheckOp) -> CheckBody {
        CheckBody {
            user_id: o.user_id,
            model: o.model,
            amount: o.amount,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CommitOp {
    #[allow(dead_code)]
    op: serde::de::IgnoredAny,
    reservation_id: String,
    #[serde(default)]
    amount: Option<u64>,
    #[serde(default)]
    response: Option<Value>,
}

impl From<CommitOp> for (String, CommitBody) {
    fn from(o: CommitOp) -> (String, CommitBody) {
        let body = CommitBody {
            amount: o.amount,
            response: o.response,
        };
        (o.reservation_id, body)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReleaseOp {
    #[allow(dead_code)]
    op: serde::de::IgnoredAny,
    reservation_id: String,
    #[serde(default)]
    error_code: Option<String>,
}

impl From<ReleaseOp> for (String, ReleaseBody) {
    fn from(o: ReleaseOp) -> (String, ReleaseBody) {
        let body = ReleaseBody {
            error_code: o.error_code,
        };
        (o.reservation_id, body)
    }
}

/// One operation into the call its single route would make. `request_key` is the batch's
/// `Idempotency-Key` with the operation's index, for the same reason a single reserve keeps its
/// key: a retry of the batch after a crash that lost the stored answer finds the same holds.
fn operation(
    s: &AppState,
    caller: &Caller,
    raw: &RawValue,
    request_key: Option<String>,
) -> Result<Call, ApiError> {
    let text = raw.get();
    let bytes = text.as_bytes();
    let not_an_object = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            "an operation must be a JSON object with an `op`",
        )
    };
    if !text.starts_with('{') {
        return Err(not_an_object());
    }
    let tag: Tag = serde_json::from_str(text).map_err(|_| {
        ApiError::invalid(
            "op",
            "must be one of reserve, consume, check, commit, release",
        )
    })?;
    match tag.op.as_deref() {
        Some("reserve") => {
            let op: ReserveOp = parse_json(bytes)?;
            reservations::reserve_call(caller, op.into(), request_key, false)
        }
        Some("consume") => {
            let op: ConsumeOp = parse_json(bytes)?;
            let body = ConsumeBody::from(op);
            reservations::reserve_call(caller, body.into(), request_key, true)
        }
        Some("check") => {
            let op: CheckOp = parse_json(bytes)?;
            reservations::check_call(caller, op.into())
        }
        Some("commit") => {
            let (id, body) = parse_json::<CommitOp>(bytes)?.into();
            reservations::commit_call(s, caller, id, body)
        }
        Some("release") => {
            let (id, body) = parse_json::<ReleaseOp>(bytes)?.into();
            reservations::release_call(s, caller, id, body)
        }
        Some(_) => Err(ApiError::invalid(
            "op",
            "must be one of reserve, consume, check, commit, release",
        )),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "parameter_missing",
            "missing required parameter 'op'",
        )
        .param("op")),
    }
}

/// The valid operations of a batch, grouped per user in batch order.
#[derive(Default)]
struct Groups {
    /// What goes to the engine: each user's requests, in order.
    requests: Vec<(UserKey, Vec<Request>)>,
    /// For each group, the user and each request's slot and shape, in the same order.
    members: Vec<(UserId, Vec<(usize, Shape)>)>,
    index: FxHashMap<UserKey, usize>,
}

impl Groups {
    fn add(&mut self, slot: usize, call: Call) {
        let group = match self.index.get(&call.key) {
            Some(&g) => g,
            None => {
                let g = self.requests.len();
                self.index.insert(call.key.clone(), g);
                self.members.push((call.key.user.clone(), Vec::new()));
                self.requests.push((call.key, Vec::new()));
                g
            }
        };
        self.requests[group].1.push(call.request);
        self.members[group].1.push((slot, call.shape));
    }
}

/// One result. Fields in the order a `Value` (sorted keys) gave them, so the bytes did not change
/// when slots stopped going through one.
#[derive(Serialize)]
struct Slot<B> {
    body: B,
    status: u16,
}

/// A result serialized on its own: slots are filled out of order (user by user), then written
/// out in order.
fn slot(status: StatusCode, body: impl Serialize) -> Box<RawValue> {
    let slot = Slot {
        body,
        status: status.as_u16(),
    };
    serde_json::value::to_raw_value(&slot).expect("a batch slot serializes")
}

fn error_slot(error: &ApiError) -> Box<RawValue> {
    slot(error.status, error.body())
}

#[derive(Serialize)]
pub struct BatchAnswer {
    results: Vec<Box<RawValue>>,
}

fn idempotency_key(headers: &HeaderMap) -> Option<&str> {
    headers.get("idempotency-key").and_then(|v| v.to_str().ok())
}

#[utoipa::path(post, path = "/v1/batch", operation_id = "batch", tag = "Reservations",
    summary = "Many reservation calls in one request",
    description = "Operations are independent and not atomic; those on one user run in their order. Each result is what the single call would have answered. The answer comes once every change is durable.",
    security(("secretKey" = [])), request_body = doc::BatchBody,
    responses(
        (status = 200, description = "One result per operation, in order", body = doc::Batch),
        (status = 400, description = "Not `{\"operations\": [...]}`, or 0 or more than 1000 operations", body = doc::Error)))]
pub async fn batch(
    State(s): State<AppState>,
    Secret(caller): Secret,
    headers: HeaderMap,
    Body(body): Body<BatchBody>,
) -> Result<Json<BatchAnswer>, ApiError> {
    let count = body.operations.len();
    if !(1..=OPERATIONS_MAX).contains(&count) {
        return Err(ApiError::invalid(
            "operations",
            "must hold 1 to 1000 operations",
        ));
    }
    // A control character cannot appear in a header, so these keys never meet a single call's.
    let batch_key = idempotency_key(&headers);
    let mut results: Vec<Option<Box<RawValue>>> = vec![None; count];
    let mut groups = Groups::default();
    for (i, raw) in body.operations.iter().enumerate() {
        let request_key = batch_key.map(|k| format!("{k}\u{1f}{i}"));
        match operation(&s, &caller, raw, request_key) {
            Ok(call) => groups.add(i, call),
            Err(error) => results[i] = Some(error_slot(&error)),
        }
    }
    let answers = s.engine.batch(groups.requests).await;
    for ((user, members), answer) in groups.members.into_iter().zip(answers) {
        match answer {
            Ok(views) => {
                for ((i, shape), view) in members.into_iter().zip(views) {
                    let rendered = match view {
                        Ok(view) => reservations::answer(shape, &user, &view)
                            .map(|body| slot(StatusCode::OK, body)),
                        Err(rejection) => Err(ApiError::from(rejection)),
                    };
                    results[i] = Some(rendered.unwrap_or_else(|error| error_slot(&error)));
                }
            }
            Err(error) => {
                let error = ApiError::from(error);
                for (i, _) in members {
                    results[i] = Some(error_slot(&error));
                }
            }
        }
    }
    let results = results
        .into_iter()
        .map(|r| r.expect("every operation has a slot: an error, or its group's answer"))
        .collect();
    Ok(Json(BatchAnswer { results }))
}
