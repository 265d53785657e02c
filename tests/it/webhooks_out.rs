//! Webhooks out (API.md, "Webhooks out"): endpoints, `GET /v1/events`, and deliveries to a
//! receiver inside the test, checked against the contract (signatures computed here from the
//! spec, not with the server's code; `scripts/test.d/45-webhooks.sh` checks them with the spec's
//! own Python library).

use crate::dashboard::{Browser, PASSWORD};
use crate::support::*;
use axum::http::{HeaderMap, Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Retries a second apart, so that a test sees them without waiting minutes.
pub(crate) const FAST_RETRIES: &str = "webhook_retry_seconds = [1, 1, 1]\n";
/// How long a test waits for a delivery before it fails: generous, the machine is shared.
const WAIT: Duration = Duration::from_secs(60);

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) id: String,
    timestamp: String,
    signature: String,
    raw: String,
    body: Value,
    /// What the receiver answered.
    pub(crate) status: u16,
}

/// A receiver on 127.0.0.1 that records every POST and answers 500 to the first `fail_first`.
pub(crate) struct Receiver {
    pub(crate) url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
    /// How many more POSTs are answered 500.
    failures: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn receiver(fail_first: usize) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    receiver_on(listener, fail_first)
}

fn receiver_on(listener: tokio::net::TcpListener, fail_first: usize) -> Receiver {
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicUsize::new(fail_first));
    let control = failures.clone();
    let record = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let record = record.clone();
            let failures = failures.clone();
            async move {
                let failing = failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let status = if failing { 500 } else { 200 };
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                record.lock().unwrap().push(Delivery {
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp"),
                    signature: header("webhook-signature"),
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                    raw: body,
                    status,
                });
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        url,
        got,
        failures: control,
        task,
    }
}

impl Receiver {
    pub(crate) fn all(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// From now on every POST is answered 200 (the receiver was repaired).
    fn succeed_from_now(&self) {
        self.failures.store(0, Ordering::SeqCst);
    }

    /// The deliveries answered 2xx.
    fn delivered(&self) -> Vec<Delivery> {
        self.all().into_iter().filter(|d| d.status == 200).collect()
    }

    /// Waits until `done` holds for what was received; panics after [`WAIT`].
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[Delivery]) -> bool,
    ) -> Vec<Delivery> {
        let started = Instant::now();
        loop {
            let all = self.all();
            if done(&all) {
                return all;
            }
            assert!(
                started.elapsed() < WAIT,
                "waited {WAIT:?} for {what}; received: {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn wait_delivered(&self, event_id: &str) -> Vec<Delivery> {
        self.wait_for(&format!("a 2xx delivery of {event_id}"), |all| {
            all.iter().any(|d| d.id == event_id && d.status == 200)
        })
        .await
    }
}

/// `v1,` + base64(HMAC-SHA256(base64-decoded secret after `whsec_`, "{id}.{ts}.{body}")), as the
/// Standard Webhooks spec defines it.
fn expected_signature(secret: &str, d: &Delivery) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", d.id, d.timestamp, d.raw).as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

async fn spawn_with_fast_retries() -> TestApp {
    spawn_app_tweaked(Tweaks {
        app_lines: FAST_RETRIES.into(),
        ..Tweaks::default()
    })
    .await
}

async fn create_endpoint(app: &TestApp, key: &str, url: &str, events: Value) -> Value {
    let r = app
        .post(
            "/v1/webhook-endpoints",
            key,
            json!({"url": url, "events": events}),
        )
        .await;
    ok(&r, 200).clone()
}

async fn patch(app: &TestApp, path: &str, key: &str, body: Value) -> Resp {
    app.send(
        Method::PATCH,
        path,
        Some(key),
        Some(body.to_string().into_bytes()),
        &[],
    )
    .await
}

/// Every event of the key's mode, oldest first, read through the paged list.
pub(crate) async fn all_events(app: &TestApp, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => "/v1/events?limit=100".to_owned(),
            Some(a) => format!("/v1/events?limit=100&startingAfter={a}"),
        };
        let page = ok(&app.get(&path, key).await, 200).clone();
        let data = page["data"].as_array().unwrap().clone();
        after = data.last().map(|e| e["id"].as_str().unwrap().to_owned());
        out.extend(data);
        if page["hasMore"] != true {
            break;
        }
    }
    out.reverse();
    out
}

