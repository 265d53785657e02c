//! Idle users go to sleep in a packed form: they wake with the same state, their deadlines still
//! fire on time, and a read of a user who has nothing stores nothing.

use serde_json::{Value, json};
use std::time::{Duration, Instant};

use crate::support::*;

async fn metric(app: &TestApp, name: &str) -> f64 {
    let r = app.get("/metrics", SK_TEST).await;
    let text = r.1.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until no user is awake, as the server reports it.
async fn until_all_asleep(app: &TestApp) {
    let started = Instant::now();
    while metric(app, "vevee_users_in_memory").await > 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "users never went to sleep"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ids of the balances a grant answer made.
fn balance_ids(grant: &Value) -> Vec<String> {
    grant["balances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

async fn everything(app: &TestApp, u: &str, ids: &[String]) -> Vec<Value> {
    let mut out = vec![
        app.usage(SK_TEST, u).await,
        app.get(&format!("/v1/users/{u}/subscription"), SK_TEST)
            .await
            .1,
        Value::Array(app.ledger_all(SK_TEST, u).await),
    ];
    for id in ids {
        let path = if id.starts_with("bal_") {
            format!("/v1/credits/balances/{id}")
        } else {
            format!("/v1/reservations/{id}")
        };
        out.push(app.get(&path, SK_TEST).await.1);
    }
    out
}

#[tokio::test]
async fn a_user_put_to_sleep_wakes_with_the_same_state_and_its_deadlines_fire_on_time() {
    let mut app = spawn_app_with(Options {
        idle_seconds: Some(1),
        ..Options::default()
    })
    .await;
    let u = "u_sleeper";
    app.subscribe(SK_TEST, u, "pro").await;
    let bundle = app
        .grant(SK_TEST, u, "cpk_creator_bundle", "cs_sleep")
        .await;
    let mut ids = balance_ids(&bundle);
    app.consume_ok(SK_TEST, u, DALLE, 2).await;
    let pending = app
        .reserve_with(
            SK_TEST,
            json!({"userId": u, "model": DALLE, "amount": 3, "ttlSeconds": 3600}),
        )
        .await;
    let pending_id = pending["reservationId"].as_str().unwrap().to_string();
    ids.push(pending_id.clone());
    let awake = everything(&app, u, &ids).await;

    until_all_asleep(&app).await;
    assert!(metric(&app, "vevee_users_asleep").await >= 1.0);
    assert_eq!(
        everything(&app, u, &ids).await,
        awake,
        "woken, the user reads exactly as before"
    );
    // Asleep, then killed: the ledger lines it moved to disk on the way to sleep come back by
    // replay too.
    until_all_asleep(&app).await;
    app.crash();
    app.start_again().await;
    assert_eq!(
        everything(&app, u, &ids).await,
        awake,
        "and after a kill -9"
    );

    // Asleep again, the pending reservation expires on its TTL and the bundle on its 90 days,
    // each when the clock passes it, with no request for the user in between.
    until_all_asleep(&app).await;
    app.advance_clock(3600).await;
    let ttl_passed_at = app.clock_now().await;
    until_all_asleep(&app).await;
    app.advance_clock(90 * DAY).await;
    let expiry_passed_at = app.clock_now().await;
    app.advance_clock(DAY).await;

    let ledger = app.ledger_all(SK_TEST, u).await;
    let at_of = |ty: &str| {
        ledger
            .iter()
            .find(|e| e["type"] == ty)
            .map(|e| ts(&e["at"]))
            .unwrap_or_else(|| panic!("no {ty} entry: {ledger:?}"))
    };
    assert!(
        at_of("usage.expired") <= ttl_passed_at,
        "the reservation expired when the clock passed its TTL, not when it was next read"
    );
    assert!(at_of("credits.expired") <= expiry_passed_at);
    let r = app.reservation(SK_TEST, &pending_id).await;
    assert_eq!(r["status"], "expired");
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn reading_a_user_who_has_nothing_stores_nothing() {
    let app = spawn_app().await;
    for i in 0..20 {
        let u = format!("u_nobody_{i}");
        let usage = app.usage(SK_TEST, &u).await;
        assert_eq!(usage["subscription"], Value::Null);
        assert_eq!(usage["credits"], json!([]));
        let ledger = ok(
            &app.get(&format!("/v1/users/{u}/ledger"), SK_TEST).await,
            200,
        )
        .clone();
        assert_eq!(ledger["data"], json!([]));
        let sub = app
            .get(&format!("/v1/users/{u}/subscription"), SK_TEST)
            .await;
        assert_error(&sub, 404, "not_found", Some("no_subscription"), Param::Any);
        let check = app.check(SK_TEST, &u, GEMINI, 1).await;
        assert_eq!(check["allowed"], false);
    }
    assert_eq!(metric(&app, "vevee_users_in_memory").await, 0.0);
    assert_eq!(metric(&app, "vevee_users_asleep").await, 0.0);
}

#[tokio::test]
async fn each_per_user_bound_refuses_with_a_clear_error_and_changes_nothing() {
    let app = spawn_app_with(Options {
        user_bounds: Some((2, 2)),
        ..Options::default()
    })
    .await;
    let u = "u_bounded";
    app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_b1").await;
    app.reserve_ok(SK_TEST, u, GEMINI, 1).await;
    app.reserve_ok(SK_TEST, u, GEMINI, 1).await;
    let before = (
        app.usage(SK_TEST, u).await,
        app.ledger_all(SK_TEST, u).await,
    );
    let third = app
        .post(
            "/v1/reservations",
            SK_TEST,
            json!({"userId": u, "model": GEMINI, "amount": 1}),
        )
        .await;
    assert_error(
        &third,
        409,
        "conflict",
        Some("too_many_open_reservations"),
        Param::Any,
    );
    app.consume_ok(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(
        app.ledger_all(SK_TEST, u).await.len(),
        before.1.len() + 2,
        "a consume holds nothing after it answers, so it is let through"
    );

    let second = app.grant(SK_TEST, u, "cpk_gemini_topup", "cs_b2").await;
    assert_eq!(second["created"], true);
    let before = (
        app.usage(SK_TEST, u).await,
        app.ledger_all(SK_TEST, u).await,
    );
    let third = app
        .post(
            "/v1/credits/grants",
            SK_TEST,
            json!({"userId": u, "packId": "cpk_gemini_topup", "externalRef": "cs_b3",
                   "source": "grant"}),
        )
        .await;
    assert_error(
        &third,
        409,
        "conflict",
        Some("too_many_balances"),
        Param::Any,
    );
    assert_eq!(
        (
            app.usage(SK_TEST, u).await,
            app.ledger_all(SK_TEST, u).await
        ),
        before,
        "a refused grant changes nothing"
    );
    let repeat = app
        .post(
            "/v1/credits/grants",
            SK_TEST,
            json!({"userId": u, "packId": "cpk_gemini_topup", "externalRef": "cs_b2",
                   "source": "purchase"}),
        )
        .await;
    assert_eq!(
        ok(&repeat, 200)["created"],
        false,
        "a repeated grant adds nothing and is answered"
    );
}

/// Past `awake_users_max`, users idle for a second go to sleep at once instead of after
/// `idle_seconds` (300 here), and wake with the same state.
#[tokio::test]
async fn past_awake_users_max_idle_users_sleep_within_seconds_and_wake_the_same() {
    let app = spawn_app_tweaked(Tweaks {
        server_lines: "awake_users_max = 2\n".into(),
        ..Tweaks::default()
    })
    .await;
    let users: Vec<String> = (0..6).map(|i| format!("u_burst_{i}")).collect();
    let mut before = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let grant = app
            .grant(SK_TEST, u, "cpk_creator_bundle", &format!("cs_burst_{i}"))
            .await;
        let ids = balance_ids(&grant);
        app.consume_ok(SK_TEST, u, DALLE, 1).await;
        before.push((everything(&app, u, &ids).await, ids));
    }
    assert!(metric(&app, "vevee_users_in_memory").await >= 6.0);
    let started = Instant::now();
    while metric(&app, "vevee_users_in_memory").await > 2.0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "users stayed awake past awake_users_max"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(metric(&app, "vevee_users_asleep").await >= 4.0);
    for (u, (state, ids)) in users.iter().zip(&before) {
        assert_eq!(&everything(&app, u, ids).await, state, "{u} woke the same");
    }
}
