//! `POST /v1/batch` (API.md "Batch"): each slot is what the single call would answer, operations on
//! one user apply in batch order, and a batch answered 200 is durable as a whole.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

fn batch_body(ops: &[Value]) -> Value {
    json!({ "operations": ops })
}

/// `(status, body)` of every slot, after checking the answer's shape.
#[track_caller]
fn slots(r: &Resp, count: usize) -> Vec<(u16, Value)> {
    let body = ok(r, 200);
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), count, "one result per operation: {body}");
    results
        .iter()
        .map(|r| {
            assert_eq!(r.as_object().unwrap().len(), 2, "status and body only: {r}");
            (
                r["status"].as_u64().expect("status") as u16,
                r["body"].clone(),
            )
        })
        .collect()
}

/// The single call an operation stands for, answered as `(status, body)`.
async fn single(app: &TestApp, key: &str, op: &Value) -> (u16, Value) {
    let mut body = op.as_object().expect("an object").clone();
    let kind = body.remove("op").expect("op");
    let path = match kind.as_str().unwrap() {
        "reserve" => "/v1/reservations".to_string(),
        "consume" => "/v1/consume".to_string(),
        "check" => "/v1/check".to_string(),
        verb @ ("commit" | "release") => {
            let id = body.remove("reservationId").expect("reservationId");
            format!("/v1/reservations/{}/{verb}", id.as_str().unwrap())
        }
        other => panic!("no single call for {other}"),
    };
    let r = app.post(&path, key, Value::Object(body)).await;
    (r.0.as_u16(), r.1)
}

/// Timestamps and ledger entry ids differ between twins by construction; everything else must not.
fn blank_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                let varies = matches!(
                    k.as_str(),
                    "createdAt"
                        | "expiresAt"
                        | "at"
                        | "periodStart"
                        | "resetsAt"
                        | "currentPeriodStart"
                ) || (k == "id" && x.as_str().is_some_and(|s| s.starts_with("le_")));
                if varies && !x.is_null() {
                    *x = json!("<time or entry id>");
                } else {
                    blank_times(x);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(blank_times),
        _ => {}
    }
}

/// `b` with the twin's ids replaced by the first user's (pairs are `(a, b)`), and times blanked.
fn as_twin(b: &Value, pairs: &[(String, String)]) -> Value {
    let mut text = b.to_string();
    for (a, b) in pairs {
        text = text.replace(b.as_str(), a.as_str());
    }
    let mut v: Value = serde_json::from_str(&text).unwrap();
    blank_times(&mut v);
    v
}

fn blanked(a: &Value) -> Value {
    let mut v = a.clone();
    blank_times(&mut v);
    v
}

fn id_of(v: &Value) -> String {
    v["reservationId"]
        .as_str()
        .expect("a reservation id")
        .to_string()
}

#[tokio::test]
async fn sixty_reserves_on_fifty_credits_allow_exactly_the_first_fifty_in_order() {
    let app = spawn_app().await;
    let u = "u_batch_sixty";
    let bal = app
        .grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_sixty")
        .await;
    let ops: Vec<Value> = (0..60)
        .map(|_| json!({"op": "reserve", "userId": u, "model": GEMINI, "amount": 1}))
        .collect();
    let r = app.post("/v1/batch", SK_TEST, batch_body(&ops)).await;
    let results = slots(&r, 60);

    let mut ids = HashSet::new();
    for (i, (status, body)) in results.iter().enumerate() {
        assert_eq!(*status, 200, "slot {i}: {body}");
        if i < 50 {
            assert_eq!(body["allowed"], true, "slot {i}: {body}");
            assert_eq!(body["status"], "pending");
            assert_eq!(allocs(&body["allocations"]), vec![credit_part(&bal, 1)]);
            assert!(ids.insert(id_of(body)), "slot {i} repeats a reservation id");
        } else {
            // Exactly the single call's denial once the credits are held.
            let denial = json!({"reservationId": null, "allowed": false,
                                "reasons": ["no_subscription", "credits_exhausted"],
                                "available": {"plan": 0, "credits": 0}});
            assert_eq!(body, &denial, "slot {i}");
        }
    }
    let b = app.balance(SK_TEST, &bal).await;
    assert_eq!(
        (b["remaining"].as_u64(), b["reserved"].as_u64()),
        (Some(0), Some(50)),
        "{b}"
    );
    assert_eq!(
        app.ledger_of_type(SK_TEST, u, "usage.reserved").await.len(),
        50
    );
    // The ids of one user sort in the order they were made: batch order.
    let in_order: Vec<String> = results[..50].iter().map(|(_, b)| id_of(b)).collect();
    let mut sorted = in_order.clone();
    sorted.sort();
    assert_eq!(in_order, sorted, "reservations were made in batch order");
    app.assert_ledger_agrees(SK_TEST, u).await;
}

