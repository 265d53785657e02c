//! `Idempotency-Key` on POST: replays, conflicts, failures not stored, scope, restarts.

use serde_json::{Value, json};

use crate::support::*;

fn replayed(r: &Resp) -> bool {
    r.2.get("idempotent-replayed").and_then(|v| v.to_str().ok()) == Some("true")
}

#[tokio::test]
async fn the_same_key_and_body_replays_the_first_answer_and_holds_only_once() {
    let app = spawn_app().await;
    let u = "u_idem";
    let bal = app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_i").await;
    let body = json!({"userId": u, "model": GEMINI, "amount": 5});

    let first = app
        .post_idem("/v1/reservations", SK_TEST, body.clone(), "key-reserve-1")
        .await;
    let first_body = ok(&first, 200).clone();
    assert_eq!(first_body["allowed"], true);
    assert!(!replayed(&first), "the first answer is not a replay");
    let second = app
        .post_idem("/v1/reservations", SK_TEST, body.clone(), "key-reserve-1")
        .await;
    assert_eq!(
        ok(&second, 200),
        &first_body,
        "the replay is the first answer"
    );
    assert!(
        replayed(&second),
        "header Idempotent-Replayed: true, got {:?}",
        second.2
    );

    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 45, 5, s("active"))
    );
    let reserved = app.ledger_of_type(SK_TEST, u, "usage.reserved").await;
    assert_eq!(reserved.len(), 1, "held once: {reserved:?}");

    // A commit and a grant replay the same way (201 stays 201).
    let id = first_body["reservationId"].as_str().unwrap();
    let path = format!("/v1/reservations/{id}/commit");
    let c1 = app
        .post_idem(&path, SK_TEST, json!({"amount": 3}), "key-commit-1")
        .await;
    let c2 = app
        .post_idem(&path, SK_TEST, json!({"amount": 3}), "key-commit-1")
        .await;
    assert_eq!(ok(&c1, 200), ok(&c2, 200));
    assert!(replayed(&c2));
    let g = json!({"userId": u, "packId": "cpk_creator_bundle", "externalRef": "cs_i2",
                   "source": "purchase"});
    let g1 = app
        .post_idem("/v1/credits/grants", SK_TEST, g.clone(), "key-grant-1")
        .await;
    let g2 = app
        .post_idem("/v1/credits/grants", SK_TEST, g, "key-grant-1")
        .await;
    assert_eq!(
        ok(&g1, 201),
        ok(&g2, 201),
        "the replay keeps status 201 and created: true"
    );
    assert!(replayed(&g2));
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 47, 0, s("active"))
    );

    // A consume with a key spends once.
    let cb = json!({"userId": u, "model": GEMINI, "amount": 4});
    let k1 = app
        .post_idem("/v1/consume", SK_TEST, cb.clone(), "key-consume-1")
        .await;
    let k2 = app
        .post_idem("/v1/consume", SK_TEST, cb, "key-consume-1")
        .await;
    assert_eq!(ok(&k1, 200), ok(&k2, 200));
    assert!(replayed(&k2));
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 43, 0, s("active"))
    );
    app.assert_ledger_agrees(SK_TEST, u).await;
}

#[tokio::test]
async fn the_same_key_with_another_body_or_path_is_409_idempotency_key_reused() {
    let app = spawn_app().await;
    let u = "u_idem_conflict";
    let bal = app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_ic").await;
    let body = json!({"userId": u, "model": GEMINI, "amount": 5});
    ok(
        &app.post_idem("/v1/reservations", SK_TEST, body.clone(), "k1")
            .await,
        200,
    );
    let ledger_before = app.ledger_all(SK_TEST, u).await;

    let other = json!({"userId": u, "model": GEMINI, "amount": 6});
    let r = app
        .post_idem("/v1/reservations", SK_TEST, other, "k1")
        .await;
    assert_error(
        &r,
        409,
        "conflict",
        Some("idempotency_key_reused"),
        Param::Any,
    );
    let r = app
        .post_idem("/v1/consume", SK_TEST, body.clone(), "k1")
        .await;
    assert_error(
        &r,
        409,
        "conflict",
        Some("idempotency_key_reused"),
        Param::Any,
    );
    let r = app.post_idem("/v1/check", SK_TEST, body, "k1").await;
    assert_error(
        &r,
        409,
        "conflict",
        Some("idempotency_key_reused"),
        Param::Any,
    );

    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 45, 5, s("active"))
    );
    assert_eq!(app.ledger_all(SK_TEST, u).await, ledger_before);
}

