//! The Stripe webhook: signatures, grants from checkout sessions, refunds.

use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::*;

const HOOK: &str = "/v1/webhooks/stripe/pixelforge";

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(secret: &str, t: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn deliver_with(app: &TestApp, body: &str, header: &str) -> Resp {
    let h = [("stripe-signature", header)];
    app.send(Method::POST, HOOK, None, Some(body.as_bytes().to_vec()), &h)
        .await
}

/// Signed now with the secret of the event's mode.
async fn deliver(app: &TestApp, event: &Value) -> Resp {
    let body = event.to_string();
    let secret = if event["livemode"] == true {
        WHSEC_LIVE
    } else {
        WHSEC_TEST
    };
    let t = unix_now();
    deliver_with(app, &body, &format!("t={t},v1={}", sign(secret, t, &body))).await
}

fn checkout(id: &str, livemode: bool, status: &str, metadata: Value, client_ref: Value) -> Value {
    json!({
        "id": format!("evt_{id}"), "object": "event", "type": "checkout.session.completed",
        "livemode": livemode, "created": unix_now(),
        "data": {"object": {
            "id": id, "object": "checkout.session", "livemode": livemode,
            "payment_status": status, "payment_intent": format!("pi_{id}"),
            "client_reference_id": client_ref, "metadata": metadata,
            "amount_total": 400, "currency": "usd", "mode": "payment"
        }}
    })
}

fn refund(pi: &str, amount: u64, refunded: u64) -> Value {
    json!({
        "id": format!("evt_refund_{pi}_{refunded}"), "object": "event", "type": "charge.refunded",
        "livemode": false, "created": unix_now(),
        "data": {"object": {
            "id": format!("ch_{pi}"), "object": "charge", "payment_intent": pi,
            "amount": amount, "amount_refunded": refunded, "refunded": amount == refunded,
            "currency": "usd"
        }}
    })
}

#[tokio::test]
async fn a_paid_checkout_grants_the_pack_once_even_when_redelivered() {
    let app = spawn_app().await;
    let u = "u_stripe";
    let ev = checkout(
        "cs_test_wh1",
        false,
        "paid",
        json!({"packId": "cpk_gemini_topup", "userId": u}),
        Value::Null,
    );
    let r = deliver(&app, &ev).await;
    assert_eq!(ok(&r, 200)["received"], true);
    let r = deliver(&app, &ev).await;
    assert_eq!(ok(&r, 200)["received"], true, "a redelivery is handled too");

    let usage = app.usage(SK_TEST, u).await;
    let credits = usage["credits"].as_array().unwrap();
    assert_eq!(credits.len(), 1, "granted once: {usage}");
    assert_eq!(credits[0]["packId"], "cpk_gemini_topup");
    assert_eq!(credits[0]["externalRef"], "cs_test_wh1");
    assert_eq!(credits[0]["source"], "purchase");
    assert_eq!(grs(&credits[0]), (50, 50, 0, s("active")));
    assert_eq!(
        app.ledger_of_type(SK_TEST, u, "credits.granted")
            .await
            .len(),
        1
    );
    assert_eq!(
        app.usage(SK_LIVE, u).await["credits"],
        json!([]),
        "a test event is test data"
    );

    // The same purchase through the API is the same grant.
    let body = json!({"userId": u, "packId": "cpk_gemini_topup", "externalRef": "cs_test_wh1",
                      "source": "purchase"});
    let again = app.post("/v1/credits/grants", SK_TEST, body).await;
    assert_eq!(ok(&again, 200)["created"], false);
}

#[tokio::test]
async fn client_reference_id_no_payment_required_async_success_and_live_mode_also_grant() {
    let app = spawn_app().await;
    let ev = checkout(
        "cs_test_wh2",
        false,
        "no_payment_required",
        json!({"packId": "cpk_creator_bundle"}),
        json!("u_ref"),
    );
    ok(&deliver(&app, &ev).await, 200);
    assert_eq!(
        app.usage(SK_TEST, "u_ref").await["credits"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let mut ev = checkout(
        "cs_test_wh3",
        false,
        "unpaid",
        json!({"packId": "cpk_gemini_topup", "userId": "u_async"}),
        Value::Null,
    );
    ev["type"] = json!("checkout.session.async_payment_succeeded");
    ev["id"] = json!("evt_async");
    ok(&deliver(&app, &ev).await, 200);
    let c = app.usage(SK_TEST, "u_async").await;
    assert_eq!(c["credits"][0]["externalRef"], "cs_test_wh3", "{c}");

    let ev = checkout(
        "cs_live_wh4",
        true,
        "paid",
        json!({"packId": "cpk_gemini_topup", "userId": "u_live_buyer"}),
        Value::Null,
    );
    ok(&deliver(&app, &ev).await, 200);
    assert_eq!(
        app.usage(SK_LIVE, "u_live_buyer").await["credits"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.usage(SK_TEST, "u_live_buyer").await["credits"],
        json!([])
    );
}

#[tokio::test]
async fn a_bad_or_stale_signature_is_400_invalid_signature_and_grants_nothing() {
    let app = spawn_app().await;
    let u = "u_sig";
    let ev = checkout(
        "cs_test_sig",
        false,
        "paid",
        json!({"packId": "cpk_gemini_topup", "userId": u}),
        Value::Null,
    );
    let body = ev.to_string();
    let t = unix_now();
    let stale = t - 301;
    for header in [
        format!("t={t},v1={}", sign("whsec_wrong", t, &body)),
        format!("t={t},v1={}", sign(WHSEC_LIVE, t, &body)), // the other mode's secret
        format!("t={stale},v1={}", sign(WHSEC_TEST, stale, &body)),
        format!("t={},v1={}", t + 1000, sign(WHSEC_TEST, t + 1000, &body)),
        format!("t={t},v1={}", sign(WHSEC_TEST, t + 1, &body)),
        format!("t={t}"),
        "garbage".to_string(),
    ] {
        let r = deliver_with(&app, &body, &header).await;
        assert_error(
            &r,
            400,
            "invalid_request",
            Some("invalid_signature"),
            Param::Any,
        );
    }
    let r = app
        .send(
            Method::POST,
            HOOK,
            None,
            Some(body.clone().into_bytes()),
            &[],
        )
        .await;
    assert_error(
        &r,
        400,
        "invalid_request",
        Some("invalid_signature"),
        Param::Any,
    );
    assert_eq!(app.usage(SK_TEST, u).await["credits"], json!([]));

    // Any v1 may match.
    let good = sign(WHSEC_TEST, t, &body);
    let header = format!("t={t},v1={},v1={good}", sign("whsec_old", t, &body));
    ok(&deliver_with(&app, &body, &header).await, 200);
    assert_eq!(
        app.usage(SK_TEST, u).await["credits"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn an_unknown_pack_or_a_missing_user_is_422_so_that_stripe_retries() {
    let app = spawn_app().await;
    let ev = checkout(
        "cs_test_nopack",
        false,
        "paid",
        json!({"packId": "cpk_nope", "userId": "u_x"}),
        Value::Null,
    );
    assert_error(
        &deliver(&app, &ev).await,
        422,
        "unprocessable",
        Some("pack_not_found"),
        Param::Any,
    );
    let ev = checkout(
        "cs_test_nouser",
        false,
        "paid",
        json!({"packId": "cpk_gemini_topup"}),
        Value::Null,
    );
    assert_error(
        &deliver(&app, &ev).await,
        422,
        "unprocessable",
        Some("user_missing"),
        Param::Any,
    );

    let other = json!({"id": "evt_other", "object": "event", "type": "customer.created",
                       "livemode": false, "data": {"object": {"id": "cus_1"}}});
    let r = deliver(&app, &other).await;
    assert_eq!(ok(&r, 200), &json!({"received": true, "ignored": true}));
}

#[tokio::test]
async fn a_full_refund_revokes_the_checkout_balances_and_a_partial_one_is_ignored() {
    let app = spawn_app().await;
    let u = "u_refund";
    let ev = checkout(
        "cs_test_rf",
        false,
        "paid",
        json!({"packId": "cpk_creator_bundle", "userId": u}),
        Value::Null,
    );
    ok(&deliver(&app, &ev).await, 200);
    let bals: Vec<String> = app.usage(SK_TEST, u).await["credits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bals.len(), 2);
    app.consume_ok(SK_TEST, u, DALLE, 4).await;

    let r = deliver(&app, &refund("pi_cs_test_rf", 1500, 500)).await;
    assert_eq!(
        ok(&r, 200),
        &json!({"received": true, "ignored": true}),
        "a partial refund"
    );
    let r = deliver(&app, &refund("pi_unknown", 1500, 1500)).await;
    assert_eq!(
        ok(&r, 200),
        &json!({"received": true, "ignored": true}),
        "unknown payment_intent: answered as API.md says, and remembered for a later checkout"
    );
    assert_eq!(
        app.usage(SK_TEST, u).await["credits"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let full = refund("pi_cs_test_rf", 1500, 1500);
    assert_eq!(ok(&deliver(&app, &full).await, 200)["received"], true);
    ok(&deliver(&app, &full).await, 200);
    for b in &bals {
        assert_eq!(app.balance(SK_TEST, b).await["status"], "revoked");
    }
    let revoked = app.ledger_of_type(SK_TEST, u, "credits.revoked").await;
    let mut amounts: Vec<u64> = revoked
        .iter()
        .map(|e| e["amount"].as_u64().unwrap())
        .collect();
    amounts.sort();
    assert_eq!(amounts, vec![5, 6], "what was left of each balance, once");
    app.assert_ledger_agrees(SK_TEST, u).await;
}

/// The balance ids a checkout webhook answered with.
fn granted_ids(answer: &Value) -> Vec<String> {
    answer["balances"]
        .as_array()
        .unwrap_or_else(|| panic!("balances in {answer}"))
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect()
}

/// What a user sees after a checkout whose payment had been refunded already: every balance it
/// granted is revoked at once, nothing is left to spend, and the ledger shows the grant, then the
/// revoke that says why.
async fn assert_granted_then_revoked_before_checkout(app: &TestApp, user: &str, ids: &[String]) {
    assert_eq!(ids.len(), 2, "the bundle has two items");
    for id in ids {
        let b = app.balance(SK_TEST, id).await;
        assert_eq!(b["status"], "revoked", "{b}");
        assert_eq!(b["remaining"], 0, "{b}");
    }
    assert_eq!(app.usage(SK_TEST, user).await["credits"], json!([]));
    let denied = app.reserve(SK_TEST, user, DALLE, 1).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    // Newest first: the two revokes, then the two grants.
    let ledger = app.ledger_all(SK_TEST, user).await;
    let types: Vec<&str> = ledger.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "credits.revoked",
            "credits.revoked",
            "credits.granted",
            "credits.granted"
        ],
        "{ledger:#?}"
    );
    for revoke in &ledger[..2] {
        let reason = revoke["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("refunded before checkout"), "{revoke}");
    }
    app.assert_ledger_agrees(SK_TEST, user).await;
}

#[tokio::test]
async fn a_full_refund_that_arrives_before_its_checkout_revokes_what_the_checkout_grants() {
    let app = spawn_app().await;
    let u = "u_early_refund";
    let r = deliver(&app, &refund("pi_cs_test_early", 1500, 1500)).await;
    assert_eq!(
        ok(&r, 200),
        &json!({"received": true, "ignored": true}),
        "API.md's answer to a refund of an unknown payment (it is remembered all the same)"
    );
    // A checkout paid by another payment intent is not touched by it.
    let other = checkout(
        "cs_test_other",
        false,
        "paid",
        json!({"packId": "cpk_gemini_topup", "userId": u}),
        Value::Null,
    );
    let r = deliver(&app, &other).await;
    let kept = granted_ids(ok(&r, 200));
    assert_eq!(app.balance(SK_TEST, &kept[0]).await["status"], "active");

    let late = checkout(
        "cs_test_early",
        false,
        "paid",
        json!({"packId": "cpk_creator_bundle", "userId": "u_early_refund_2"}),
        Value::Null,
    );
    let r = deliver(&app, &late).await;
    let answer = ok(&r, 200).clone();
    assert_eq!(answer["received"], true);
    let ids = granted_ids(&answer);
    assert_granted_then_revoked_before_checkout(&app, "u_early_refund_2", &ids).await;

    // Stripe redelivers the checkout: nothing more is granted or revoked.
    ok(&deliver(&app, &late).await, 200);
    assert_eq!(app.ledger_all(SK_TEST, "u_early_refund_2").await.len(), 4);
    // The other purchase is still there to spend.
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(usage["credits"].as_array().unwrap().len(), 1, "{usage}");
    assert_eq!(usage["credits"][0]["status"], "active");
}

#[tokio::test]
async fn a_refund_before_its_checkout_is_remembered_across_a_kill_and_a_restart() {
    let mut app = spawn_app().await;
    let r = deliver(&app, &refund("pi_cs_test_early_kill", 1500, 1500)).await;
    assert_eq!(ok(&r, 200), &json!({"received": true, "ignored": true}));
    // SIGKILL right after the 200: what the answer promised must be on disk.
    app.restart().await;
    let late = checkout(
        "cs_test_early_kill",
        false,
        "paid",
        json!({"packId": "cpk_creator_bundle", "userId": "u_early_kill"}),
        Value::Null,
    );
    let r = deliver(&app, &late).await;
    let ids = granted_ids(ok(&r, 200));
    assert_granted_then_revoked_before_checkout(&app, "u_early_kill", &ids).await;
    // And the revoke itself survives a restart.
    app.restart().await;
    assert_granted_then_revoked_before_checkout(&app, "u_early_kill", &ids).await;
}

#[tokio::test]
async fn a_signed_webhook_is_held_to_the_limits_of_the_api_and_grants_nothing_beyond_them() {
    let app = spawn_app().await;
    let long_session = format!("cs_test_{}", "x".repeat(100_000));
    let cases = [
        (
            checkout(
                &long_session,
                false,
                "paid",
                json!({"packId": "cpk_gemini_topup", "userId": "u_long"}),
                Value::Null,
            ),
            "u_long",
        ),
        (
            checkout(
                "cs_test_bad_user",
                false,
                "paid",
                json!({"packId": "cpk_gemini_topup", "userId": "not a user id!"}),
                Value::Null,
            ),
            "u_none",
        ),
    ];
    for (event, user) in cases {
        let r = deliver(&app, &event).await;
        let shown = r.1.to_string().chars().take(300).collect::<String>();
        assert_eq!(r.0.as_u16(), 422, "{shown}");
        assert_eq!(r.1["error"]["type"], "unprocessable", "{shown}");
        assert!(
            r.1["error"]["message"]
                .as_str()
                .is_some_and(|m| m.len() < 1000),
            "the message does not echo 100 KB: {shown}"
        );
        assert_eq!(app.usage(SK_TEST, user).await["credits"], json!([]));
    }
    // A refund's charge id is held to the same bound, before anything is revoked.
    let paid = checkout(
        "cs_test_ok",
        false,
        "paid",
        json!({"packId": "cpk_gemini_topup", "userId": "u_ok"}),
        Value::Null,
    );
    ok(&deliver(&app, &paid).await, 200);
    let mut long_refund = refund("pi_cs_test_ok", 400, 400);
    long_refund["data"]["object"]["id"] = json!(format!("ch_{}", "y".repeat(100_000)));
    let r = deliver(&app, &long_refund).await;
    assert_error(
        &r,
        422,
        "unprocessable",
        Some("parameter_invalid"),
        Param::Any,
    );
    let credits = &app.usage(SK_TEST, "u_ok").await["credits"];
    assert_eq!(credits[0]["status"], "active", "{credits}");
}

#[tokio::test]
async fn a_webhook_body_over_one_mebibyte_is_refused_in_the_api_shape() {
    let app = spawn_app().await;
    let body = format!("{{\"pad\": \"{}\"}}", "z".repeat(1024 * 1024));
    let r = deliver_with(&app, &body, "t=1,v1=00").await;
    assert_error(
        &r,
        413,
        "payload_too_large",
        Some("body_too_large"),
        Param::Any,
    );
}