/// The same state for a user in the test mode: the free plan, the creator bundle, and four
/// reservations for the batch to commit and release.
struct Twin {
    user: String,
    to_commit: String,
    to_release: String,
    released: String,
    small: String,
    /// Every id the twins differ by, in the same order for both.
    ids: Vec<String>,
}

async fn twin(app: &TestApp, user: &str) -> Twin {
    app.subscribe(SK_TEST, user, "free").await;
    let g = app
        .grant(SK_TEST, user, "cpk_creator_bundle", "cs_twin")
        .await;
    let to_commit = id_of(&app.reserve_ok(SK_TEST, user, DALLE, 2).await);
    let to_release = id_of(&app.reserve_ok(SK_TEST, user, VEO, 3).await);
    let released = id_of(&app.reserve_ok(SK_TEST, user, DALLE, 1).await);
    app.release(SK_TEST, &released).await;
    let small = id_of(&app.reserve_ok(SK_TEST, user, DALLE, 1).await);
    let mut ids = vec![
        to_commit.clone(),
        to_release.clone(),
        released.clone(),
        small.clone(),
        user.to_string(),
    ];
    for b in g["balances"].as_array().unwrap() {
        ids.push(b["id"].as_str().unwrap().to_string());
    }
    Twin {
        user: user.to_string(),
        to_commit,
        to_release,
        released,
        small,
        ids,
    }
}

/// Every operation, a third of them refused, on one user.
fn mixed_ops(t: &Twin, foreign: &str) -> Vec<Value> {
    let u = t.user.as_str();
    vec![
        json!({"op": "reserve", "userId": u, "model": GEMINI, "amount": 1}),
        json!({"op": "consume", "userId": u, "model": GEMINI, "amount": 1}),
        json!({"op": "reserve", "userId": u, "model": GEMINI, "amount": 1}),
        json!({"op": "check", "userId": u, "model": DALLE, "amount": 2}),
        json!({"op": "reserve", "userId": u, "model": DALLE, "amount": 3, "ttlSeconds": 120,
               "metadata": {"job": "j1"}}),
        json!({"op": "consume", "userId": u, "model": VEO, "amount": 1, "metadata": {"a": [1, 2]}}),
        json!({"op": "commit", "reservationId": t.to_commit, "amount": 1,
               "response": {"ok": true}}),
        json!({"op": "release", "reservationId": t.to_release, "errorCode": "provider_timeout"}),
        json!({"op": "commit", "reservationId": t.released}),
        json!({"op": "commit", "reservationId": t.small, "amount": 5}),
        json!({"op": "commit", "reservationId": "res_unknown"}),
        json!({"op": "release", "reservationId": foreign}),
        json!({"op": "consume", "userId": u, "model": DALLE, "amount": 0}),
        json!({"op": "reserve", "userId": u, "model": DALLE, "amount": 1, "colour": "red"}),
        json!({"op": "release", "reservationId": t.to_commit}),
        json!({"op": "commit", "reservationId": t.to_commit, "amount": 1}),
        json!({"op": "check", "userId": u, "model": DALLE, "amount": 100}),
        json!({"op": "reserve", "userId": u, "model": DALLE, "amount": 1, "ttlSeconds": 0}),
        json!({"op": "consume", "userId": u, "model": VEO, "amount": 99}),
        json!({"op": "reserve", "userId": "not a user id", "model": DALLE, "amount": 1}),
        json!({"op": "check", "userId": u, "model": "Not.A.Model", "amount": 1}),
    ]
}