/// The types of the events that appeared since `seen` events were known, oldest first.
async fn new_event_types(app: &TestApp, seen: &mut usize) -> Vec<String> {
    let events = all_events(app, SK_TEST).await;
    let fresh = events[*seen..]
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    *seen = events.len();
    fresh
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_event_with_the_same_id_on_the_third_attempt() {
    let app = spawn_with_fast_retries().await;
    let rx = receiver(2).await;
    let endpoint = create_endpoint(&app, SK_TEST, &rx.url, json!(["credits.granted"])).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    app.grant(SK_TEST, "ana", "cpk_gemini_topup", "cs_retry")
        .await;
    let event = all_events(&app, SK_TEST).await.pop().expect("one event");
    let id = event["id"].as_str().unwrap();
    let got = rx.wait_delivered(id).await;

    let statuses: Vec<u16> = got.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [500, 500, 200], "{got:#?}");
    for d in &got {
        assert_eq!(d.id, id, "the same webhook-id on every attempt");
        assert_eq!(d.raw, got[0].raw, "the same body on every attempt");
        assert_eq!(d.signature, expected_signature(&secret, d));
    }
    assert_eq!(
        got[2].body, event,
        "the body is the event of GET /v1/events"
    );
    assert_eq!(got[2].body["type"], "credits.granted");
    assert_eq!(got[2].body["mode"], "test");
    assert_eq!(got[2].body["data"]["packId"], "cpk_gemini_topup");
}

