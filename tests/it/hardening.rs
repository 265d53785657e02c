//! Issue 13's defects, each pinned by the test that first failed on it.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn an_app_whose_config_does_not_mention_the_demo_catalog_starts_with_an_empty_one() {
    let app = spawn_app_tweaked(Tweaks {
        seed_demo_catalog: None,
        ..Tweaks::default()
    })
    .await;
    let plans = app.get("/v1/plans", SK_TEST).await;
    assert_eq!(ok(&plans, 200)["data"], json!([]));
    let packs = app.get("/v1/credit-packs", SK_TEST).await;
    assert_eq!(ok(&packs, 200)["data"], json!([]));
}

/// About a thousand years, in seconds.
const MILLENNIUM_S: i64 = 1_000 * 365 * DAY;

#[tokio::test]
async fn the_test_clock_refuses_an_advance_past_what_timestamps_can_show_and_stays_usable() {
    let mut app = spawn_app().await;
    let before = app.clock_now().await;
    let huge = app
        .post(
            "/v1/test/clock/advance",
            SK_TEST,
            json!({"seconds": 300_000_000_000_u64}),
        )
        .await;
    assert_error(&huge, 400, "invalid_request", None, Param::Is("seconds"));
    let after = app.clock_now().await;
    assert!(
        after.duration_since(before).as_secs() < 60,
        "a refused advance moved the clock from {before} to {after}"
    );

    // Advances add up: each is legal on its own until the sum would leave the range.
    let mut refused = None;
    for step in 0..10 {
        let r = app
            .post(
                "/v1/test/clock/advance",
                SK_TEST,
                json!({ "seconds": MILLENNIUM_S }),
            )
            .await;
        if r.0.as_u16() == 400 {
            refused = Some((step, r));
            break;
        }
        ts(&ok(&r, 200)["now"]);
    }
    let (step, r) = refused.expect("ten millennia of advances were all accepted");
    assert!(step >= 7, "refused after only {step} millennia: {}", r.1);
    assert_error(&r, 400, "invalid_request", None, Param::Is("seconds"));
    let last = app.clock_now().await;

    // Everything measured from the latest clock is still a timestamp: a month's reset, a pack's
    // expiry, a reservation's TTL.
    app.subscribe(SK_TEST, "late", "pro").await;
    let usage = app.usage(SK_TEST, "late").await;
    let resets = ts(&counter(&usage, "images")["resetsAt"]);
    assert!(resets > last, "{usage}");
    let grant = app
        .grant(SK_TEST, "late", "cpk_creator_bundle", "cs_late")
        .await;
    assert!(ts(&grant["balances"][0]["expiresAt"]) > last, "{grant}");
    let reserved = app.reserve_ok(SK_TEST, "late", DALLE, 1).await;
    assert!(ts(&reserved["expiresAt"]) > last, "{reserved}");

    // The refused advances left nothing in the journal to replay.
    app.restart().await;
    let replayed = app.clock_now().await;
    assert!(
        replayed >= last && replayed.duration_since(last).as_secs() < 60,
        "{last} became {replayed} across a restart"
    );
}

#[tokio::test]
async fn a_zero_quota_free_plan_makes_a_subscriber_whose_credits_pay_for_everything() {
    let app = spawn_app().await;
    let plan = json!({
        "id": "payg", "name": "Pay as you go",
        "price": {"amount": 0, "currency": "usd", "interval": null},
        "limits": [{"id": "images", "name": "Images", "match": ["image.*"],
                    "limit": 0, "unit": "count", "period": "month"}]
    });
    let created = app.post("/v1/plans", SK_TEST, plan).await;
    assert_eq!(ok(&created, 201)["limits"][0]["limit"], 0);
    let sub = app.subscribe(SK_TEST, "zoe", "payg").await;
    assert_eq!(sub["status"], "active");

    let usage = app.usage(SK_TEST, "zoe").await;
    assert_eq!(usage["subscription"]["planId"], "payg", "{usage}");
    assert_eq!(urr(counter(&usage, "images")), (0, 0, 0));

    // No credits ever: the plan covers the model and is short, so offer an upgrade.
    let denied = app.reserve(SK_TEST, "zoe", DALLE, 1).await;
    assert_eq!(denied["allowed"], false);
    assert_eq!(denied["reasons"], json!(["plan_exhausted"]), "{denied}");

    // Credits pay, and the plan part is nothing.
    create_pack(&app, "cpk_two", "image.*", 2, None).await;
    let balance = app.grant_one(SK_TEST, "zoe", "cpk_two", "cs_zoe").await;
    let spent = app.consume_ok(SK_TEST, "zoe", DALLE, 2).await;
    assert_eq!(
        allocs(&spent["allocations"]),
        vec![credit_part(&balance, 2)]
    );
    let usage = app.usage(SK_TEST, "zoe").await;
    assert_eq!(urr(counter(&usage, "images")), (0, 0, 0));

    // With the credits gone, the denial offers credits.
    let denied = app.reserve(SK_TEST, "zoe", DALLE, 1).await;
    assert_eq!(
        denied["reasons"],
        json!(["plan_and_credits_exhausted"]),
        "{denied}"
    );
    app.assert_ledger_agrees(SK_TEST, "zoe").await;
}