#[tokio::test]
async fn an_answer_that_was_not_2xx_is_not_stored_so_the_key_can_be_retried() {
    let app = spawn_app().await;
    let u = "u_idem_retry";
    let g = json!({"userId": u, "packId": "cpk_later", "externalRef": "cs_later",
                   "source": "purchase"});
    let r = app
        .post_idem("/v1/credits/grants", SK_TEST, g.clone(), "k-later")
        .await;
    assert_error(&r, 404, "not_found", Some("pack_not_found"), Param::Any);
    assert!(!replayed(&r));
    create_pack(&app, "cpk_later", GEMINI, 7, None).await;
    let r = app
        .post_idem("/v1/credits/grants", SK_TEST, g.clone(), "k-later")
        .await;
    let body = ok(&r, 201).clone();
    assert_eq!(body["created"], true);
    assert!(!replayed(&r), "the first 2xx is not a replay");
    let r = app
        .post_idem("/v1/credits/grants", SK_TEST, g, "k-later")
        .await;
    assert_eq!(ok(&r, 201), &body);
    assert!(replayed(&r));

    // A 400 with the key, then a valid body with the same key.
    let bad = json!({"userId": u, "model": GEMINI, "amount": 0});
    let r = app
        .post_idem("/v1/reservations", SK_TEST, bad, "k-bad")
        .await;
    assert_error(&r, 400, "invalid_request", None, Param::Is("amount"));
    let good = json!({"userId": u, "model": GEMINI, "amount": 1});
    let r = app
        .post_idem("/v1/reservations", SK_TEST, good, "k-bad")
        .await;
    assert_eq!(ok(&r, 200)["allowed"], true);
    assert!(!replayed(&r));
}

#[tokio::test]
async fn keys_are_scoped_to_mode() {
    let app = spawn_app().await;
    let u = "u_idem_mode";
    app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_m").await;
    let live_bal = app.grant_one(SK_LIVE, u, "cpk_gemini_topup", "cs_m").await;
    let body = json!({"userId": u, "model": GEMINI, "amount": 2});
    let t = app
        .post_idem("/v1/reservations", SK_TEST, body.clone(), "shared-key")
        .await;
    let l = app
        .post_idem("/v1/reservations", SK_LIVE, body, "shared-key")
        .await;
    assert!(
        !replayed(&l),
        "a live request is not a replay of a test one"
    );
    let (t, l) = (ok(&t, 200), ok(&l, 200));
    assert_eq!(l["allowed"], true);
    assert_ne!(t["reservationId"], l["reservationId"]);
    assert_eq!(
        grs(&app.balance(SK_LIVE, &live_bal).await),
        (50, 48, 2, s("active"))
    );
}

#[tokio::test]
async fn an_idempotency_key_over_255_characters_is_400() {
    let app = spawn_app().await;
    let u = "u_idem_long";
    let bal = app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_l").await;
    let body = json!({"userId": u, "model": GEMINI, "amount": 1});
    let r = app
        .post_idem("/v1/reservations", SK_TEST, body.clone(), &"k".repeat(256))
        .await;
    assert_error(&r, 400, "invalid_request", None, Param::Any);
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 50, 0, s("active"))
    );
    let r = app
        .post_idem("/v1/reservations", SK_TEST, body, &"k".repeat(255))
        .await;
    assert_eq!(ok(&r, 200)["allowed"], true);
}

#[tokio::test]
async fn a_stored_answer_survives_a_restart_so_a_retried_reserve_never_holds_twice() {
    let mut app = spawn_app().await;
    let u = "u_idem_restart";
    let bal = app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_ir").await;
    let body = json!({"userId": u, "model": GEMINI, "amount": 5});
    let first = app
        .post_idem("/v1/reservations", SK_TEST, body.clone(), "k-crash")
        .await;
    let first: Value = ok(&first, 200).clone();
    let g = json!({"userId": u, "packId": "cpk_creator_bundle", "externalRef": "cs_ir2",
                   "source": "purchase"});
    let g1 = ok(
        &app.post_idem("/v1/credits/grants", SK_TEST, g.clone(), "k-grant")
            .await,
        201,
    )
    .clone();

    app.restart().await;

    let again = app
        .post_idem("/v1/reservations", SK_TEST, body, "k-crash")
        .await;
    assert_eq!(ok(&again, 200), &first);
    assert!(replayed(&again));
    let g2 = app
        .post_idem("/v1/credits/grants", SK_TEST, g, "k-grant")
        .await;
    assert_eq!(ok(&g2, 201), &g1);
    assert!(replayed(&g2));
    let other = json!({"userId": u, "model": GEMINI, "amount": 9});
    let r = app
        .post_idem("/v1/reservations", SK_TEST, other, "k-crash")
        .await;
    assert_error(
        &r,
        409,
        "conflict",
        Some("idempotency_key_reused"),
        Param::Any,
    );
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 45, 5, s("active"))
    );
    assert_eq!(
        app.ledger_of_type(SK_TEST, u, "usage.reserved").await.len(),
        1
    );
    assert_eq!(
        app.ledger_of_type(SK_TEST, u, "credits.granted")
            .await
            .len(),
        3
    );
}