#[tokio::test]
async fn each_event_type_fires_when_its_condition_is_crossed_and_only_then() {
    let app = spawn_app().await;
    let mut seen = 0;
    // A pack with a low-balance threshold of 2 out of 5, expiring in 10 days.
    let pack = json!({"id": "cpk_low", "name": "Low", "price": {"amount": 100, "currency": "usd"},
        "expiresInDays": 10,
        "items": [{"id": "g", "match": GEMINI, "amount": 5, "unit": "count", "lowBalanceThreshold": 2}]});
    ok(&app.post("/v1/credit-packs", SK_TEST, pack).await, 201);

    let balance = app.grant_one(SK_TEST, "bo", "cpk_low", "cs_1").await;
    assert_eq!(new_event_types(&app, &mut seen).await, ["credits.granted"]);
    app.consume_ok(SK_TEST, "bo", GEMINI, 2).await; // 3 left: above the threshold
    assert!(new_event_types(&app, &mut seen).await.is_empty());
    app.consume_ok(SK_TEST, "bo", GEMINI, 1).await; // 2 left: crosses it
    assert_eq!(new_event_types(&app, &mut seen).await, ["credits.low"]);
    app.consume_ok(SK_TEST, "bo", GEMINI, 1).await; // 1 left: still below, no second one
    assert!(new_event_types(&app, &mut seen).await.is_empty());
    app.consume_ok(SK_TEST, "bo", GEMINI, 1).await; // 0 left
    assert_eq!(new_event_types(&app, &mut seen).await, ["credits.depleted"]);
    let denied = app.consume(SK_TEST, "bo", GEMINI, 1).await;
    assert_eq!(denied["allowed"], false);
    assert!(new_event_types(&app, &mut seen).await.is_empty());

    // A second balance, to watch expiry: nothing until 3 days before it expires.
    let second = app.grant_one(SK_TEST, "bo", "cpk_low", "cs_2").await;
    assert_eq!(new_event_types(&app, &mut seen).await, ["credits.granted"]);
    app.advance_clock(6 * DAY).await;
    app.usage(SK_TEST, "bo").await;
    assert!(new_event_types(&app, &mut seen).await.is_empty());
    app.advance_clock(DAY + 60).await; // 7 days and a minute: under 3 days left
    app.usage(SK_TEST, "bo").await;
    let types = new_event_types(&app, &mut seen).await;
    // The first balance expires on the same day: it was depleted, but it is told too.
    assert!(types.iter().all(|t| t == "credits.expiring"), "{types:?}");
    let expiring = all_events(&app, SK_TEST).await;
    assert!(
        expiring
            .iter()
            .any(|e| e["type"] == "credits.expiring" && e["data"]["id"] == second.as_str())
    );
    app.advance_clock(DAY).await;
    app.usage(SK_TEST, "bo").await;
    assert!(
        new_event_types(&app, &mut seen).await.is_empty(),
        "once per balance"
    );
    app.advance_clock(3 * DAY).await; // past expiresAt
    app.usage(SK_TEST, "bo").await;
    let expired = all_events(&app, SK_TEST).await;
    let types = new_event_types(&app, &mut seen).await;
    assert!(types.contains(&"credits.expired".to_owned()), "{types:?}");
    assert!(expired.iter().any(|e| e["type"] == "credits.expired"
        && e["data"]["id"] == second.as_str()
        && e["data"]["status"] == "expired"));
    let _ = balance;

    // Revoke.
    let third = app
        .grant_one(SK_TEST, "bo", "cpk_gemini_topup", "cs_3")
        .await;
    assert_eq!(new_event_types(&app, &mut seen).await, ["credits.granted"]);
    app.revoke(SK_TEST, &third, "refund").await;
    assert_eq!(new_event_types(&app, &mut seen).await, ["credits.revoked"]);

    // Subscriptions and the plan limit: Free gives 2 Gemini images for life.
    app.subscribe(SK_TEST, "cy", "free").await;
    assert_eq!(
        new_event_types(&app, &mut seen).await,
        ["subscription.updated"]
    );
    app.subscribe(SK_TEST, "cy", "free").await; // the same plan again changes nothing
    assert!(new_event_types(&app, &mut seen).await.is_empty());
    app.consume_ok(SK_TEST, "cy", GEMINI, 1).await;
    assert!(new_event_types(&app, &mut seen).await.is_empty());
    app.consume_ok(SK_TEST, "cy", GEMINI, 1).await;
    assert_eq!(
        new_event_types(&app, &mut seen).await,
        ["plan.limit_reached"]
    );
    let reached = all_events(&app, SK_TEST).await.pop().unwrap();
    assert_eq!(reached["data"]["userId"], "cy");
    assert_eq!(reached["data"]["counter"]["limitId"], "images");
    assert_eq!(reached["data"]["counter"]["remaining"], 0);
    assert_eq!(
        app.consume(SK_TEST, "cy", GEMINI, 1).await["allowed"],
        false
    );
    assert!(new_event_types(&app, &mut seen).await.is_empty());
    app.cancel(SK_TEST, "cy").await;
    assert_eq!(
        new_event_types(&app, &mut seen).await,
        ["subscription.canceled"]
    );

    // A reservation past its TTL.
    let grant = app
        .grant_one(SK_TEST, "di", "cpk_gemini_topup", "cs_4")
        .await;
    assert_eq!(new_event_types(&app, &mut seen).await, ["credits.granted"]);
    let r = app
        .reserve_with(
            SK_TEST,
            json!({"userId": "di", "model": GEMINI, "amount": 1, "ttlSeconds": 60}),
        )
        .await;
    assert_eq!(r["allowed"], true);
    assert!(new_event_types(&app, &mut seen).await.is_empty());
    app.advance_clock(61).await;
    app.usage(SK_TEST, "di").await;
    assert_eq!(
        new_event_types(&app, &mut seen).await,
        ["reservation.expired"]
    );
    let expired = all_events(&app, SK_TEST).await.pop().unwrap();
    assert_eq!(expired["data"]["reservationId"], r["reservationId"]);
    assert_eq!(expired["data"]["status"], "expired");
    let _ = grant;
}

