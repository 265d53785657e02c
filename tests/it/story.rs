//! The PixelForge story of issue 3, step by step, over HTTP only.

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn a_free_user_spends_two_lifetime_gemini_images_and_is_then_denied_plan_exhausted() {
    let app = spawn_app().await;
    let u = "u_free";
    let sub = app.subscribe(SK_TEST, u, "free").await;
    assert_eq!(sub["userId"], u);
    assert_eq!(sub["planId"], "free");
    assert_eq!(sub["status"], "active");
    ts(&sub["currentPeriodStart"]);
    ts(&sub["createdAt"]);

    let r = app.reserve_ok(SK_TEST, u, GEMINI, 1).await;
    let id = r["reservationId"].as_str().unwrap();
    assert!(id.starts_with("res_"), "{r}");
    assert_eq!(r["reasons"], json!([]));
    assert_eq!(r["status"], "pending");
    assert_eq!(r["userId"], u);
    assert_eq!(r["model"], GEMINI);
    assert_eq!(r["amount"], 1);
    assert_eq!(allocs(&r["allocations"]), vec![plan_part("images", 1)]);
    assert_eq!(
        r["committedAmount"],
        Value::Null,
        "committedAmount is null until committed"
    );
    assert_eq!(r["metadata"], Value::Null);
    let c = app.commit(SK_TEST, id, None).await;
    assert_eq!(c["status"], "committed");
    assert_eq!(c["committedAmount"], 1);

    let c2 = app.consume_ok(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(c2["committedAmount"], 1);
    assert_eq!(allocs(&c2["allocations"]), vec![plan_part("images", 1)]);

    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(usage["userId"], u);
    assert_eq!(usage["subscription"]["planId"], "free");
    let counters = usage["counters"].as_array().unwrap();
    assert_eq!(counters.len(), 1, "{usage}");
    let k = &counters[0];
    assert_eq!(k["planId"], "free");
    assert_eq!(k["limitId"], "images");
    assert_eq!(k["match"], json!([GEMINI]));
    assert_eq!(k["unit"], "count");
    assert_eq!(k["period"], "lifetime");
    assert_eq!(k["limit"], 2);
    assert_eq!(urr(k), (2, 0, 0));
    // "A field with no value is present as null": a lifetime counter never resets.
    assert_eq!(k["resetsAt"], Value::Null, "{k}");
    assert_eq!(usage["credits"], json!([]));

    let denied = app.reserve(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(denied["allowed"], false);
    assert_eq!(denied["reservationId"], Value::Null);
    assert_eq!(denied["reasons"], json!(["plan_exhausted"]));
    assert_eq!(denied["available"], json!({"plan": 0, "credits": 0}));

    let chk = app.check(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(chk["allowed"], false);
    assert_eq!(chk["reasons"], json!(["plan_exhausted"]));
    let con = app.consume(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(con["allowed"], false);
    assert_eq!(con["reasons"], json!(["plan_exhausted"]));

    let after = app.usage(SK_TEST, u).await;
    assert_eq!(
        urr(counter(&after, "images")),
        (2, 0, 0),
        "a denial holds nothing"
    );
}

#[tokio::test]
async fn buying_the_gemini_top_up_lets_a_free_user_spend_credits_after_the_free_images() {
    let app = spawn_app().await;
    let u = "u_topup";
    app.subscribe(SK_TEST, u, "free").await;
    app.consume_ok(SK_TEST, u, GEMINI, 1).await;
    app.consume_ok(SK_TEST, u, GEMINI, 1).await;

    let body = json!({"userId": u, "packId": "cpk_gemini_topup", "externalRef": "cs_test_topup_1",
                      "source": "purchase"});
    let g = app.post("/v1/credits/grants", SK_TEST, body.clone()).await;
    let g = ok(&g, 201).clone();
    assert_eq!(g["userId"], u);
    assert_eq!(g["packId"], "cpk_gemini_topup");
    assert_eq!(g["externalRef"], "cs_test_topup_1");
    assert_eq!(g["created"], true);
    let bals = g["balances"].as_array().unwrap();
    assert_eq!(bals.len(), 1, "{g}");
    let b = &bals[0];
    let bal = b["id"].as_str().unwrap().to_string();
    assert!(bal.starts_with("bal_"), "{b}");
    assert_eq!(b["userId"], u);
    assert_eq!(b["packId"], "cpk_gemini_topup");
    assert_eq!(b["packItemId"], "gemini");
    assert_eq!(b["match"], GEMINI);
    assert_eq!(b["unit"], "count");
    assert_eq!(grs(b), (50, 50, 0, s("active")));
    assert_eq!(b["source"], "purchase");
    assert_eq!(b["externalRef"], "cs_test_topup_1");
    assert_eq!(b["notes"], Value::Null);
    assert_eq!(b["expiresAt"], Value::Null, "the top-up never expires");
    ts(&b["createdAt"]);
    assert_eq!(&app.balance(SK_TEST, &bal).await, b);

    // A repeat of (user, pack, externalRef) grants nothing and answers the first grant.
    let again = app.post("/v1/credits/grants", SK_TEST, body).await;
    let again = ok(&again, 200);
    assert_eq!(again["created"], false);
    assert_eq!(again["balances"][0]["id"], bal.as_str());
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 50, 0, s("active"))
    );
    let granted = app.ledger_of_type(SK_TEST, u, "credits.granted").await;
    assert_eq!(granted.len(), 1, "one credits.granted entry: {granted:?}");
    let e = &granted[0];
    assert!(e["id"].as_str().unwrap().starts_with("le_"));
    assert_eq!(e["amount"], 50);
    assert_eq!(e["balanceId"], bal.as_str());
    assert_eq!(e["packId"], "cpk_gemini_topup");
    assert_eq!(e["externalRef"], "cs_test_topup_1");
    assert_eq!(e["source"], "purchase");
    assert_eq!(e["userId"], u);

    let r = app.reserve_ok(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(allocs(&r["allocations"]), vec![credit_part(&bal, 1)]);
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 49, 1, s("active"))
    );
    app.commit(SK_TEST, r["reservationId"].as_str().unwrap(), None)
        .await;
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 49, 0, s("active"))
    );

    // The plan is short and the user has had credits: offer credits.
    let d = app.reserve(SK_TEST, u, GEMINI, 50).await;
    assert_eq!(d["allowed"], false);
    assert_eq!(d["reasons"], json!(["plan_and_credits_exhausted"]));
    assert_eq!(d["available"], json!({"plan": 0, "credits": 49}));
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 49, 0, s("active"))
    );

    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(urr(counter(&usage, "images")), (2, 0, 0));
    let credits = usage["credits"].as_array().unwrap();
    assert_eq!(credits.len(), 1);
    assert_eq!(credits[0]["id"], bal.as_str());
    assert_eq!(credits[0]["remaining"], 49);
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn dall_e_on_free_is_not_in_plan_and_adds_credits_exhausted_once_a_dall_e_balance_was_held() {
    let app = spawn_app().await;
    let u = "u_dalle_free";
    app.subscribe(SK_TEST, u, "free").await;

    let d = app.reserve(SK_TEST, u, DALLE, 1).await;
    assert_eq!(d["allowed"], false);
    assert_eq!(d["reasons"], json!(["not_in_plan"]));
    assert_eq!(d["available"], json!({"plan": 0, "credits": 0}));

    let g = app
        .grant(SK_TEST, u, "cpk_creator_bundle", "cs_test_bundle_free")
        .await;
    let dalle_bal = g["balances"][0]["id"].as_str().unwrap().to_string();

    let d = app.reserve(SK_TEST, u, DALLE, 11).await;
    assert_eq!(d["allowed"], false);
    assert_eq!(d["reasons"], json!(["not_in_plan", "credits_exhausted"]));
    assert_eq!(d["available"], json!({"plan": 0, "credits": 10}));

    // A plan that does not cover the model does not stop credits.
    let c = app.consume_ok(SK_TEST, u, DALLE, 2).await;
    assert_eq!(allocs(&c["allocations"]), vec![credit_part(&dalle_bal, 2)]);

    app.revoke(SK_TEST, &dalle_bal, "chargeback").await;
    let d = app.reserve(SK_TEST, u, DALLE, 1).await;
    assert_eq!(d["allowed"], false);
    assert_eq!(
        d["reasons"],
        json!(["not_in_plan", "credits_exhausted"]),
        "ever held counts"
    );
    assert_eq!(d["available"], json!({"plan": 0, "credits": 0}));

    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(
        urr(counter(&usage, "images")),
        (0, 0, 2),
        "DALL-E never touched Free's counter"
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn the_creator_bundle_gives_two_balances_that_cannot_drain_each_other() {
    let app = spawn_app().await;
    let u = "u_bundle";
    let g = app
        .grant(SK_TEST, u, "cpk_creator_bundle", "cs_test_bundle_1")
        .await;
    let bals = g["balances"].as_array().unwrap();
    assert_eq!(bals.len(), 2, "one balance per pack item: {g}");
    let (dalle, veo) = (&bals[0], &bals[1]);
    assert_eq!(dalle["packItemId"], "dalle", "balances are in item order");
    assert_eq!(dalle["match"], DALLE);
    assert_eq!(dalle["unit"], "count");
    assert_eq!(grs(dalle), (10, 10, 0, s("active")));
    assert_eq!(veo["packItemId"], "veo");
    assert_eq!(veo["match"], VEO);
    assert_eq!(veo["unit"], "seconds");
    assert_eq!(grs(veo), (5, 5, 0, s("active")));
    for b in bals {
        assert_eq!(
            secs_between(&b["createdAt"], &b["expiresAt"]),
            (90 * DAY) as f64,
            "{b}"
        );
    }
    let (dalle, veo) = (dalle["id"].as_str().unwrap(), veo["id"].as_str().unwrap());

    let d = app.reserve(SK_TEST, u, VEO, 6).await;
    assert_eq!(
        d["reasons"],
        json!(["no_subscription", "credits_exhausted"])
    );
    assert_eq!(
        d["available"],
        json!({"plan": 0, "credits": 5}),
        "DALL-E credits are not veo's"
    );
    let d = app.reserve(SK_TEST, u, DALLE, 11).await;
    assert_eq!(
        d["available"],
        json!({"plan": 0, "credits": 10}),
        "veo seconds are not DALL-E's"
    );
    let d = app.reserve(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(
        d["reasons"],
        json!(["no_subscription", "credits_exhausted"])
    );
    assert_eq!(d["available"], json!({"plan": 0, "credits": 0}));

    let c = app.consume_ok(SK_TEST, u, DALLE, 10).await;
    assert_eq!(allocs(&c["allocations"]), vec![credit_part(dalle, 10)]);
    assert_eq!(
        grs(&app.balance(SK_TEST, veo).await),
        (5, 5, 0, s("active"))
    );
    let d = app.reserve(SK_TEST, u, DALLE, 1).await;
    assert_eq!(d["allowed"], false);
    assert_eq!(
        d["reasons"],
        json!(["no_subscription", "credits_exhausted"])
    );

    let c = app.consume_ok(SK_TEST, u, VEO, 5).await;
    assert_eq!(allocs(&c["allocations"]), vec![credit_part(veo, 5)]);
    assert_eq!(
        grs(&app.balance(SK_TEST, dalle).await),
        (10, 0, 0, s("active"))
    );
    assert_eq!(
        grs(&app.balance(SK_TEST, veo).await),
        (5, 0, 0, s("active"))
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn a_pro_user_with_one_image_left_asking_for_two_gets_one_from_the_plan_and_one_from_credits()
{
    let app = spawn_app().await;
    let u = "u_pro_split";
    app.subscribe(SK_TEST, u, "pro").await;
    let c = app.consume_ok(SK_TEST, u, IMAGEN, 39).await;
    assert_eq!(allocs(&c["allocations"]), vec![plan_part("images", 39)]);
    let g = app
        .grant(SK_TEST, u, "cpk_creator_bundle", "cs_test_pro_bundle")
        .await;
    let bal = g["balances"][0]["id"].as_str().unwrap().to_string();

    let chk = app.check(SK_TEST, u, DALLE, 2).await;
    assert_eq!(chk["allowed"], true);
    assert_eq!(chk["reasons"], json!([]));
    assert_eq!(
        allocs(&chk["allocations"]),
        vec![plan_part("images", 1), credit_part(&bal, 1)]
    );
    assert_eq!(chk["available"], json!({"plan": 1, "credits": 10}));
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(
        urr(counter(&usage, "images")),
        (39, 0, 1),
        "check holds nothing"
    );

    let r = app.reserve_ok(SK_TEST, u, DALLE, 2).await;
    assert_eq!(
        allocs(&r["allocations"]),
        vec![plan_part("images", 1), credit_part(&bal, 1)]
    );
    let usage = app.usage(SK_TEST, u).await;
    let k = counter(&usage, "images");
    assert_eq!(k["limit"], 40);
    assert_eq!(urr(k), (39, 1, 0));
    assert_eq!(
        grs(credit_in(&usage, &bal).expect("dalle balance")),
        (10, 9, 1, s("active"))
    );

    let id = r["reservationId"].as_str().unwrap();
    let c = app.commit(SK_TEST, id, None).await;
    assert_eq!(c["committedAmount"], 2);
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(urr(counter(&usage, "images")), (40, 0, 0));
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (10, 9, 0, s("active"))
    );

    let committed: Vec<Value> = app
        .ledger_of_type(SK_TEST, u, "usage.committed")
        .await
        .into_iter()
        .filter(|e| e["reservationId"] == id)
        .collect();
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0]["amount"], 2);
    assert_eq!(
        allocs(&committed[0]["allocations"]),
        vec![plan_part("images", 1), credit_part(&bal, 1)]
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn a_model_covered_by_two_limits_lists_one_plan_entry_per_limit_each_with_the_whole_part() {
    let app = spawn_app().await;
    let plan = json!({
        "id": "studio", "name": "Studio",
        "price": {"amount": 2900, "currency": "usd", "interval": "month"},
        "limits": [
            {"id": "images", "name": "Images", "match": ["image.*"], "limit": 5,
             "unit": "count", "period": "month"},
            {"id": "dalle", "name": "DALL-E", "match": [DALLE], "limit": 3,
             "unit": "count", "period": "day"}
        ]
    });
    ok(&app.post("/v1/plans", SK_TEST, plan).await, 201);
    let u = "u_studio";
    app.subscribe(SK_TEST, u, "studio").await;
    let bal = app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_g").await;
    let g = app.grant(SK_TEST, u, "cpk_creator_bundle", "cs_b").await;
    let dalle_bal = g["balances"][0]["id"].as_str().unwrap().to_string();

    // The plan can give the smallest room among covering limits (3); charged to each of them.
    let r = app.reserve_ok(SK_TEST, u, DALLE, 4).await;
    assert_eq!(
        allocs(&r["allocations"]),
        vec![
            plan_part("images", 3),
            plan_part("dalle", 3),
            credit_part(&dalle_bal, 1)
        ]
    );
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(urr(counter(&usage, "images")), (0, 3, 2));
    assert_eq!(urr(counter(&usage, "dalle")), (0, 3, 0));
    app.commit(SK_TEST, r["reservationId"].as_str().unwrap(), None)
        .await;
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(urr(counter(&usage, "images")), (3, 0, 2));
    assert_eq!(urr(counter(&usage, "dalle")), (3, 0, 0));

    // Gemini is covered by `images` only: its 2 left, then the top-up.
    let r = app.reserve_ok(SK_TEST, u, GEMINI, 3).await;
    assert_eq!(
        allocs(&r["allocations"]),
        vec![plan_part("images", 2), credit_part(&bal, 1)]
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn credits_are_drawn_most_specific_first_then_soonest_expiring_then_oldest() {
    let app = spawn_app().await;
    create_pack(&app, "cpk_wild", "*", 3, None).await;
    create_pack(&app, "cpk_any_image", "image.*", 3, None).await;
    create_pack(&app, "cpk_dalle_never", DALLE, 2, None).await;
    create_pack(&app, "cpk_dalle_30", DALLE, 2, Some(30)).await;
    let u = "u_order";
    // Granted oldest first, with the clock moving so that createdAt differ.
    let wild = app.grant_one(SK_TEST, u, "cpk_wild", "r1").await;
    app.advance_clock(10).await;
    let any_image = app.grant_one(SK_TEST, u, "cpk_any_image", "r2").await;
    app.advance_clock(10).await;
    let never_old = app.grant_one(SK_TEST, u, "cpk_dalle_never", "r3").await;
    app.advance_clock(10).await;
    let never_new = app.grant_one(SK_TEST, u, "cpk_dalle_never", "r4").await;
    app.advance_clock(10).await;
    let thirty = app.grant_one(SK_TEST, u, "cpk_dalle_30", "r5").await;

    let r = app.reserve_ok(SK_TEST, u, DALLE, 10).await;
    assert_eq!(
        allocs(&r["allocations"]),
        vec![
            credit_part(&thirty, 2),
            credit_part(&never_old, 2),
            credit_part(&never_new, 2),
            credit_part(&any_image, 3),
            credit_part(&wild, 1),
        ]
    );
    // Only the wildcard covers a video.
    let d = app.reserve(SK_TEST, u, VEO, 3).await;
    assert_eq!(d["available"], json!({"plan": 0, "credits": 2}));
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn releasing_after_a_provider_error_returns_every_unit_to_the_exact_balance_and_counter() {
    let app = spawn_app().await;
    let u = "u_release";
    app.subscribe(SK_TEST, u, "pro").await;
    app.consume_ok(SK_TEST, u, IMAGEN, 39).await;
    let a = app.grant(SK_TEST, u, "cpk_creator_bundle", "cs_a").await;
    app.advance_clock(60).await;
    let b = app.grant(SK_TEST, u, "cpk_creator_bundle", "cs_b").await;
    let a = a["balances"][0]["id"].as_str().unwrap().to_string();
    let b = b["balances"][0]["id"].as_str().unwrap().to_string();

    let body = json!({"userId": u, "model": DALLE, "amount": 12,
                      "metadata": {"prompt": "a red fox", "requestId": "req_1"}});
    let r = app.reserve_with(SK_TEST, body).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(
        r["metadata"],
        json!({"prompt": "a red fox", "requestId": "req_1"})
    );
    assert_eq!(
        allocs(&r["allocations"]),
        vec![
            plan_part("images", 1),
            credit_part(&a, 10),
            credit_part(&b, 1)
        ],
        "A expires sooner than B"
    );
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(urr(counter(&usage, "images")), (39, 1, 0));
    assert_eq!(
        grs(&app.balance(SK_TEST, &a).await),
        (10, 0, 10, s("active"))
    );
    assert_eq!(
        grs(&app.balance(SK_TEST, &b).await),
        (10, 9, 1, s("active"))
    );

    let id = r["reservationId"].as_str().unwrap();
    let path = format!("/v1/reservations/{id}/release");
    let rel = app
        .post(&path, SK_TEST, json!({"errorCode": "provider_timeout"}))
        .await;
    let rel = ok(&rel, 200).clone();
    assert_eq!(rel["status"], "released");
    assert_eq!(rel["errorCode"], "provider_timeout");
    assert_eq!(rel["committedAmount"], Value::Null);

    assert_eq!(
        grs(&app.balance(SK_TEST, &a).await),
        (10, 10, 0, s("active"))
    );
    assert_eq!(
        grs(&app.balance(SK_TEST, &b).await),
        (10, 10, 0, s("active"))
    );
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(urr(counter(&usage, "images")), (39, 0, 1));

    let again = app
        .post(&path, SK_TEST, json!({"errorCode": "provider_timeout"}))
        .await;
    assert_eq!(ok(&again, 200), &rel, "a repeated release answers the same");
    assert_eq!(
        grs(&app.balance(SK_TEST, &b).await),
        (10, 10, 0, s("active"))
    );
    let commit = app
        .post(&format!("/v1/reservations/{id}/commit"), SK_TEST, json!({}))
        .await;
    assert_error(
        &commit,
        409,
        "conflict",
        Some("reservation_not_pending"),
        Param::Any,
    );

    let released: Vec<Value> = app.ledger_of_type(SK_TEST, u, "usage.released").await;
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0]["reservationId"], id);
    assert_eq!(
        allocs(&released[0]["allocations"]),
        allocs(&r["allocations"])
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn units_coming_back_to_a_revoked_balance_are_written_off_with_a_further_revoked_entry() {
    let app = spawn_app().await;
    let u = "u_writeoff";
    let bal = app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_w").await;
    let r1 = app.reserve_ok(SK_TEST, u, GEMINI, 5).await;
    let r2 = app.reserve_ok(SK_TEST, u, GEMINI, 4).await;
    let (r1, r2) = (
        r1["reservationId"].as_str().unwrap(),
        r2["reservationId"].as_str().unwrap(),
    );

    let v = app.revoke(SK_TEST, &bal, "refund").await;
    assert_eq!(v["status"], "revoked");
    assert_eq!(v["remaining"], 0);
    let revoked = app.ledger_of_type(SK_TEST, u, "credits.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        revoked[0]["amount"], 41,
        "the amount taken: what was not held"
    );
    assert_eq!(revoked[0]["balanceId"], bal.as_str());
    assert_eq!(revoked[0]["reason"], "refund");

    // Held units can still be committed; the rest is written off at once.
    let c = app.commit(SK_TEST, r1, Some(2)).await;
    assert_eq!(c["committedAmount"], 2);
    app.release(SK_TEST, r2).await;
    let b = app.balance(SK_TEST, &bal).await;
    assert_eq!(grs(&b), (50, 0, 0, s("revoked")));

    let revoked = app.ledger_of_type(SK_TEST, u, "credits.revoked").await;
    let mut got: Vec<(u64, Value)> = revoked
        .iter()
        .map(|e| (e["amount"].as_u64().unwrap(), e["reservationId"].clone()))
        .collect();
    got.sort_by_key(|x| x.0);
    assert_eq!(got, vec![(3, json!(r1)), (4, json!(r2)), (41, Value::Null)]);
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn committing_less_than_reserved_keeps_the_plan_part_first_and_returns_the_rest() {
    let app = spawn_app().await;
    let u = "u_partial";
    app.subscribe(SK_TEST, u, "pro").await;
    app.consume_ok(SK_TEST, u, IMAGEN, 39).await;
    let g = app.grant(SK_TEST, u, "cpk_creator_bundle", "cs_p").await;
    let bal = g["balances"][0]["id"].as_str().unwrap().to_string();

    let r = app.reserve_ok(SK_TEST, u, DALLE, 4).await;
    assert_eq!(
        allocs(&r["allocations"]),
        vec![plan_part("images", 1), credit_part(&bal, 3)]
    );
    let id = r["reservationId"].as_str().unwrap();
    let path = format!("/v1/reservations/{id}/commit");
    let body = json!({"amount": 2, "response": {"url": "https://cdn.example/fox.png"}});
    let c = ok(&app.post(&path, SK_TEST, body.clone()).await, 200).clone();
    assert_eq!(c["status"], "committed");
    assert_eq!(c["committedAmount"], 2);
    assert_eq!(c["amount"], 4);
    assert_eq!(c["response"], json!({"url": "https://cdn.example/fox.png"}));

    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(urr(counter(&usage, "images")), (40, 0, 0));
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (10, 9, 0, s("active"))
    );
    let e: Vec<Value> = app.ledger_of_type(SK_TEST, u, "usage.committed").await;
    let e = e
        .iter()
        .find(|e| e["reservationId"] == id)
        .expect("usage.committed entry");
    assert_eq!(e["amount"], 2);
    assert_eq!(
        allocs(&e["allocations"]),
        vec![plan_part("images", 1), credit_part(&bal, 1)]
    );

    assert_eq!(
        ok(&app.post(&path, SK_TEST, body).await, 200),
        &c,
        "same amount: same answer"
    );
    let other = app.post(&path, SK_TEST, json!({"amount": 3})).await;
    assert_error(
        &other,
        409,
        "conflict",
        Some("reservation_not_pending"),
        Param::Any,
    );
    let rel = app
        .post(
            &format!("/v1/reservations/{id}/release"),
            SK_TEST,
            json!({}),
        )
        .await;
    assert_error(
        &rel,
        409,
        "conflict",
        Some("reservation_not_pending"),
        Param::Any,
    );

    // Above the reserved amount is 400 invalid_amount and leaves it pending.
    let r = app.reserve_ok(SK_TEST, u, DALLE, 2).await;
    assert_eq!(allocs(&r["allocations"]), vec![credit_part(&bal, 2)]);
    let id = r["reservationId"].as_str().unwrap();
    let over = app
        .post(
            &format!("/v1/reservations/{id}/commit"),
            SK_TEST,
            json!({"amount": 3}),
        )
        .await;
    assert_error(
        &over,
        400,
        "invalid_request",
        Some("invalid_amount"),
        Param::Is("amount"),
    );
    assert_eq!(app.reservation(SK_TEST, id).await["status"], "pending");
    assert_eq!(app.commit(SK_TEST, id, None).await["committedAmount"], 2);
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (10, 7, 0, s("active"))
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn cancelling_keeps_credits_spendable_and_ends_in_no_subscription_credits_exhausted() {
    let app = spawn_app().await;
    let u = "u_cancel";
    app.subscribe(SK_TEST, u, "pro").await;
    let bal = app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_c").await;
    let c = app.consume_ok(SK_TEST, u, GEMINI, 3).await;
    assert_eq!(
        allocs(&c["allocations"]),
        vec![plan_part("images", 3)],
        "plan first"
    );

    let first = app.cancel(SK_TEST, u).await;
    assert_eq!(first["userId"], u);
    assert_eq!(first["planId"], "pro");
    assert_eq!(first["status"], "canceled");
    assert_eq!(
        app.cancel(SK_TEST, u).await,
        first,
        "a second DELETE answers the same"
    );
    let sub = ok(
        &app.get(&format!("/v1/users/{u}/subscription"), SK_TEST)
            .await,
        200,
    )
    .clone();
    assert_eq!(sub["status"], "canceled");
    assert_eq!(sub["planId"], "pro");

    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(usage["counters"], json!([]));
    // API.md: "For the matcher and for usage (`counters: []`) a canceled subscription is no
    // subscription" -- so usage shows `subscription: null`.
    assert_eq!(usage["subscription"], Value::Null, "{usage}");
    assert_eq!(
        grs(credit_in(&usage, &bal).expect("credits stay")),
        (50, 50, 0, s("active"))
    );

    let c = app.consume_ok(SK_TEST, u, GEMINI, 50).await;
    assert_eq!(allocs(&c["allocations"]), vec![credit_part(&bal, 50)]);
    let d = app.reserve(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(d["allowed"], false);
    assert_eq!(
        d["reasons"],
        json!(["no_subscription", "credits_exhausted"])
    );
    assert_eq!(d["available"], json!({"plan": 0, "credits": 0}));

    // A later PUT starts a new active period.
    let again = app.subscribe(SK_TEST, u, "pro").await;
    assert_eq!(again["status"], "active");
    assert!(ts(&again["currentPeriodStart"]) >= ts(&sub["currentPeriodStart"]));
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(
        urr(counter(&usage, "images")),
        (0, 0, 40),
        "a new monthly period"
    );
    // "a second DELETE answers the same": the cancel happened once, so one entry.
    let canceled = app
        .ledger_of_type(SK_TEST, u, "subscription.canceled")
        .await;
    assert_eq!(canceled.len(), 1, "{canceled:?}");
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn downgrading_from_pro_to_free_gives_the_free_counters_with_the_lifetime_count_kept() {
    let app = spawn_app().await;
    let u = "u_down";
    app.subscribe(SK_TEST, u, "free").await;
    app.consume_ok(SK_TEST, u, GEMINI, 1).await;

    let pro = app.subscribe(SK_TEST, u, "pro").await;
    assert_eq!(pro["planId"], "pro");
    assert_eq!(pro["status"], "active");
    let usage = app.usage(SK_TEST, u).await;
    let counters = usage["counters"].as_array().unwrap();
    assert_eq!(counters.len(), 1, "{usage}");
    assert_eq!(counters[0]["planId"], "pro");
    assert_eq!(counters[0]["period"], "month");
    assert_eq!(counters[0]["match"], json!(["image.*"]));
    assert_eq!(urr(&counters[0]), (0, 0, 40));
    app.consume_ok(SK_TEST, u, IMAGEN, 5).await;

    let free = app.subscribe(SK_TEST, u, "free").await;
    assert_eq!(free["planId"], "free");
    let usage = app.usage(SK_TEST, u).await;
    let counters = usage["counters"].as_array().unwrap();
    assert_eq!(counters.len(), 1, "{usage}");
    let k = &counters[0];
    assert_eq!(k["planId"], "free");
    assert_eq!(k["limitId"], "images");
    assert_eq!(k["period"], "lifetime");
    assert_eq!(k["limit"], 2);
    assert_eq!(
        urr(k),
        (1, 0, 1),
        "leaving Free and coming back gives no new free images"
    );

    app.consume_ok(SK_TEST, u, GEMINI, 1).await;
    let d = app.reserve(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(d["reasons"], json!(["plan_exhausted"]));
    let d = app.reserve(SK_TEST, u, IMAGEN, 1).await;
    assert_eq!(d["reasons"], json!(["not_in_plan"]));
}

#[tokio::test]
async fn subscribing_to_the_same_plan_again_changes_nothing() {
    let app = spawn_app().await;
    let u = "u_same";
    let first = app.subscribe(SK_TEST, u, "pro").await;
    app.consume_ok(SK_TEST, u, IMAGEN, 3).await;
    app.advance_clock(3600).await;
    let again = app.subscribe(SK_TEST, u, "pro").await;
    assert_eq!(again, first);
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(urr(counter(&usage, "images")), (3, 0, 37));
    // API.md: "The same plan again changes nothing" -- so no second ledger entry either.
    let updated = app.ledger_of_type(SK_TEST, u, "subscription.updated").await;
    assert_eq!(updated.len(), 1, "{updated:?}");

    // Another plan starts a new period now.
    app.subscribe(SK_TEST, u, "free").await;
    let back = app.subscribe(SK_TEST, u, "pro").await;
    assert!(
        ts(&back["currentPeriodStart"]) > ts(&first["currentPeriodStart"]),
        "{back}"
    );
}

#[tokio::test]
async fn a_revoke_leaves_the_grant_and_the_revoke_as_separate_ledger_entries() {
    let app = spawn_app().await;
    let u = "u_revoke";
    let bal = app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_r").await;
    app.consume_ok(SK_TEST, u, GEMINI, 10).await;
    let v = app.revoke(SK_TEST, &bal, "refund").await;
    assert_eq!(v["id"], bal.as_str());
    assert_eq!(grs(&v), (50, 0, 0, s("revoked")));
    assert_eq!(app.balance(SK_TEST, &bal).await, v);

    let again = app.revoke(SK_TEST, &bal, "refund").await;
    assert_eq!(
        grs(&again),
        (50, 0, 0, s("revoked")),
        "a second revoke changes nothing"
    );

    let credits: Vec<Value> = app
        .ledger_all(SK_TEST, u)
        .await
        .into_iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("credits."))
        .collect();
    assert_eq!(credits.len(), 2, "{credits:?}");
    assert_eq!(credits[0]["type"], "credits.revoked", "newest first");
    assert_eq!(credits[0]["amount"], 40);
    assert_eq!(credits[0]["balanceId"], bal.as_str());
    assert_eq!(credits[0]["reason"], "refund");
    assert_eq!(credits[1]["type"], "credits.granted");
    assert_eq!(credits[1]["amount"], 50);
    assert_eq!(credits[1]["balanceId"], bal.as_str());
    assert_ne!(credits[0]["id"], credits[1]["id"]);

    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(
        usage["credits"],
        json!([]),
        "credits are the active balances"
    );
    let d = app.reserve(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(
        d["reasons"],
        json!(["no_subscription", "credits_exhausted"])
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn test_and_live_data_stay_apart() {
    let app = spawn_app().await;
    let u = "u_both";
    app.subscribe(SK_TEST, u, "pro").await;
    let g = app
        .grant(SK_TEST, u, "cpk_gemini_topup", "cs_same_ref")
        .await;
    let test_bal = g["balances"][0]["id"].as_str().unwrap().to_string();
    let r = app.reserve_ok(SK_TEST, u, DALLE, 2).await;
    let test_res = r["reservationId"].as_str().unwrap().to_string();

    // Live sees none of it.
    let sub = app
        .get(&format!("/v1/users/{u}/subscription"), SK_LIVE)
        .await;
    assert_error(&sub, 404, "not_found", Some("no_subscription"), Param::Any);
    let usage = app.usage(SK_LIVE, u).await;
    assert_eq!(usage["subscription"], Value::Null);
    assert_eq!(usage["counters"], json!([]));
    assert_eq!(usage["credits"], json!([]));
    let b = app
        .get(&format!("/v1/credits/balances/{test_bal}"), SK_LIVE)
        .await;
    assert_error(&b, 404, "not_found", None, Param::Any);
    let res = app
        .get(&format!("/v1/reservations/{test_res}"), SK_LIVE)
        .await;
    assert_error(&res, 404, "not_found", None, Param::Any);
    let c = app
        .post(
            &format!("/v1/reservations/{test_res}/commit"),
            SK_LIVE,
            json!({}),
        )
        .await;
    assert_error(&c, 404, "not_found", None, Param::Any);
    let v = app
        .post(
            &format!("/v1/credits/balances/{test_bal}/revoke"),
            SK_LIVE,
            json!({"reason": "x"}),
        )
        .await;
    assert_error(&v, 404, "not_found", None, Param::Any);
    let ledger = ok(
        &app.get(&format!("/v1/users/{u}/ledger"), SK_LIVE).await,
        200,
    )
    .clone();
    assert_eq!(ledger, json!({"data": [], "hasMore": false}));
    let d = app.reserve(SK_LIVE, u, GEMINI, 1).await;
    assert_eq!(
        d["reasons"],
        json!(["no_subscription", "credits_exhausted"])
    );

    // The same external ref in live is a grant of its own.
    let lg = app
        .post(
            "/v1/credits/grants",
            SK_LIVE,
            json!({"userId": u, "packId": "cpk_gemini_topup", "externalRef": "cs_same_ref",
                   "source": "purchase"}),
        )
        .await;
    let lg = ok(&lg, 201).clone();
    assert_eq!(lg["created"], true);
    let live_bal = lg["balances"][0]["id"].as_str().unwrap().to_string();
    assert_ne!(live_bal, test_bal);
    app.consume_ok(SK_LIVE, u, GEMINI, 7).await;
    assert_eq!(
        grs(&app.balance(SK_LIVE, &live_bal).await),
        (50, 43, 0, s("active"))
    );
    assert_eq!(
        grs(&app.balance(SK_TEST, &test_bal).await),
        (50, 50, 0, s("active"))
    );
    let b = app
        .get(&format!("/v1/credits/balances/{live_bal}"), SK_TEST)
        .await;
    assert_error(&b, 404, "not_found", None, Param::Any);

    // The test clock is test mode only, and moves test data only.
    let live_clock = app.get("/v1/test/clock", SK_LIVE).await;
    assert_error(&live_clock, 403, "permission", None, Param::Any);
    let adv = app
        .post("/v1/test/clock/advance", SK_LIVE, json!({"seconds": 60}))
        .await;
    assert_error(&adv, 403, "permission", None, Param::Any);
    app.advance_clock(601).await;
    assert_eq!(
        app.reservation(SK_TEST, &test_res).await["status"],
        "expired"
    );
    let lr = app.reserve_ok(SK_LIVE, u, GEMINI, 1).await;
    app.advance_clock(3600).await;
    let lr = app
        .reservation(SK_LIVE, lr["reservationId"].as_str().unwrap())
        .await;
    assert_eq!(
        lr["status"], "pending",
        "the live reservation follows the wall clock"
    );

    // The catalog is shared by both modes.
    ok(
        &app.post(
            "/v1/credit-packs",
            SK_LIVE,
            pack_body("cpk_live_made", "*", 1, None),
        )
        .await,
        201,
    );
    ok(
        &app.get("/v1/credit-packs/cpk_live_made", SK_TEST).await,
        200,
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
    app.assert_ledger_agrees(SK_LIVE, u).await;
}

#[tokio::test]
async fn the_test_clock_expires_a_pending_reservation_at_its_ttl() {
    let app = spawn_app().await;
    let u = "u_ttl";
    let bal = app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_t").await;
    let body = json!({"userId": u, "model": GEMINI, "amount": 5, "ttlSeconds": 60});
    let r = app.reserve_with(SK_TEST, body).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(secs_between(&r["createdAt"], &r["expiresAt"]), 60.0);
    let id = r["reservationId"].as_str().unwrap();

    let dflt = app.reserve_ok(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(
        secs_between(&dflt["createdAt"], &dflt["expiresAt"]),
        600.0,
        "default ttl"
    );
    app.release(SK_TEST, dflt["reservationId"].as_str().unwrap())
        .await;

    app.advance_clock(50).await;
    assert_eq!(app.reservation(SK_TEST, id).await["status"], "pending");
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 45, 5, s("active"))
    );
    app.advance_clock_to(ts(&r["expiresAt"])).await;

    let got = app.reservation(SK_TEST, id).await;
    assert_eq!(got["status"], "expired", "{got}");
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 50, 0, s("active"))
    );
    let c = app
        .post(&format!("/v1/reservations/{id}/commit"), SK_TEST, json!({}))
        .await;
    assert_error(
        &c,
        409,
        "conflict",
        Some("reservation_not_pending"),
        Param::Any,
    );
    let rl = app
        .post(
            &format!("/v1/reservations/{id}/release"),
            SK_TEST,
            json!({}),
        )
        .await;
    assert_error(
        &rl,
        409,
        "conflict",
        Some("reservation_not_pending"),
        Param::Any,
    );
    let expired = app.ledger_of_type(SK_TEST, u, "usage.expired").await;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0]["reservationId"], id);
    assert_eq!(
        allocs(&expired[0]["allocations"]),
        vec![credit_part(&bal, 5)]
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn the_test_clock_expires_a_30_day_balance() {
    let app = spawn_app().await;
    create_pack(&app, "cpk_30_days", GEMINI, 10, Some(30)).await;
    let u = "u_30";
    let g = app.grant(SK_TEST, u, "cpk_30_days", "cs_30").await;
    let b = &g["balances"][0];
    assert_eq!(
        secs_between(&b["createdAt"], &b["expiresAt"]),
        (30 * DAY) as f64,
        "{b}"
    );
    let bal = b["id"].as_str().unwrap().to_string();
    // The same, by an explicit expiresAt on a never-expiring pack.
    let at = app
        .clock_now()
        .await
        .checked_add(jiff::SignedDuration::from_hours(30 * 24))
        .unwrap();
    let body = json!({"userId": u, "packId": "cpk_gemini_topup", "externalRef": "cs_30b",
                      "source": "grant", "notes": "support gesture", "expiresAt": at.to_string()});
    let g2 = ok(&app.post("/v1/credits/grants", SK_TEST, body).await, 201).clone();
    let b2 = &g2["balances"][0];
    assert_eq!(ts(&b2["expiresAt"]), at);
    assert_eq!(b2["source"], "grant");
    assert_eq!(b2["notes"], "support gesture");
    let bal2 = b2["id"].as_str().unwrap().to_string();

    app.consume_ok(SK_TEST, u, GEMINI, 2).await;
    let exp = ts(&b["expiresAt"]).max(at);
    app.advance_clock_to(
        exp.checked_sub(jiff::SignedDuration::from_secs(10))
            .unwrap(),
    )
    .await;
    assert_eq!(app.balance(SK_TEST, &bal).await["status"], "active");
    assert_eq!(app.balance(SK_TEST, &bal2).await["status"], "active");
    app.advance_clock_to(exp).await;

    let e1 = app.balance(SK_TEST, &bal).await;
    let e2 = app.balance(SK_TEST, &bal2).await;
    assert_eq!(e1["status"], "expired");
    assert_eq!(e1["remaining"], 0);
    assert_eq!(e2["status"], "expired");
    assert_eq!(e2["remaining"], 0);
    let expired = app.ledger_of_type(SK_TEST, u, "credits.expired").await;
    let total: u64 = expired.iter().map(|e| e["amount"].as_u64().unwrap()).sum();
    assert_eq!(total, 58, "10 + 50 granted, 2 spent: {expired:?}");
    assert_eq!(expired.len(), 2);
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(usage["credits"], json!([]));
    let d = app.reserve(SK_TEST, u, GEMINI, 1).await;
    assert_eq!(
        d["reasons"],
        json!(["no_subscription", "credits_exhausted"])
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn units_held_when_a_balance_expires_can_be_committed_and_the_rest_is_written_off() {
    let app = spawn_app().await;
    let u = "u_held_expiry";
    let at = app
        .clock_now()
        .await
        .checked_add(jiff::SignedDuration::from_secs(100))
        .unwrap();
    let body = json!({"userId": u, "packId": "cpk_gemini_topup", "externalRef": "cs_h",
                      "source": "adjustment", "expiresAt": at.to_string()});
    let g = ok(&app.post("/v1/credits/grants", SK_TEST, body).await, 201).clone();
    let bal = g["balances"][0]["id"].as_str().unwrap().to_string();
    let r = app.reserve_ok(SK_TEST, u, GEMINI, 3).await;
    let id = r["reservationId"].as_str().unwrap();
    app.advance_clock_to(at).await;

    let b = app.balance(SK_TEST, &bal).await;
    assert_eq!(b["status"], "expired");
    assert_eq!(b["remaining"], 0);
    let expired = app.ledger_of_type(SK_TEST, u, "credits.expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(
        expired[0]["amount"], 47,
        "the remaining amount expires, not the held one"
    );

    assert_eq!(app.commit(SK_TEST, id, Some(1)).await["committedAmount"], 1);
    let expired = app.ledger_of_type(SK_TEST, u, "credits.expired").await;
    assert_eq!(expired.len(), 2, "{expired:?}");
    assert_eq!(expired[0]["amount"], 2);
    assert_eq!(expired[0]["reservationId"], id);
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 0, 0, s("expired"))
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
}

fn plus_months(start: jiff::Timestamp, k: i64) -> jiff::Timestamp {
    let z = start.to_zoned(jiff::tz::TimeZone::UTC);
    z.checked_add(jiff::Span::new().months(k))
        .unwrap()
        .timestamp()
}

#[tokio::test]
async fn the_test_clock_resets_a_monthly_counter_at_each_period_boundary() {
    let app = spawn_app().await;
    let u = "u_monthly";
    let sub = app.subscribe(SK_TEST, u, "pro").await;
    let start = ts(&sub["currentPeriodStart"]);
    app.consume_ok(SK_TEST, u, IMAGEN, 40).await;
    let d = app.reserve(SK_TEST, u, IMAGEN, 1).await;
    assert_eq!(d["reasons"], json!(["plan_exhausted"]));

    let usage = app.usage(SK_TEST, u).await;
    let k = counter(&usage, "images");
    assert_eq!(ts(&k["periodStart"]), start);
    assert_eq!(ts(&k["resetsAt"]), plus_months(start, 1));

    app.advance_clock_to(plus_months(start, 1)).await;
    let usage = app.usage(SK_TEST, u).await;
    let k = counter(&usage, "images");
    assert_eq!(urr(k), (0, 0, 40), "{k}");
    assert_eq!(ts(&k["periodStart"]), plus_months(start, 1));
    assert_eq!(
        ts(&k["resetsAt"]),
        plus_months(start, 2),
        "k-th boundary = start + k months"
    );
    app.consume_ok(SK_TEST, u, IMAGEN, 40).await;

    app.advance_clock_to(plus_months(start, 2)).await;
    let usage = app.usage(SK_TEST, u).await;
    let k = counter(&usage, "images");
    assert_eq!(urr(k), (0, 0, 40), "{k}");
    assert_eq!(ts(&k["periodStart"]), plus_months(start, 2));
    assert_eq!(ts(&k["resetsAt"]), plus_months(start, 3));
}

#[tokio::test]
async fn a_release_after_the_monthly_reset_does_not_refund_the_new_period() {
    let app = spawn_app().await;
    let u = "u_reset_release";
    let sub = app.subscribe(SK_TEST, u, "pro").await;
    let boundary = plus_months(ts(&sub["currentPeriodStart"]), 1);
    app.consume_ok(SK_TEST, u, IMAGEN, 30).await;
    app.advance_clock_to(
        boundary
            .checked_sub(jiff::SignedDuration::from_secs(100))
            .unwrap(),
    )
    .await;
    let r = app.reserve_ok(SK_TEST, u, IMAGEN, 5).await;
    assert_eq!(allocs(&r["allocations"]), vec![plan_part("images", 5)]);
    app.advance_clock_to(boundary).await;
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(urr(counter(&usage, "images")), (0, 0, 40), "a new period");
    app.release(SK_TEST, r["reservationId"].as_str().unwrap())
        .await;
    let usage = app.usage(SK_TEST, u).await;
    assert_eq!(
        urr(counter(&usage, "images")),
        (0, 0, 40),
        "nothing goes back to the new period"
    );
}

#[tokio::test]
async fn editing_a_plan_limit_applies_from_the_next_operation_and_used_carries_over() {
    let app = spawn_app().await;
    let plan = |limit: u64| {
        json!({"id": "team", "name": "Team",
               "price": {"amount": 1900, "currency": "usd", "interval": "month"},
               "limits": [{"id": "images", "name": "Images", "match": ["image.*"],
                           "limit": limit, "unit": "count", "period": "month"}]})
    };
    ok(&app.post("/v1/plans", SK_TEST, plan(5)).await, 201);
    let u = "u_team";
    app.subscribe(SK_TEST, u, "team").await;
    app.consume_ok(SK_TEST, u, IMAGEN, 3).await;
    ok(&app.put("/v1/plans/team", SK_TEST, plan(10)).await, 200);
    let usage = app.usage(SK_TEST, u).await;
    let k = counter(&usage, "images");
    assert_eq!(k["limit"], 10);
    assert_eq!(urr(k), (3, 0, 7));
    app.consume_ok(SK_TEST, u, IMAGEN, 7).await;
    let d = app.reserve(SK_TEST, u, IMAGEN, 1).await;
    assert_eq!(d["reasons"], json!(["plan_exhausted"]));
}

#[tokio::test]
async fn usage_with_match_shows_only_the_counters_and_credits_that_overlap_it() {
    let app = spawn_app().await;
    let u = "u_match";
    app.subscribe(SK_TEST, u, "pro").await;
    let g = app.grant(SK_TEST, u, "cpk_creator_bundle", "cs_m1").await;
    let dalle = g["balances"][0]["id"].as_str().unwrap().to_string();
    let veo = g["balances"][1]["id"].as_str().unwrap().to_string();
    let gem = app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_m2").await;
    let ids = |usage: &Value| -> Vec<String> {
        let mut v: Vec<String> = usage["credits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let get = |q: &'static str| {
        let app = &app;
        async move {
            ok(
                &app.get(&format!("/v1/users/{u}/usage?match={q}"), SK_TEST)
                    .await,
                200,
            )
            .clone()
        }
    };

    let video = get("video.*").await;
    assert_eq!(
        video["counters"],
        json!([]),
        "image.* does not overlap video.*"
    );
    assert_eq!(ids(&video), vec![veo.clone()]);
    let d = get("image.dall-e-3").await;
    assert_eq!(d["counters"].as_array().unwrap().len(), 1);
    assert_eq!(ids(&d), vec![dalle.clone()]);
    let images = get("image.*").await;
    assert_eq!(images["counters"].as_array().unwrap().len(), 1);
    assert_eq!(ids(&images), sorted(vec![dalle.clone(), gem.clone()]));
    let all = get("*").await;
    assert_eq!(
        ids(&all),
        sorted(vec![dalle.clone(), veo.clone(), gem.clone()])
    );
    let text = get("text.gpt-4.1").await;
    assert_eq!(text["counters"], json!([]));
    assert_eq!(text["credits"], json!([]));
    assert_eq!(
        ids(&app.usage(SK_TEST, u).await),
        ids(&all),
        "no filter: everything"
    );
}

#[tokio::test]
async fn a_reservation_shows_every_field_with_null_where_there_is_no_value() {
    let app = spawn_app().await;
    let u = "u_shape_res";
    app.subscribe(SK_TEST, u, "pro").await;
    let r = app.reserve_ok(SK_TEST, u, IMAGEN, 2).await;
    let id = r["reservationId"].as_str().unwrap();
    let got = app.reservation(SK_TEST, id).await;
    for f in [
        "reservationId",
        "allowed",
        "reasons",
        "status",
        "userId",
        "model",
        "amount",
        "allocations",
        "expiresAt",
        "createdAt",
        "metadata",
        "committedAmount",
        "response",
        "errorCode",
    ] {
        assert!(got.get(f).is_some(), "{f} missing from {got}");
        assert_eq!(got[f], r[f], "GET and POST agree on {f}");
    }
    assert_eq!(
        (
            &got["metadata"],
            &got["committedAmount"],
            &got["response"],
            &got["errorCode"]
        ),
        (&Value::Null, &Value::Null, &Value::Null, &Value::Null)
    );
    let c = app.commit(SK_TEST, id, None).await;
    assert_eq!(app.reservation(SK_TEST, id).await, c);
    assert_eq!(c["allocations"], r["allocations"]);
    assert_eq!(c["response"], Value::Null);
    let body = json!({"userId": u, "model": IMAGEN, "amount": 1, "ttlSeconds": 86400});
    let max = app.reserve_with(SK_TEST, body).await;
    assert_eq!(
        secs_between(&max["createdAt"], &max["expiresAt"]),
        86400.0,
        "ttl 86400 is allowed"
    );
}