#[tokio::test]
async fn every_slot_answers_what_the_single_call_answers_and_leaves_the_same_state() {
    let app = spawn_app().await;
    // A reservation of the live mode: unknown to a test key.
    app.grant_one(SK_LIVE, "u_live", "cpk_gemini_topup", "cs_live")
        .await;
    let foreign = id_of(&app.reserve_ok(SK_LIVE, "u_live", GEMINI, 1).await);

    let a = twin(&app, "u_batch_a").await;
    let b = twin(&app, "u_single_b").await;
    let mut pairs: Vec<(String, String)> = a.ids.iter().cloned().zip(b.ids.clone()).collect();

    let ops_a = mixed_ops(&a, &foreign);
    let ops_b = mixed_ops(&b, &foreign);
    let r = app.post("/v1/batch", SK_TEST, batch_body(&ops_a)).await;
    let batched = slots(&r, ops_a.len());
    let mut singles = Vec::new();
    for op in &ops_b {
        singles.push(single(&app, SK_TEST, op).await);
    }

    let statuses: Vec<u16> = batched.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [
            200, 200, 200, 200, 200, 200, 200, 200, 409, 400, 404, 404, 400, 400, 409, 200, 200,
            400, 200, 400, 400
        ],
        "{batched:?}"
    );
    // Reservations made by the batch pair with the twin's by slot.
    for ((_, x), (_, y)) in batched.iter().zip(&singles) {
        if let (Some(x), Some(y)) = (x["reservationId"].as_str(), y["reservationId"].as_str()) {
            pairs.push((x.to_string(), y.to_string()));
        }
    }
    for (i, ((sa, ba), (sb, bb))) in batched.iter().zip(&singles).enumerate() {
        assert_eq!(sa, sb, "slot {i} ({}): batch {ba}, single {bb}", ops_a[i]);
        assert_eq!(
            blanked(ba),
            as_twin(bb, &pairs),
            "slot {i} ({}) differs from the single call",
            ops_a[i]
        );
    }
    // A few answers by name, so that two equal mistakes cannot pass.
    assert_eq!(batched[2].1["reasons"], json!(["plan_exhausted"]));
    assert_eq!(batched[6].1["committedAmount"], 1);
    assert_eq!(batched[6].1["response"], json!({"ok": true}));
    assert_eq!(batched[7].1["status"], "released");
    assert_eq!(batched[8].1["error"]["code"], "reservation_not_pending");
    assert_eq!(batched[9].1["error"]["code"], "invalid_amount");
    assert_eq!(batched[10].1["error"]["code"], "reservation_not_found");
    assert_eq!(batched[13].1["error"]["code"], "unknown_parameter");
    assert_eq!(batched[13].1["error"]["param"], "colour");
    assert_eq!(batched[16].1["allowed"], false);
    assert_eq!(
        secs_between(&batched[4].1["createdAt"], &batched[4].1["expiresAt"]),
        120.0
    );

    // The same state: usage and the whole ledger, ids mapped to the twin's.
    let (ua, ub) = (
        app.usage(SK_TEST, &a.user).await,
        app.usage(SK_TEST, &b.user).await,
    );
    assert_eq!(blanked(&ua), as_twin(&ub, &pairs), "usage differs");
    let la = Value::Array(app.ledger_all(SK_TEST, &a.user).await);
    let lb = Value::Array(app.ledger_all(SK_TEST, &b.user).await);
    assert_eq!(blanked(&la), as_twin(&lb, &pairs), "ledger differs");
    let types: Vec<(Value, Value)> = la
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].clone(), e["amount"].clone()))
        .collect();
    assert!(
        types.contains(&(json!("usage.committed"), json!(1))),
        "{types:?}"
    );
    for (id, status) in [
        (&a.to_commit, "committed"),
        (&a.to_release, "released"),
        (&a.small, "pending"),
    ] {
        assert_eq!(app.reservation(SK_TEST, id).await["status"], status);
    }
    app.assert_ledger_agrees(SK_TEST, &a.user).await;
}

#[tokio::test]
async fn operations_on_several_users_each_apply_in_batch_order() {
    let app = spawn_app().await;
    let users = ["u_order_0", "u_order_1", "u_order_2"];
    for u in users {
        app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_order")
            .await;
    }
    // Interleaved: 20 consumes of 3 per user, 60 requested of 50 each; the 17th of each user is
    // the first that does not fit (16 × 3 = 48).
    let ops: Vec<Value> = (0..60)
        .map(|i| json!({"op": "consume", "userId": users[i % 3], "model": GEMINI, "amount": 3}))
        .collect();
    let results = slots(&app.post("/v1/batch", SK_TEST, batch_body(&ops)).await, 60);
    for (i, (status, body)) in results.iter().enumerate() {
        assert_eq!(*status, 200);
        let nth = i / 3;
        assert_eq!(
            body["allowed"],
            nth < 16,
            "slot {i} (consume {nth} of its user): {body}"
        );
        if nth < 16 {
            assert_eq!(body["userId"], users[i % 3]);
        }
    }
    for u in users {
        assert_eq!(urr_credits(&app.usage(SK_TEST, u).await), (2, 0));
        app.assert_ledger_agrees(SK_TEST, u).await;
    }
}

