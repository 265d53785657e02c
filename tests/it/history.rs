//! What has left memory for the history on disk (ledger pages, ended reservations, stored
//! answers) still answers as API.md says, across pages and across restarts.

use serde_json::{Value, json};
use std::collections::HashSet;

use crate::support::*;

#[tokio::test]
async fn a_long_ledger_pages_across_disk_and_memory_and_old_reservations_still_answer() {
    // 180 ledger entries: nearly three pages of the 64 a user keeps in memory.
    let mut app = spawn_app().await;
    let u = "u_history";
    let bal = app
        .grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_history")
        .await;
    // A reservation made first and ended last: its start is on disk long before its end.
    let early = app.reserve_ok(SK_TEST, u, GEMINI, 1).await;
    let early_id = early["reservationId"].as_str().unwrap().to_string();
    let mut consumed = Vec::new();
    for _ in 0..48 {
        consumed.push(app.consume_ok(SK_TEST, u, GEMINI, 1).await);
    }
    // 48 consumes of 1 and a pending 1 on a pack of 50: one unit left.
    let more = app
        .grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_history_2")
        .await;
    for _ in 0..40 {
        consumed.push(app.consume_ok(SK_TEST, u, GEMINI, 1).await);
    }
    let committed = app.commit(SK_TEST, &early_id, None).await;
    assert_eq!(committed["status"], "committed", "{committed}");

    let expected = Expected {
        user: u,
        early_id,
        consumed,
        bal,
        more,
    };
    let before = check(&app, &expected).await;
    app.restart().await;
    let after = check(&app, &expected).await;
    assert_eq!(before, after, "a restart changes no entry");
    app.crash();
    app.start_again().await;
    assert_eq!(check(&app, &expected).await, before, "nor does a crash");
}

#[tokio::test]
async fn an_unknown_ledger_cursor_is_refused_even_for_a_long_ledger() {
    let app = spawn_app().await;
    let u = "u_cursor";
    app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_cursor")
        .await;
    for _ in 0..45 {
        app.consume_ok(SK_TEST, u, GEMINI, 1).await;
    }
    let r = app
        .get(
            &format!("/v1/users/{u}/ledger?startingAfter=le_01AAAAAAAAAAAAAAAAAAAAAAAA_0"),
            SK_TEST,
        )
        .await;
    assert_eq!(r.0, 400, "{:?}", r.1);
}

#[tokio::test]
async fn a_stored_answer_is_gone_after_24_hours_on_the_test_clock_and_the_key_is_free_again() {
    let app = spawn_app().await;
    let u = "u_answer_age";
    app.grant_one(SK_TEST, u, "cpk_gemini_topup", "cs_answer_age")
        .await;
    let body = json!({"userId": u, "model": GEMINI, "amount": 1});
    let first = app
        .post_idem("/v1/consume", SK_TEST, body.clone(), "k-age")
        .await;
    assert_eq!(first.0, 200);
    let replay = app
        .post_idem("/v1/consume", SK_TEST, body.clone(), "k-age")
        .await;
    assert_eq!(replay.1, first.1, "within 24 h the answer is replayed");
    assert_eq!(
        replay
            .2
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let other = json!({"userId": u, "model": GEMINI, "amount": 2});
    assert_eq!(
        app.post_idem("/v1/consume", SK_TEST, other.clone(), "k-age")
            .await
            .0,
        409,
        "another body with the key is refused while the answer is kept"
    );

    app.advance_clock(DAY + 1).await;
    let fresh = app.post_idem("/v1/consume", SK_TEST, other, "k-age").await;
    assert_eq!(fresh.0, 200, "after 24 h the key is free: {:?}", fresh.1);
    assert!(fresh.2.get("idempotent-replayed").is_none());
    assert_ne!(fresh.1["reservationId"], first.1["reservationId"]);
    assert_eq!(fresh.1["amount"], 2);
}

/// What the test below expects to read, the same before and after a restart or a crash.
struct Expected {
    user: &'static str,
    early_id: String,
    consumed: Vec<Value>,
    bal: String,
    more: String,
}

async fn check(app: &TestApp, e: &Expected) -> Vec<Value> {
    let (u, early_id, consumed, bal, more) = (e.user, &e.early_id, &e.consumed, &e.bal, &e.more);
    let all = app.ledger_all(SK_TEST, u).await;
    // 2 grants + 88 consumes × 2 entries + reserve and commit of the early one.
    assert_eq!(all.len(), 2 + 88 * 2 + 2, "every entry once");
    let ids: HashSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "ids are unique");
    assert_eq!(all[0]["type"], "usage.committed");
    assert_eq!(all[0]["reservationId"], early_id.as_str());
    assert_eq!(all.last().unwrap()["type"], "credits.granted");
    for w in all.windows(2) {
        assert!(ts(&w[0]["at"]) >= ts(&w[1]["at"]), "newest first");
    }
    // Pages of 50 with startingAfter walk the same entries.
    let mut paged = Vec::new();
    let mut url = format!("/v1/users/{u}/ledger?limit=50");
    loop {
        let page = ok(&app.get(&url, SK_TEST).await, 200).clone();
        let data = page["data"].as_array().unwrap().clone();
        paged.extend(data.iter().cloned());
        if page["hasMore"] != true {
            break;
        }
        let last = data.last().unwrap()["id"].as_str().unwrap().to_string();
        url = format!("/v1/users/{u}/ledger?limit=50&startingAfter={last}");
    }
    assert_eq!(paged, all);
    app.assert_ledger_agrees(SK_TEST, u).await;

    // Every reservation answers as it ended, the oldest ones from disk.
    for c in consumed {
        let id = c["reservationId"].as_str().unwrap();
        let r = app.reservation(SK_TEST, id).await;
        assert_eq!(r, *c, "a consumed reservation reads as it was answered");
    }
    let r = app.reservation(SK_TEST, early_id).await;
    assert_eq!(r["status"], "committed");
    assert_eq!(r["committedAmount"], 1);
    // Repeats follow API.md for ended reservations too.
    let first = consumed[0]["reservationId"].as_str().unwrap();
    let again = app.commit(SK_TEST, first, None).await;
    assert_eq!(again, consumed[0], "the same commit again answers the same");
    let other = app
        .post(
            &format!("/v1/reservations/{first}/commit"),
            SK_TEST,
            json!({"amount": 2}),
        )
        .await;
    assert_error(
        &other,
        409,
        "conflict",
        Some("reservation_not_pending"),
        Param::Any,
    );
    let released = app
        .post(
            &format!("/v1/reservations/{first}/release"),
            SK_TEST,
            json!({}),
        )
        .await;
    assert_eq!(released.0, 409, "{:?}", released.1);
    assert_eq!(app.balance(SK_TEST, bal).await["remaining"], 0);
    assert_eq!(app.balance(SK_TEST, more).await["remaining"], 11);
    all
}
