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