#[tokio::test]
async fn test_mode_events_never_reach_a_live_endpoint() {
    let app = spawn_with_fast_retries().await;
    let live = receiver(0).await;
    let test = receiver(0).await;
    create_endpoint(&app, SK_LIVE, &live.url, json!(["*"])).await;
    create_endpoint(&app, SK_TEST, &test.url, json!(["*"])).await;
    app.grant(SK_TEST, "ana", "cpk_gemini_topup", "cs_t1").await;
    app.subscribe(SK_TEST, "ana", "pro").await;
    let test_events = all_events(&app, SK_TEST).await;
    assert_eq!(test_events.len(), 2);
    for e in &test_events {
        test.wait_delivered(e["id"].as_str().unwrap()).await;
    }
    // A live change after them: once it has arrived, anything routed wrongly would have too.
    app.grant(SK_LIVE, "ana", "cpk_gemini_topup", "cs_l1").await;
    let live_events = all_events(&app, SK_LIVE).await;
    assert_eq!(live_events.len(), 1);
    assert_eq!(live_events[0]["mode"], "live");
    live.wait_delivered(live_events[0]["id"].as_str().unwrap())
        .await;
    assert!(
        live.all().iter().all(|d| d.body["mode"] == "live"),
        "{:#?}",
        live.all()
    );
    assert!(test.all().iter().all(|d| d.body["mode"] == "test"));
    assert_eq!(live.delivered().len(), 1);
}

