//! The ledger: pagination, entry shape, and the per-balance identity from the ledger alone.

use serde_json::{Value, json};

use crate::support::*;

const FIELDS: &[&str] = &[
    "id",
    "at",
    "type",
    "userId",
    "amount",
    "balanceId",
    "packId",
    "limitId",
    "reservationId",
    "allocations",
    "externalRef",
    "source",
    "reason",
    "notes",
];

#[tokio::test]
async fn the_ledger_pages_newest_first_with_limit_starting_after_and_has_more() {
    let app = spawn_app().await;
    let u = "u_pages";
    app.subscribe(SK_TEST, u, "pro").await;
    let bal = app
        .grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_pages")
        .await;
    for i in 0..6 {
        app.consume_ok(SK_TEST, u, if i % 2 == 0 { IMAGEN } else { GEMINI }, 1)
            .await;
        app.advance_clock(1).await;
    }
    app.revoke(SK_TEST, &bal, "done").await;

    let all = app.ledger_all(SK_TEST, u).await;
    assert!(all.len() >= 8, "{all:?}");
    assert_eq!(all[0]["type"], "credits.revoked", "newest first");
    assert_eq!(
        all.last().unwrap()["type"],
        "subscription.updated",
        "oldest last"
    );
    for w in all.windows(2) {
        assert!(
            ts(&w[0]["at"]) >= ts(&w[1]["at"]),
            "newest first: {} then {}",
            w[0],
            w[1]
        );
    }
    let ids: std::collections::HashSet<&str> =
        all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "ids are unique");

    let p = format!("/v1/users/{u}/ledger");
    let full = ok(&app.get(&p, SK_TEST).await, 200).clone();
    assert_eq!(
        full["data"],
        Value::Array(all.clone()),
        "the default page holds them all"
    );
    assert_eq!(full["hasMore"], false);

    let mut paged: Vec<Value> = Vec::new();
    let mut url = format!("{p}?limit=3");
    loop {
        let page = ok(&app.get(&url, SK_TEST).await, 200).clone();
        let data = page["data"].as_array().unwrap().clone();
        assert!(data.len() <= 3);
        paged.extend(data.iter().cloned());
        let more = page["hasMore"] == true;
        assert_eq!(
            more,
            paged.len() < all.len(),
            "hasMore after {} of {}",
            paged.len(),
            all.len()
        );
        if !more {
            break;
        }
        url = format!(
            "{p}?limit=3&startingAfter={}",
            data.last().unwrap()["id"].as_str().unwrap()
        );
    }
    assert_eq!(paged, all);

    let one = ok(&app.get(&format!("{p}?limit=1"), SK_TEST).await, 200).clone();
    assert_eq!(one["data"], json!([all[0].clone()]));
    assert_eq!(one["hasMore"], true);
    let last = all.last().unwrap()["id"].as_str().unwrap();
    let after_last = ok(
        &app.get(&format!("{p}?startingAfter={last}"), SK_TEST).await,
        200,
    )
    .clone();
    assert_eq!(after_last, json!({"data": [], "hasMore": false}));
    ok(&app.get(&format!("{p}?limit=500"), SK_TEST).await, 200);
}

#[tokio::test]
async fn a_limit_above_500_or_an_unknown_cursor_is_400() {
    let app = spawn_app().await;
    let u = "u_cursor";
    app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_cursor")
        .await;
    let p = format!("/v1/users/{u}/ledger");
    assert_error(
        &app.get(&format!("{p}?limit=501"), SK_TEST).await,
        400,
        "invalid_request",
        None,
        Param::Is("limit"),
    );
    let r = app
        .get(&format!("{p}?startingAfter=le_unknown"), SK_TEST)
        .await;
    assert_error(&r, 400, "invalid_request", None, Param::Is("startingAfter"));
    // Another user's entry is not a cursor into this ledger... and neither is another mode's.
    app.grant_one(SK_LIVE, u, "cpk_gemini_topup", "cs_cursor")
        .await;
    let live = app.ledger_all(SK_LIVE, u).await;
    let live_id = live[0]["id"].as_str().unwrap();
    let r = app
        .get(&format!("{p}?startingAfter={live_id}"), SK_TEST)
        .await;
    assert_error(&r, 400, "invalid_request", None, Param::Is("startingAfter"));
}

#[tokio::test]
async fn the_default_page_is_50_entries() {
    let app = spawn_app().await;
    let u = "u_fifty";
    let bal = app
        .grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_fifty")
        .await;
    for _ in 0..50 {
        app.consume_ok(SK_TEST, u, GEMINI, 1).await;
    }
    let page = ok(
        &app.get(&format!("/v1/users/{u}/ledger"), SK_TEST).await,
        200,
    )
    .clone();
    assert_eq!(page["data"].as_array().unwrap().len(), 50);
    assert_eq!(page["hasMore"], true);
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 0, 0, s("active"))
    );
}