#[tokio::test]
async fn zero_stays_refused_for_every_quantity_but_a_plan_limit() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/credit-packs",
            SK_TEST,
            pack_body("cpk_zero", "image.*", 0, None),
        )
        .await;
    assert_error(&r, 400, "invalid_request", None, Param::Mentions("amount"));
    for (path, body) in [
        (
            "/v1/reservations",
            json!({"userId": "u", "model": DALLE, "amount": 0}),
        ),
        (
            "/v1/consume",
            json!({"userId": "u", "model": DALLE, "amount": 0}),
        ),
        (
            "/v1/check",
            json!({"userId": "u", "model": DALLE, "amount": 0}),
        ),
        ("/v1/test/clock/advance", json!({"seconds": 0})),
    ] {
        let r = app.post(path, SK_TEST, body).await;
        assert_error(&r, 400, "invalid_request", None, Param::Any);
    }
}

#[tokio::test]
async fn body_and_path_errors_answer_in_the_api_shape() {
    let app = spawn_app().await;
    // Invalid UTF-8 in a path parameter.
    let r = app.get("/v1/users/%FF%FE/usage", SK_TEST).await;
    assert_error(
        &r,
        400,
        "invalid_request",
        Some("parameter_invalid"),
        Param::Is("userId"),
    );
    let r = app.get("/v1/reservations/res_%C3%28", SK_TEST).await;
    assert_error(
        &r,
        400,
        "invalid_request",
        Some("parameter_invalid"),
        Param::Is("id"),
    );

    // An array where an object is expected, at the top and inside.
    let as_array = json!(["u_arr", DALLE, 1]).to_string();
    let r = app.post_raw("/v1/consume", SK_TEST, as_array).await;
    assert_error(
        &r,
        400,
        "invalid_request",
        Some("parameter_invalid"),
        Param::Any,
    );
    let mut plan = json!({
        "id": "p_arr", "name": "P", "price": {"amount": 0, "currency": "usd", "interval": null},
        "limits": [["images", "Images", ["image.*"], 5, "count", "month"]]
    });
    let r = app.post("/v1/plans", SK_TEST, plan.clone()).await;
    assert_error(
        &r,
        400,
        "invalid_request",
        Some("parameter_invalid"),
        Param::Mentions("limits"),
    );
    plan["limits"] = json!([]);
    plan["price"] = json!([0, "usd", null]);
    let r = app.post("/v1/plans", SK_TEST, plan).await;
    assert_error(
        &r,
        400,
        "invalid_request",
        Some("parameter_invalid"),
        Param::Mentions("price"),
    );
    assert_eq!(
        ok(&app.get("/v1/plans/p_arr", SK_TEST).await, 404)["error"]["code"],
        "plan_not_found"
    );
    assert_eq!(app.usage(SK_TEST, "u_arr").await["credits"], json!([]));

    // An empty body where fields are required is malformed JSON, not a missing field.
    for path in [
        "/v1/consume",
        "/v1/reservations",
        "/v1/credits/grants",
        "/v1/plans",
    ] {
        let r = app.post_raw(path, SK_TEST, "").await;
        assert_error(&r, 400, "invalid_request", Some("invalid_json"), Param::Any);
    }
    // Where every field is optional, no body is still fine.
    app.subscribe(SK_TEST, "u_empty", "free").await;
    let reserved = app.reserve_ok(SK_TEST, "u_empty", GEMINI, 1).await;
    let id = reserved["reservationId"].as_str().unwrap();
    let r = app
        .post_raw(&format!("/v1/reservations/{id}/release"), SK_TEST, "")
        .await;
    assert_eq!(ok(&r, 200)["status"], "released");
}