#[tokio::test]
async fn endpoints_are_created_read_changed_and_deleted_per_mode_without_their_secret() {
    let app = spawn_app().await;
    let created = create_endpoint(
        &app,
        SK_TEST,
        "https://example.com/hook",
        json!(["credits.low", "credits.depleted"]),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("we_"));
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    assert!(STANDARD.decode(&secret[6..]).unwrap().len() >= 24);
    assert_eq!(created["enabled"], true);
    assert_eq!(created["description"], Value::Null);

    let got = ok(
        &app.get(&format!("/v1/webhook-endpoints/{id}"), SK_TEST)
            .await,
        200,
    )
    .clone();
    assert!(got.get("secret").is_none(), "{got}");
    let list = ok(&app.get("/v1/webhook-endpoints", SK_TEST).await, 200).clone();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(list["data"][0].get("secret").is_none());
    // Another mode does not see it.
    let live = ok(&app.get("/v1/webhook-endpoints", SK_LIVE).await, 200).clone();
    assert_eq!(live["data"], json!([]));
    let r = app
        .get(&format!("/v1/webhook-endpoints/{id}"), SK_LIVE)
        .await;
    assert_eq!(r.0, StatusCode::NOT_FOUND);
    assert_eq!(r.1["error"]["code"], "endpoint_not_found");
    // A publishable key may not.
    let r = app.get("/v1/webhook-endpoints", PK_TEST).await;
    assert_eq!(r.0, StatusCode::FORBIDDEN);

    let path = format!("/v1/webhook-endpoints/{id}");
    let changed = patch(
        &app,
        &path,
        SK_TEST,
        json!({"events": ["*"], "description": "all", "enabled": false}),
    )
    .await;
    let changed = ok(&changed, 200);
    assert_eq!(changed["events"], json!(["*"]));
    assert_eq!(changed["description"], "all");
    assert_eq!(changed["enabled"], false);
    assert_eq!(changed["url"], "https://example.com/hook");
    let cleared = patch(&app, &path, SK_TEST, json!({"description": null})).await;
    assert_eq!(ok(&cleared, 200)["description"], Value::Null);

    let deleted = app.delete(&path, SK_TEST).await;
    assert_eq!(
        ok(&deleted, 200).clone(),
        json!({"id": id, "deleted": true})
    );
    assert_eq!(app.get(&path, SK_TEST).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&path, SK_TEST).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_endpoint_input_gets_a_clear_error_and_changes_nothing() {
    let app = spawn_app().await;
    let first = create_endpoint(&app, SK_TEST, "https://example.com/a", json!(["*"])).await;
    let before = ok(&app.get("/v1/webhook-endpoints", SK_TEST).await, 200).clone();
    let long = format!("https://example.com/{}", "a".repeat(2048));
    let cases = [
        (
            json!({"url": "ftp://example.com/hook", "events": ["*"]}),
            "url",
        ),
        (json!({"url": "example.com/hook", "events": ["*"]}), "url"),
        (json!({"url": long, "events": ["*"]}), "url"),
        (
            json!({"url": "https://example.com/b", "events": ["credits.lowish"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com/b", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com/b", "events": ["*", "credits.low"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com/b", "events": ["*"], "description": "d".repeat(501)}),
            "description",
        ),
    ];
    for (body, param) in cases {
        let r = app
            .post("/v1/webhook-endpoints", SK_TEST, body.clone())
            .await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{body}: {:?}", r.1);
        assert_eq!(r.1["error"]["type"], "invalid_request");
        assert_eq!(r.1["error"]["param"], param, "{}", r.1);
        assert!(!r.1["error"]["message"].as_str().unwrap().is_empty());
    }
    // The same rules on a change.
    let path = format!("/v1/webhook-endpoints/{}", first["id"].as_str().unwrap());
    let r = patch(&app, &path, SK_TEST, json!({"url": "mailto:a@example.com"})).await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST);
    assert_eq!(r.1["error"]["param"], "url");
    let r = patch(
        &app,
        &path,
        SK_TEST,
        json!({"events": ["nope"], "enabled": false}),
    )
    .await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        ok(&app.get("/v1/webhook-endpoints", SK_TEST).await, 200).clone(),
        before,
        "a refused request changes nothing"
    );

    // 16 in all are allowed; the 17th is refused.
    for i in 1..16 {
        create_endpoint(
            &app,
            SK_TEST,
            &format!("https://example.com/{i}"),
            json!(["*"]),
        )
        .await;
    }
    let full = ok(&app.get("/v1/webhook-endpoints", SK_TEST).await, 200).clone();
    assert_eq!(full["data"].as_array().unwrap().len(), 16);
    let r = app
        .post(
            "/v1/webhook-endpoints",
            SK_TEST,
            json!({"url": "https://example.com/17", "events": ["*"]}),
        )
        .await;
    assert_eq!(r.0, StatusCode::CONFLICT, "{:?}", r.1);
    assert_eq!(r.1["error"]["code"], "too_many_endpoints");
    assert_eq!(
        ok(&app.get("/v1/webhook-endpoints", SK_TEST).await, 200).clone(),
        full
    );
    // The bound is per mode: live mode has its own 16.
    create_endpoint(&app, SK_LIVE, "https://example.com/live", json!(["*"])).await;
}

#[tokio::test]
async fn after_a_rotation_both_secrets_sign_each_delivery() {
    let app = spawn_with_fast_retries().await;
    let rx = receiver(0).await;
    let created = create_endpoint(&app, SK_TEST, &rx.url, json!(["credits.granted"])).await;
    let old = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap();
    let rotated = app
        .post(
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            SK_TEST,
            json!({}),
        )
        .await;
    let rotated = ok(&rotated, 200).clone();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    assert_eq!(rotated["id"], id);

    app.grant(SK_TEST, "ana", "cpk_gemini_topup", "cs_rot")
        .await;
    let event = all_events(&app, SK_TEST).await.pop().unwrap();
    let got = rx.wait_delivered(event["id"].as_str().unwrap()).await;
    let d = &got[0];
    let signatures: Vec<&str> = d.signature.split(' ').collect();
    assert_eq!(signatures.len(), 2, "{}", d.signature);
    assert!(signatures.contains(&expected_signature(&new, d).as_str()));
    assert!(signatures.contains(&expected_signature(&old, d).as_str()));
}

#[tokio::test]
async fn events_are_listed_newest_first_in_pages_and_by_type() {
    let app = spawn_app().await;
    for i in 0..3 {
        app.grant(SK_TEST, "ana", "cpk_gemini_topup", &format!("cs_{i}"))
            .await;
    }
    app.subscribe(SK_TEST, "ana", "pro").await;
    let all = all_events(&app, SK_TEST).await;
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "credits.granted",
            "credits.granted",
            "credits.granted",
            "subscription.updated"
        ]
    );
    for e in &all {
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(e["mode"], "test");
        assert!(e["createdAt"].is_string());
    }

    let first = ok(&app.get("/v1/events?limit=2", SK_TEST).await, 200).clone();
    assert_eq!(first["hasMore"], true);
    assert_eq!(first["data"][0], all[3], "newest first");
    assert_eq!(first["data"][1], all[2]);
    let after = first["data"][1]["id"].as_str().unwrap();
    let second = ok(
        &app.get(
            &format!("/v1/events?limit=2&startingAfter={after}"),
            SK_TEST,
        )
        .await,
        200,
    )
    .clone();
    assert_eq!(second["data"], json!([all[1], all[0]]));
    assert_eq!(second["hasMore"], false);

    let granted = ok(
        &app.get("/v1/events?type=credits.granted&limit=2", SK_TEST)
            .await,
        200,
    )
    .clone();
    assert_eq!(granted["data"], json!([all[2], all[1]]));
    assert_eq!(granted["hasMore"], true);
    let subs = ok(
        &app.get("/v1/events?type=subscription.updated", SK_TEST)
            .await,
        200,
    )
    .clone();
    assert_eq!(subs["data"], json!([all[3]]));
    assert_eq!(subs["hasMore"], false);

    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("type=credits.lowish", "type"),
        ("startingAfter=evt_nope", "startingAfter"),
    ] {
        let r = app.get(&format!("/v1/events?{query}"), SK_TEST).await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{query}: {:?}", r.1);
        assert_eq!(r.1["error"]["param"], param, "{query}: {:?}", r.1);
    }
    // Live mode has its own events; a test event is not a live cursor.
    let live = ok(&app.get("/v1/events", SK_LIVE).await, 200).clone();
    assert_eq!(live, json!({"data": [], "hasMore": false}));
    let r = app
        .get(&format!("/v1/events?startingAfter={after}"), SK_LIVE)
        .await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get("/v1/events", PK_TEST).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn an_event_acknowledged_before_a_kill_9_is_delivered_after_the_restart() {
    let mut app = spawn_app_tweaked(Tweaks {
        app_lines: "webhook_retry_seconds = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n".into(),
        ..Tweaks::default()
    })
    .await;
    // The receiver is down at first: its port is reserved, then freed, so connections fail.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/hook");
    create_endpoint(&app, SK_TEST, &url, json!(["*"])).await;
    app.grant(SK_TEST, "ana", "cpk_gemini_topup", "cs_crash")
        .await;
    let event = all_events(&app, SK_TEST).await.pop().unwrap();
    app.crash();

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let rx = receiver_on(listener, 0);
    app.start_again().await;
    let got = rx.wait_delivered(event["id"].as_str().unwrap()).await;
    let delivered: Vec<&Delivery> = got.iter().filter(|d| d.status == 200).collect();
    assert_eq!(delivered[0].body, event);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_outbox_fills_is_disabled_and_its_events_stay_listed() {
    // Retries an hour apart: every row stays pending while the test runs.
    let app = Arc::new(
        spawn_app_tweaked(Tweaks {
            app_lines: "webhook_retry_seconds = [3600]\n".into(),
            ..Tweaks::default()
        })
        .await,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    let endpoint = create_endpoint(&app, SK_LIVE, &url, json!(["credits.granted"])).await;
    let path = format!("/v1/webhook-endpoints/{}", endpoint["id"].as_str().unwrap());
    // One event per grant, past the bound of 10,000 pending deliveries (README, bounds).
    const GRANTS: usize = 10_050;
    const TASKS: usize = 32;
    let mut set = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let app = app.clone();
        set.spawn(async move {
            for i in (task..GRANTS).step_by(TASKS) {
                let user = format!("u_full_{}", i % 500);
                app.grant(SK_LIVE, &user, "cpk_gemini_topup", &format!("cs_full_{i}"))
                    .await;
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.expect("grant task");
    }
    let started = Instant::now();
    loop {
        let shown = ok(&app.get(&path, SK_LIVE).await, 200).clone();
        if shown["enabled"] == false {
            break;
        }
        assert!(started.elapsed() < WAIT, "still enabled: {shown}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = reqwest::get(format!("{}/metrics", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("vevee_webhook_dropped_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(dropped >= 1.0, "drops are counted: {metrics}");
    let listed = all_events(&app, SK_LIVE).await;
    let granted = listed
        .iter()
        .filter(|e| e["type"] == "credits.granted")
        .count();
    assert_eq!(granted, GRANTS, "every event stays in GET /v1/events");
}

/// Retries a second apart for ten seconds, and an endpoint disabled after 2 s of failures (the
/// default is 24 h).
const DISABLE_AFTER_TWO_SECONDS: &str = "webhook_retry_seconds = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n\
                                         webhook_disable_after_seconds = 2\n";

/// Waits until the endpoint at `path` reads `enabled: want`; panics after [`WAIT`].
async fn wait_enabled(app: &TestApp, path: &str, want: bool) -> Value {
    let started = Instant::now();
    loop {
        let shown = ok(&app.get(path, SK_TEST).await, 200).clone();
        if shown["enabled"] == want {
            return shown;
        }
        assert!(started.elapsed() < WAIT, "enabled is not {want}: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The newest event of the test mode.
async fn newest_event(app: &TestApp) -> Value {
    all_events(app, SK_TEST).await.pop().expect("an event")
}

/// The dashboard's webhooks page of test mode, signed in.
async fn webhooks_page(app: &TestApp) -> String {
    let browser = Browser::new(app, "127.0.0.1");
    let cookie = browser.session(PASSWORD).await;
    let page = browser.get("/dashboard/test/webhooks", &cookie).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.body
}

#[tokio::test]
async fn an_endpoint_failing_for_the_window_is_disabled_and_enabling_it_sends_what_waited() {
    let app = spawn_app_tweaked(Tweaks {
        app_lines: DISABLE_AFTER_TWO_SECONDS.into(),
        ..Tweaks::default()
    })
    .await;
    let rx = receiver(usize::MAX).await;
    let endpoint = create_endpoint(&app, SK_TEST, &rx.url, json!(["*"])).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    let path = format!("/v1/webhook-endpoints/{}", endpoint["id"].as_str().unwrap());

    // Every attempt fails: after 2 s of failures the server disables the endpoint.
    app.grant(SK_TEST, "ana", "cpk_gemini_topup", "cs_down_1")
        .await;
    let pending = newest_event(&app).await;
    wait_enabled(&app, &path, false).await;
    let failed = rx.all();
    assert!(failed.len() >= 2, "{failed:#?}");
    assert!(
        failed
            .iter()
            .all(|d| d.status == 500 && d.id == pending["id"])
    );
    let page = webhooks_page(&app).await;
    assert!(
        page.contains("was disabled") && page.contains("every delivery failed for 2 seconds"),
        "{page}"
    );

    // Disabled, it is sent nothing: neither its pending event nor one made now.
    app.grant(SK_TEST, "ana", "cpk_gemini_topup", "cs_down_2")
        .await;
    let made_while_disabled = newest_event(&app).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // three retry waits
    assert_eq!(rx.all().len(), failed.len(), "{:#?}", rx.all());

    // The receiver is repaired and the app enables the endpoint: what waited for it arrives,
    // and so do new events.
    rx.succeed_from_now();
    let enabled = patch(&app, &path, SK_TEST, json!({"enabled": true})).await;
    assert_eq!(ok(&enabled, 200)["enabled"], true);
    rx.wait_delivered(pending["id"].as_str().unwrap()).await;
    rx.wait_delivered(made_while_disabled["id"].as_str().unwrap())
        .await;
    app.grant(SK_TEST, "ana", "cpk_gemini_topup", "cs_up").await;
    let after = newest_event(&app).await;
    rx.wait_delivered(after["id"].as_str().unwrap()).await;

    let events = all_events(&app, SK_TEST).await;
    let delivered = rx.delivered();
    assert_eq!(delivered.len(), 3, "each once: {delivered:#?}");
    for d in &delivered {
        assert_eq!(d.signature, expected_signature(&secret, d));
        assert!(
            events.contains(&d.body),
            "{:?} is an event of GET /v1/events",
            d.body
        );
    }
    assert_eq!(wait_enabled(&app, &path, true).await["enabled"], true);
    assert!(!webhooks_page(&app).await.contains("was disabled"));
}

#[tokio::test]
async fn an_endpoint_the_app_disables_is_sent_nothing_until_enabled_then_gets_what_waited() {
    let app = spawn_with_fast_retries().await;
    let rx = receiver(0).await;
    let endpoint = create_endpoint(&app, SK_TEST, &rx.url, json!(["credits.granted"])).await;
    let path = format!("/v1/webhook-endpoints/{}", endpoint["id"].as_str().unwrap());
    let off = patch(&app, &path, SK_TEST, json!({"enabled": false})).await;
    assert_eq!(ok(&off, 200)["enabled"], false);

    app.grant(SK_TEST, "ana", "cpk_gemini_topup", "cs_paused")
        .await;
    let paused = newest_event(&app).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // ten looks of the deliverer
    assert!(rx.all().is_empty(), "{:#?}", rx.all());
    let page = webhooks_page(&app).await;
    assert!(
        page.contains("Nothing is sent to it while it is disabled"),
        "{page}"
    );
    assert!(!page.contains("The server disabled"), "{page}");

    let on = patch(&app, &path, SK_TEST, json!({"enabled": true})).await;
    assert_eq!(ok(&on, 200)["enabled"], true);
    rx.wait_delivered(paused["id"].as_str().unwrap()).await;
    app.grant(SK_TEST, "ana", "cpk_gemini_topup", "cs_resumed")
        .await;
    let resumed = newest_event(&app).await;
    rx.wait_delivered(resumed["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn an_endpoint_receives_only_the_events_made_after_it_was_created() {
    let app = spawn_with_fast_retries().await;
    // The test clock a day ahead of the wall clock: each mode is judged by its own clock.
    app.advance_clock(DAY).await;
    for key in [SK_TEST, SK_LIVE] {
        let rx = receiver(0).await;
        app.grant(key, "ana", "cpk_gemini_topup", &format!("cs_before_{key}"))
            .await;
        // At once: before the deliverer's next look for new events.
        let endpoint = create_endpoint(&app, key, &rx.url, json!(["*"])).await;
        app.grant(key, "ana", "cpk_gemini_topup", &format!("cs_after_{key}"))
            .await;
        let events = all_events(&app, key).await;
        let [before, after] = &events[..] else {
            panic!("two events: {events:#?}");
        };
        rx.wait_delivered(after["id"].as_str().unwrap()).await;
        let created = ts(&endpoint["createdAt"]);
        assert!(ts(&before["createdAt"]) <= created, "{before} {endpoint}");
        assert!(ts(&after["createdAt"]) > created, "{after} {endpoint}");
        assert!(
            rx.all().iter().all(|d| d.id == after["id"]),
            "only the later event: {:#?}",
            rx.all()
        );
    }
}
