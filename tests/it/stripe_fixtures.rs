//! The webhook fed with events signed by Stripe's own library (`tests/stripe/fixtures.json`, made
//! by `tests/stripe/generate_fixtures.py` with stripe-python), byte for byte. The fixtures carry
//! fixed timestamps, so this server is started with a tolerance wide enough to accept them.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const FIXTURES: &str = include_str!("../stripe/fixtures.json");
const SECRET_TEST: &str = "whsec_vevee_fixture_test_mode_0123456789abcdef";
const SECRET_LIVE: &str = "whsec_vevee_fixture_live_mode_fedcba9876543210";
const TEN_YEARS_S: i64 = 10 * 365 * 86_400;

fn fixture(name: &str) -> (String, String) {
    let all: Vec<Value> = serde_json::from_str(FIXTURES).unwrap();
    let f = all
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("fixture {name}"));
    (
        f["payload"].as_str().unwrap().to_owned(),
        f["header"].as_str().unwrap().to_owned(),
    )
}

async fn deliver(app: &TestApp, name: &str) -> Resp {
    let (payload, header) = fixture(name);
    let h = [("stripe-signature", header.as_str())];
    app.send(
        Method::POST,
        "/v1/webhooks/stripe/pixelforge",
        None,
        Some(payload.into_bytes()),
        &h,
    )
    .await
}

async fn balances(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, usage, _) = app.get("/v1/users/user_42/usage", key).await;
    assert_eq!(status.as_u16(), 200, "{usage}");
    usage["credits"].as_array().unwrap().clone()
}

#[tokio::test]
async fn events_signed_by_the_official_library_grant_ignore_refuse_and_revoke_as_api_md_says() {
    let options = Options {
        webhook: Some((SECRET_TEST, SECRET_LIVE, TEN_YEARS_S)),
        ..Options::default()
    };
    let app = spawn_app_with(options).await;
    let pack = json!({"id": "pack_starter", "name": "Starter",
        "items": [{"id": "img", "match": "image.*", "amount": 20, "unit": "count"}]});
    assert_eq!(
        app.post("/v1/credit-packs", SK_TEST, pack).await.0.as_u16(),
        201
    );

    let (status, body, _) = deliver(&app, "checkout_completed_paid_test").await;
    assert_eq!(
        (status.as_u16(), &body["received"], &body["created"]),
        (200, &json!(true), &json!(true))
    );
    let test_balances = balances(&app, SK_TEST).await;
    assert_eq!(test_balances.len(), 1);
    assert_eq!(test_balances[0]["externalRef"], "cs_test_paid");
    assert_eq!(test_balances[0]["source"], "purchase");
    assert!(
        balances(&app, SK_LIVE).await.is_empty(),
        "a test event touches test data only"
    );

    // The same session again, under a header whose second v1 matches (secret rotation).
    let (status, body, _) = deliver(&app, "rotation_two_v1_second_matches").await;
    assert_eq!(
        (status.as_u16(), &body["created"]),
        (200, &json!(false)),
        "{body}"
    );
    assert_eq!(
        balances(&app, SK_TEST).await.len(),
        1,
        "redelivery grants nothing"
    );

    let (status, _, _) = deliver(&app, "checkout_completed_paid_live").await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(
        balances(&app, SK_LIVE).await[0]["externalRef"],
        "cs_live_paid"
    );

    let (status, body, _) = deliver(&app, "checkout_completed_unpaid").await;
    assert_eq!(
        (status.as_u16(), body.clone()),
        (200, json!({"received": true, "ignored": true}))
    );
    assert_eq!(
        balances(&app, SK_TEST).await.len(),
        1,
        "an unpaid session grants nothing"
    );
    assert_eq!(
        deliver(&app, "checkout_async_payment_succeeded")
            .await
            .0
            .as_u16(),
        200
    );
    assert_eq!(
        balances(&app, SK_TEST).await.len(),
        2,
        "its async success grants"
    );
    assert_eq!(
        deliver(&app, "checkout_completed_no_payment_required")
            .await
            .0
            .as_u16(),
        200
    );
    assert_eq!(balances(&app, SK_TEST).await.len(), 3);

    let (status, body, _) = deliver(&app, "customer_created_unknown_type").await;
    assert_eq!(
        (status.as_u16(), body),
        (200, json!({"received": true, "ignored": true}))
    );
    let (status, body, _) = deliver(&app, "checkout_completed_no_user").await;
    assert_eq!(
        (status.as_u16(), &body["error"]["code"]),
        (422, &json!("user_missing"))
    );
    let (status, body, _) = deliver(&app, "checkout_completed_unknown_pack").await;
    assert_eq!(
        (status.as_u16(), &body["error"]["code"]),
        (422, &json!("pack_not_found"))
    );

    let (status, body, _) = deliver(&app, "charge_refunded_partial").await;
    assert_eq!(
        (status.as_u16(), body),
        (200, json!({"received": true, "ignored": true}))
    );
    assert_eq!(
        balances(&app, SK_TEST).await.len(),
        3,
        "a partial refund revokes nothing"
    );
    let (status, body, _) = deliver(&app, "charge_refunded_full").await;
    assert_eq!(status.as_u16(), 200, "{body}");
    let left: Vec<Value> = balances(&app, SK_TEST).await;
    assert_eq!(
        left.len(),
        2,
        "the refunded session's balance is revoked, the others stay"
    );
    assert!(left.iter().all(|b| b["externalRef"] != "cs_test_paid"));
    let revoked = &test_balances[0]["id"];
    let (_, balance, _) = app
        .get(
            &format!("/v1/credits/balances/{}", revoked.as_str().unwrap()),
            SK_TEST,
        )
        .await;
    assert_eq!(
        (balance["status"].clone(), balance["revoked"].clone()),
        (json!("revoked"), json!(20))
    );
    assert_eq!(
        deliver(&app, "charge_refunded_full").await.0.as_u16(),
        200,
        "redelivered refund"
    );
    let (_, again, _) = app
        .get(
            &format!("/v1/credits/balances/{}", revoked.as_str().unwrap()),
            SK_TEST,
        )
        .await;
    assert_eq!(again, balance, "a redelivered refund revokes nothing twice");
}

#[tokio::test]
async fn an_official_signature_outside_the_default_tolerance_is_refused() {
    let app = spawn_app_with(Options {
        webhook: Some((SECRET_TEST, SECRET_LIVE, 300)),
        ..Options::default()
    })
    .await;
    let (status, body, _) = deliver(&app, "checkout_completed_paid_test").await;
    assert_eq!(
        (status.as_u16(), &body["error"]["code"]),
        (400, &json!("invalid_signature"))
    );
}
