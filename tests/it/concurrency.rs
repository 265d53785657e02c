//! Many concurrent requests on one user never hold more than there is.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support::*;

/// Fires `n` concurrent POSTs and returns the answers.
async fn burst(
    app: &Arc<TestApp>,
    key: &'static str,
    path: &str,
    body: Value,
    n: usize,
) -> Vec<Resp> {
    let mut set = JoinSet::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    for _ in 0..n {
        let (app, body, path, barrier) =
            (app.clone(), body.clone(), path.to_string(), barrier.clone());
        set.spawn(async move {
            barrier.wait().await;
            app.post(&path, key, body).await
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_reserves_on_fifty_credits_allow_exactly_fifty() {
    let app = Arc::new(spawn_app().await);
    let u = "u_race";
    // Live mode: no sandbox rate limit in the way.
    let bal = app
        .grant_one(SK_LIVE, u, "cpk_gemini_topup", "cs_race")
        .await;
    let body = json!({"userId": u, "model": GEMINI, "amount": 1});
    let answers = burst(&app, SK_LIVE, "/v1/reservations", body, 300).await;

    let mut allowed = Vec::new();
    for (st, b, _) in &answers {
        assert_eq!(st.as_u16(), 200, "{b}");
        if b["allowed"] == true {
            assert_eq!(allocs(&b["allocations"]), vec![credit_part(&bal, 1)]);
            allowed.push(b["reservationId"].as_str().unwrap().to_string());
        } else {
            assert_eq!(
                b["reasons"],
                json!(["no_subscription", "credits_exhausted"]),
                "{b}"
            );
        }
    }
    assert_eq!(allowed.len(), 50, "exactly the 50 credits are held");
    assert_eq!(
        allowed.iter().collect::<HashSet<_>>().len(),
        50,
        "distinct reservations"
    );
    let b = app.balance(SK_LIVE, &bal).await;
    assert_eq!(grs(&b), (50, 0, 50, s("active")));
    let usage = app.usage(SK_LIVE, u).await;
    assert_eq!(
        grs(credit_in(&usage, &bal).expect("balance in usage")),
        (50, 0, 50, s("active"))
    );
    let reserved = app.ledger_of_type(SK_LIVE, u, "usage.reserved").await;
    assert_eq!(reserved.len(), 50);
    app.assert_ledger_agrees(SK_LIVE, u).await;

    // Commit them all at once: everything is spent, nothing more.
    let mut set = JoinSet::new();
    for id in allowed {
        let app = app.clone();
        set.spawn(async move { app.commit(SK_LIVE, &id, None).await });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap()["status"], "committed");
    }
    assert_eq!(
        grs(&app.balance(SK_LIVE, &bal).await),
        (50, 0, 0, s("active"))
    );
    assert_eq!(
        app.ledger_of_type(SK_LIVE, u, "usage.committed")
            .await
            .len(),
        50
    );
    app.assert_ledger_agrees(SK_LIVE, u).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reserves_on_a_plan_and_credits_hold_exactly_quota_plus_credits() {
    let app = Arc::new(spawn_app().await);
    let u = "u_race_pro";
    app.subscribe(SK_LIVE, u, "pro").await;
    let bal = app
        .grant_one(SK_LIVE, u, "cpk_gemini_topup", "cs_race_pro")
        .await;
    let body = json!({"userId": u, "model": GEMINI, "amount": 1});
    let answers = burst(&app, SK_LIVE, "/v1/reservations", body, 200).await;
    let allowed = answers
        .iter()
        .filter(|r| r.0.as_u16() == 200 && r.1["allowed"] == true)
        .count();
    assert_eq!(allowed, 90, "40 from Pro and 50 credits");
    for (_, b, _) in answers.iter().filter(|r| r.1["allowed"] == false) {
        assert_eq!(b["reasons"], json!(["plan_and_credits_exhausted"]), "{b}");
    }
    let usage = app.usage(SK_LIVE, u).await;
    assert_eq!(urr(counter(&usage, "images")), (0, 40, 0));
    assert_eq!(
        grs(&app.balance(SK_LIVE, &bal).await),
        (50, 0, 50, s("active"))
    );
    app.assert_ledger_agrees(SK_LIVE, u).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumes_on_free_never_exceed_the_two_lifetime_images() {
    let app = Arc::new(spawn_app().await);
    let u = "u_race_free";
    app.subscribe(SK_LIVE, u, "free").await;
    let body = json!({"userId": u, "model": GEMINI, "amount": 1});
    let answers = burst(&app, SK_LIVE, "/v1/consume", body, 100).await;
    let allowed: Vec<&Value> = answers
        .iter()
        .map(|r| &r.1)
        .filter(|b| b["allowed"] == true)
        .collect();
    assert_eq!(allowed.len(), 2);
    for b in allowed {
        assert_eq!(b["status"], "committed");
    }
    let usage = app.usage(SK_LIVE, u).await;
    assert_eq!(urr(counter(&usage, "images")), (2, 0, 0));
    assert_eq!(
        app.ledger_of_type(SK_LIVE, u, "usage.committed")
            .await
            .len(),
        2
    );
}