#[tokio::test]
async fn every_ledger_entry_has_every_field_present_with_null_where_it_does_not_apply() {
    let app = spawn_app().await;
    let u = "u_shape";
    app.subscribe(SK_TEST, u, "pro").await;
    let body = json!({"userId": u, "packId": "cpk_creator_bundle", "externalRef": "cs_shape",
                      "source": "adjustment", "notes": "goodwill"});
    let g = ok(&app.post("/v1/credits/grants", SK_TEST, body).await, 201).clone();
    let dalle = g["balances"][0]["id"].as_str().unwrap().to_string();
    let r = app.reserve_ok(SK_TEST, u, DALLE, 2).await;
    app.commit(SK_TEST, r["reservationId"].as_str().unwrap(), None)
        .await;
    app.revoke(SK_TEST, &dalle, "abuse").await;
    app.cancel(SK_TEST, u).await;

    let all = app.ledger_all(SK_TEST, u).await;
    for e in &all {
        for f in FIELDS {
            assert!(
                e.get(*f).is_some(),
                "field {f} missing (null is expected instead): {e}"
            );
        }
        assert!(e["id"].as_str().unwrap().starts_with("le_"));
        assert_eq!(e["userId"], u);
        ts(&e["at"]);
    }
    let of = |t: &str| {
        all.iter()
            .filter(|e| e["type"] == t)
            .cloned()
            .collect::<Vec<_>>()
    };
    let granted = of("credits.granted");
    assert_eq!(granted.len(), 2, "one per balance");
    for e in &granted {
        assert_eq!(e["packId"], "cpk_creator_bundle");
        assert_eq!(e["externalRef"], "cs_shape");
        assert_eq!(e["source"], "adjustment");
        assert_eq!(e["notes"], "goodwill");
        assert_eq!(e["reservationId"], Value::Null);
    }
    let revoked = of("credits.revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["reason"], "abuse");
    assert_eq!(revoked[0]["amount"], 10);
    let committed = of("usage.committed");
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0]["amount"], 2);
    assert_eq!(committed[0]["reservationId"], r["reservationId"]);
    assert_eq!(
        allocs(&committed[0]["allocations"]),
        vec![plan_part("images", 2)]
    );
    assert_eq!(committed[0]["balanceId"], Value::Null);
    assert_eq!(of("usage.reserved").len(), 1);
    assert_eq!(of("subscription.updated").len(), 1);
    assert_eq!(of("subscription.canceled").len(), 1);
}

#[tokio::test]
async fn for_every_balance_granted_minus_committed_revoked_expired_reserved_is_remaining() {
    let app = spawn_app().await;
    let u = "u_identity";
    create_pack(&app, "cpk_short", "image.*", 20, Some(1)).await;
    app.subscribe(SK_TEST, u, "pro").await;
    app.consume_ok(SK_TEST, u, IMAGEN, 38).await;
    app.grant(SK_TEST, u, "cpk_creator_bundle", "cs_id_1").await;
    app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_id_2")
        .await;
    let short = app.grant_one(SK_TEST, u, "cpk_short", "cs_id_3").await;
    app.assert_ledger_agrees(SK_TEST, u).await;

    // A split reserve across the plan and several balances, committed in part.
    let r = app.reserve_ok(SK_TEST, u, DALLE, 15).await;
    app.assert_ledger_agrees(SK_TEST, u).await;
    app.commit(SK_TEST, r["reservationId"].as_str().unwrap(), Some(9))
        .await;
    app.assert_ledger_agrees(SK_TEST, u).await;

    // Released, expired-by-ttl, and still pending reservations.
    let r = app.reserve_ok(SK_TEST, u, GEMINI, 4).await;
    app.release(SK_TEST, r["reservationId"].as_str().unwrap())
        .await;
    let body = json!({"userId": u, "model": IMAGEN, "amount": 3, "ttlSeconds": 30});
    let short_lived = app.reserve_with(SK_TEST, body).await;
    assert_eq!(short_lived["allowed"], true);
    app.reserve_ok(SK_TEST, u, GEMINI, 6).await;
    app.assert_ledger_agrees(SK_TEST, u).await;
    app.advance_clock(31).await;
    assert_eq!(
        app.reservation(SK_TEST, short_lived["reservationId"].as_str().unwrap())
            .await["status"],
        "expired"
    );
    app.assert_ledger_agrees(SK_TEST, u).await;

    // A held reservation on a balance that expires, then a revoke with units held.
    app.reserve_ok(SK_TEST, u, VEO, 1).await;
    let r = app
        .reserve_with(
            SK_TEST,
            json!({"userId": u, "model": "image.flux", "amount": 2, "ttlSeconds": 86400}),
        )
        .await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        allocs(&r["allocations"]).iter().any(|a| a.1 == short),
        "{r}"
    );
    // Past cpk_short's day, not past the 86400 s ttl of the reservation made 31 s later.
    app.advance_clock(DAY - 20).await;
    assert_eq!(app.balance(SK_TEST, &short).await["status"], "expired");
    app.assert_ledger_agrees(SK_TEST, u).await;
    app.release(SK_TEST, r["reservationId"].as_str().unwrap())
        .await;
    app.assert_ledger_agrees(SK_TEST, u).await;

    let gem = app.usage(SK_TEST, u).await["credits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["packId"] == "cpk_gemini_topup")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let held2 = app.reserve_ok(SK_TEST, u, GEMINI, 5).await;
    app.revoke(SK_TEST, &gem, "refund").await;
    app.assert_ledger_agrees(SK_TEST, u).await;
    app.commit(SK_TEST, held2["reservationId"].as_str().unwrap(), Some(2))
        .await;
    app.assert_ledger_agrees(SK_TEST, u).await;
    app.consume_ok(SK_TEST, u, VEO, 5).await;
    app.assert_ledger_agrees(SK_TEST, u).await;
}