/// `(remaining, reserved)` of a user's only balance.
fn urr_credits(usage: &Value) -> (u64, u64) {
    let c = &usage["credits"][0];
    (
        c["remaining"].as_u64().unwrap(),
        c["reserved"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn a_batch_of_zero_or_1001_operations_or_of_another_shape_is_refused_whole() {
    let app = spawn_app().await;
    let u = "u_batch_bounds";
    app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_bounds")
        .await;
    let consume = json!({"op": "consume", "userId": u, "model": GEMINI, "amount": 1});

    let r = app.post("/v1/batch", SK_TEST, batch_body(&[])).await;
    assert_error(&r, 400, "invalid_request", None, Param::Is("operations"));
    let many = vec![consume.clone(); 1001];
    let r = app.post("/v1/batch", SK_TEST, batch_body(&many)).await;
    assert_error(&r, 400, "invalid_request", None, Param::Is("operations"));
    let r = app
        .post("/v1/batch", SK_TEST, json!({"operations": consume}))
        .await;
    assert_error(&r, 400, "invalid_request", None, Param::Is("operations"));
    let r = app.post("/v1/batch", SK_TEST, json!({})).await;
    assert_error(
        &r,
        400,
        "invalid_request",
        Some("parameter_missing"),
        Param::Is("operations"),
    );
    let r = app
        .post(
            "/v1/batch",
            SK_TEST,
            json!({"operations": [consume], "atomic": true}),
        )
        .await;
    assert_error(
        &r,
        400,
        "invalid_request",
        Some("unknown_parameter"),
        Param::Is("atomic"),
    );
    let r = app
        .post_raw("/v1/batch", SK_TEST, "{\"operations\": [")
        .await;
    assert_error(&r, 400, "invalid_request", Some("invalid_json"), Param::Any);
    let r = app
        .post(
            "/v1/batch",
            PK_TEST,
            batch_body(std::slice::from_ref(&consume)),
        )
        .await;
    assert_error(&r, 403, "permission", None, Param::Any);

    // Nothing of any refused batch was applied; 1000 is allowed.
    assert_eq!(urr_credits(&app.usage(SK_TEST, u).await), (50, 0));
    let thousand = vec![json!({"op": "check", "userId": u, "model": GEMINI, "amount": 1}); 1000];
    let results = slots(
        &app.post("/v1/batch", SK_TEST, batch_body(&thousand)).await,
        1000,
    );
    assert!(
        results
            .iter()
            .all(|(s, b)| *s == 200 && b["allowed"] == true)
    );
}

#[tokio::test]
async fn a_malformed_operation_is_a_400_in_its_own_slot_only() {
    let app = spawn_app().await;
    let u = "u_batch_slot";
    app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_slot")
        .await;
    let ops = vec![
        json!({"op": "consume", "userId": u, "model": GEMINI, "amount": 1}),
        json!({"op": "consume", "userId": u, "model": GEMINI, "amount": 1, "ttlSeconds": 60}),
        json!({"op": "refund", "userId": u}),
        json!({"userId": u, "model": GEMINI, "amount": 1}),
        json!(7),
        json!({"op": "consume", "userId": u, "model": GEMINI}),
        json!({"op": "consume", "userId": u, "model": GEMINI, "amount": 1}),
    ];
    let results = slots(
        &app.post("/v1/batch", SK_TEST, batch_body(&ops)).await,
        ops.len(),
    );
    let r = |i: usize| as_resp(&results[i]);
    assert_eq!(results[0].1["allowed"], true);
    assert_error(
        &r(1),
        400,
        "invalid_request",
        Some("unknown_parameter"),
        Param::Is("ttlSeconds"),
    );
    assert_error(&r(2), 400, "invalid_request", None, Param::Is("op"));
    assert_error(
        &r(3),
        400,
        "invalid_request",
        Some("parameter_missing"),
        Param::Is("op"),
    );
    assert_error(&r(4), 400, "invalid_request", None, Param::Any);
    assert_error(
        &r(5),
        400,
        "invalid_request",
        Some("parameter_missing"),
        Param::Is("amount"),
    );
    assert_eq!(results[6].1["allowed"], true);
    assert_eq!(urr_credits(&app.usage(SK_TEST, u).await), (48, 0));
    assert_eq!(
        app.ledger_of_type(SK_TEST, u, "usage.committed")
            .await
            .len(),
        2
    );
}

/// A slot as an answer, for the error assertions of the support module.
fn as_resp((status, body): &(u16, Value)) -> Resp {
    let status = reqwest::StatusCode::from_u16(*status).unwrap();
    (status, body.clone(), Default::default())
}

#[tokio::test]
async fn an_idempotency_key_replays_the_whole_batch_answer() {
    let app = spawn_app().await;
    let u = "u_batch_idem";
    app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_idem")
        .await;
    let ops: Vec<Value> = (0..3)
        .map(|_| json!({"op": "consume", "userId": u, "model": GEMINI, "amount": 2}))
        .chain([json!({"op": "commit", "reservationId": "res_unknown"})])
        .collect();
    let first = app
        .post_idem("/v1/batch", SK_TEST, batch_body(&ops), "batch-key-1")
        .await;
    slots(&first, 4);
    assert!(first.2.get("idempotent-replayed").is_none());
    let again = app
        .post_idem("/v1/batch", SK_TEST, batch_body(&ops), "batch-key-1")
        .await;
    assert_eq!(
        ok(&again, 200),
        &first.1,
        "the same answer, byte for byte in JSON"
    );
    assert_eq!(again.2["idempotent-replayed"], "true");
    assert_eq!(
        app.ledger_of_type(SK_TEST, u, "usage.committed")
            .await
            .len(),
        3
    );
    assert_eq!(urr_credits(&app.usage(SK_TEST, u).await), (44, 0));

    let other = app
        .post_idem("/v1/batch", SK_TEST, batch_body(&ops[..1]), "batch-key-1")
        .await;
    assert_error(
        &other,
        409,
        "conflict",
        Some("idempotency_key_reused"),
        Param::Any,
    );
    // Without a key the same body runs again.
    slots(&app.post("/v1/batch", SK_TEST, batch_body(&ops)).await, 4);
    assert_eq!(urr_credits(&app.usage(SK_TEST, u).await), (38, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_answered_200_before_a_sigkill_is_whole_in_the_ledger_after_restart() {
    let mut app = spawn_app().await;
    let users: Vec<String> = (0..6).map(|i| format!("u_batch_crash_{i}")).collect();
    for u in &users {
        for r in 0..4 {
            app.grant_one(SK_LIVE, u, "cpk_gemini_topup", &format!("cs_c{r}"))
                .await;
        }
    }
    let mut acked_all: BTreeSet<(String, String)> = BTreeSet::new();
    for round in 0..3 {
        let shared = Arc::new(app);
        let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let batches = Arc::new(Mutex::new(0usize));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..4 {
            let (app, acked, batches, users) = (
                shared.clone(),
                acked.clone(),
                batches.clone(),
                users.clone(),
            );
            tasks.spawn(async move {
                for n in 0.. {
                    let ops: Vec<Value> = (0..12)
                        .map(|i| {
                            let u = &users[(t + n + i) % users.len()];
                            json!({"op": "consume", "userId": u, "model": GEMINI, "amount": 1})
                        })
                        .collect();
                    match app.try_post("/v1/batch", SK_LIVE, batch_body(&ops)).await {
                        Ok((status, body, _)) if status.as_u16() == 200 => {
                            let mut acked = acked.lock().unwrap();
                            for r in body["results"].as_array().unwrap() {
                                assert_eq!(r["status"], 200, "{r}");
                                if r["body"]["allowed"] == true {
                                    acked.push((
                                        r["body"]["userId"].as_str().unwrap().to_string(),
                                        id_of(&r["body"]),
                                    ));
                                }
                            }
                            *batches.lock().unwrap() += 1;
                        }
                        Ok((status, body, _)) => panic!("batch answered {status}: {body}"),
                        Err(_) => return,
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while *batches.lock().unwrap() < 8 + 4 * round && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let pid = shared.pid().to_string();
        let st = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap();
        assert!(st.success());
        while let Some(done) = tasks.join_next().await {
            done.expect("a client task panicked");
        }
        assert!(
            *batches.lock().unwrap() > 0,
            "no batch was answered before the kill"
        );
        acked_all.extend(acked.lock().unwrap().iter().cloned());
        app = Arc::try_unwrap(shared).ok().expect("tasks are done");
        app.restart().await;

        for u in &users {
            let committed: HashSet<String> = app
                .ledger_of_type(SK_LIVE, u, "usage.committed")
                .await
                .iter()
                .map(|e| e["reservationId"].as_str().unwrap().to_string())
                .collect();
            let lost: Vec<&String> = acked_all
                .iter()
                .filter(|(owner, id)| owner == u && !committed.contains(id))
                .map(|(_, id)| id)
                .collect();
            assert!(
                lost.is_empty(),
                "round {round}: acknowledged consumes of {u} lost: {lost:?}"
            );
            app.assert_ledger_agrees(SK_LIVE, u).await;
        }
    }
    println!(
        "batch crash: 3 kills, {} acknowledged consumes",
        acked_all.len()
    );
    assert!(
        acked_all.len() >= 12,
        "too few acknowledged consumes to mean anything"
    );
}
