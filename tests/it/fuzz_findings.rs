//! What schemathesis found against `/openapi.json` (scripts/test.d/25-schemathesis.sh), one test
//! per finding, each written before its fix.

use crate::support::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn a_repeated_query_parameter_answers_json_not_plain_text() {
    let app = spawn_app().await;
    let (status, body, headers) = app
        .send(
            Method::GET,
            "/v1/credit-packs?includeArchived=null&includeArchived=null",
            Some(SK_TEST),
            None,
            &[],
        )
        .await;
    assert_eq!(headers["content-type"], "application/json", "{body}");
    assert_error(
        &(status, body, headers),
        400,
        "invalid_request",
        Some("parameter_invalid"),
        Param::Is("includeArchived"),
    );
    let r = app
        .get(
            "/v1/credit-packs?includeArchived=false&includeArchived=true",
            SK_TEST,
        )
        .await;
    assert!(ok(&r, 200)["data"].is_array());
}

#[tokio::test]
async fn whole_numbers_written_as_floats_are_quantities() {
    let app = spawn_app().await;
    app.subscribe(SK_TEST, "ana", "pro").await;
    let r = app
        .post(
            "/v1/reservations",
            SK_TEST,
            json!({"userId": "ana", "model": DALLE, "amount": 2.0, "ttlSeconds": 60.0}),
        )
        .await;
    let reservation = ok(&r, 200);
    assert_eq!(reservation["amount"], 2);
    let id = reservation["reservationId"].as_str().unwrap();
    let r = app
        .post(
            &format!("/v1/reservations/{id}/commit"),
            SK_TEST,
            json!({"amount": 1.0}),
        )
        .await;
    assert_eq!(ok(&r, 200)["committedAmount"], 1);
    // A fraction is still refused, naming the field, and changes nothing.
    let r = app
        .post(
            "/v1/reservations",
            SK_TEST,
            json!({"userId": "ana", "model": DALLE, "amount": 1.5}),
        )
        .await;
    assert_error(
        &r,
        400,
        "invalid_request",
        Some("parameter_invalid"),
        Param::Is("amount"),
    );
    let usage = app.usage(SK_TEST, "ana").await;
    assert_eq!(usage["counters"][0]["used"], 1, "{usage}");
}

#[tokio::test]
async fn the_test_clock_cannot_be_moved_past_the_timestamps_it_can_write() {
    let app = spawn_app().await;
    let before = app.clock_now().await;
    // 2^53 − 1 seconds fits the quantity type but not a calendar: it used to be accepted and every
    // timestamp in test mode then read "invalid".
    let r = app
        .post(
            "/v1/test/clock/advance",
            SK_TEST,
            json!({"seconds": MAX_QTY}),
        )
        .await;
    assert_error(
        &r,
        400,
        "invalid_request",
        Some("parameter_invalid"),
        Param::Is("seconds"),
    );
    let moved = app.clock_now().await.duration_since(before).as_secs_f64();
    assert!(
        moved < 60.0,
        "a refused advance moves nothing, moved {moved} s"
    );
    // Far, but within range: a reservation's timestamps are still RFC 3339.
    let r = app
        .post(
            "/v1/test/clock/advance",
            SK_TEST,
            json!({"seconds": 200_000_000_000u64}),
        )
        .await;
    ok(&r, 200);
    app.subscribe(SK_TEST, "ana", "pro").await;
    let reservation = app.reserve_ok(SK_TEST, "ana", DALLE, 1).await;
    for field in ["createdAt", "expiresAt"] {
        let text = reservation[field].as_str().unwrap();
        assert!(text.parse::<jiff::Timestamp>().is_ok(), "{field}: {text}");
    }
}
