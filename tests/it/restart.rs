//! "A 2xx answer to any write means the change is on disk. A crash after it loses nothing."

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Everything readable about the users, balances and reservations named.
async fn snapshot(
    app: &TestApp,
    users: &[(&str, &str)],
    bals: &[(&str, String)],
    res: &[(&str, String)],
) -> Value {
    let mut out = serde_json::Map::new();
    for p in [
        "/v1/plans",
        "/v1/credit-packs?includeArchived=true",
        "/v1/credit-packs",
    ] {
        out.insert(p.to_string(), app.get(p, SK_TEST).await.1);
    }
    for (key, u) in users {
        for p in [
            format!("/v1/users/{u}/usage"),
            format!("/v1/users/{u}/ledger?limit=500"),
            format!("/v1/users/{u}/subscription"),
        ] {
            let r = app.get(&p, key).await;
            out.insert(format!("{key} {p}"), json!([r.0.as_u16(), r.1]));
        }
    }
    for (key, b) in bals {
        out.insert(
            format!("{key} {b}"),
            app.get(&format!("/v1/credits/balances/{b}"), key).await.1,
        );
    }
    for (key, r) in res {
        out.insert(
            format!("{key} {r}"),
            app.get(&format!("/v1/reservations/{r}"), key).await.1,
        );
    }
    Value::Object(out)
}

fn diff(a: &Value, b: &Value) -> String {
    let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}:\n  before {v}\n  after  {}",
                b.get(k).unwrap_or(&Value::Null)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn everything_acknowledged_before_a_sigkill_is_still_there_after_restart() {
    let mut app = spawn_app().await;
    let u = "u_durable";
    // Catalog writes.
    let plan = json!({"id": "team", "name": "Team",
                      "price": {"amount": 1900, "currency": "usd", "interval": "month"},
                      "limits": [{"id": "images", "name": "Images", "match": ["image.*"],
                                  "limit": 5, "unit": "count", "period": "month"}]});
    ok(&app.post("/v1/plans", SK_TEST, plan).await, 201);
    create_pack(&app, "cpk_durable", "*", 8, Some(30)).await;
    ok(
        &app.put(
            "/v1/credit-packs/cpk_durable",
            SK_TEST,
            pack_body("cpk_durable", "*", 9, Some(60)),
        )
        .await,
        200,
    );
    create_pack(&app, "cpk_old", "*", 1, None).await;
    ok(
        &app.post("/v1/credit-packs/cpk_old/archive", SK_TEST, json!({}))
            .await,
        200,
    );

    // Test-mode user: subscription, grants, every kind of reservation, a revoke.
    app.subscribe(SK_TEST, u, "pro").await;
    let g = app.grant(SK_TEST, u, "cpk_creator_bundle", "cs_d1").await;
    let dalle = g["balances"][0]["id"].as_str().unwrap().to_string();
    let veo = g["balances"][1]["id"].as_str().unwrap().to_string();
    let any = app.grant_one(SK_TEST, u, "cpk_durable", "cs_d2").await;
    let old = app.grant_one(SK_TEST, u, "cpk_old", "cs_d3").await;
    let consumed = app.consume_ok(SK_TEST, u, IMAGEN, 40).await;
    let body = json!({"userId": u, "model": DALLE, "amount": 3, "ttlSeconds": 86400,
                      "metadata": {"job": 1}});
    let pending = app.reserve_with(SK_TEST, body).await;
    let partial = app.reserve_ok(SK_TEST, u, DALLE, 4).await;
    app.commit(SK_TEST, partial["reservationId"].as_str().unwrap(), Some(1))
        .await;
    let released = app.reserve_ok(SK_TEST, u, VEO, 2).await;
    app.release(SK_TEST, released["reservationId"].as_str().unwrap())
        .await;
    app.revoke(SK_TEST, &old, "test").await;
    // Live-mode user with the same id.
    let live = app.grant_one(SK_LIVE, u, "cpk_gemini_topup", "cs_d1").await;
    app.consume_ok(SK_LIVE, u, GEMINI, 3).await;
    let clock = app.advance_clock(3600).await;

    let users = [(SK_TEST, u), (SK_LIVE, u)];
    let bals = [
        (SK_TEST, dalle.clone()),
        (SK_TEST, veo),
        (SK_TEST, any),
        (SK_TEST, old),
        (SK_LIVE, live),
    ];
    let res: Vec<(&str, String)> = [&consumed, &pending, &partial, &released]
        .iter()
        .map(|r| (SK_TEST, r["reservationId"].as_str().unwrap().to_string()))
        .collect();
    let before = snapshot(&app, &users, &bals, &res).await;

    app.restart().await;
    let after = snapshot(&app, &users, &bals, &res).await;
    assert!(
        before == after,
        "changed across a SIGKILL restart:\n{}",
        diff(&before, &after)
    );
    assert!(
        app.clock_now().await >= clock,
        "the test clock does not go back"
    );

    // And it keeps working: the pending reservation commits, a repeated grant grants nothing.
    let id = pending["reservationId"].as_str().unwrap();
    assert_eq!(app.commit(SK_TEST, id, None).await["committedAmount"], 3);
    let body = json!({"userId": u, "packId": "cpk_creator_bundle", "externalRef": "cs_d1",
                      "source": "purchase"});
    let again = ok(&app.post("/v1/credits/grants", SK_TEST, body).await, 200).clone();
    assert_eq!(again["created"], false);
    assert_eq!(again["balances"][0]["id"], dalle.as_str());

    // A second crash after more writes.
    let more = app.consume_ok(SK_TEST, u, DALLE, 1).await;
    let before = snapshot(&app, &users, &bals, &res).await;
    app.restart().await;
    let after = snapshot(&app, &users, &bals, &res).await;
    assert!(
        before == after,
        "changed across a second restart:\n{}",
        diff(&before, &after)
    );
    let more = app
        .reservation(SK_TEST, more["reservationId"].as_str().unwrap())
        .await;
    assert_eq!(more["status"], "committed");
    app.assert_ledger_agrees(SK_TEST, u).await;
    app.assert_ledger_agrees(SK_LIVE, u).await;
}

#[tokio::test]
async fn the_test_clock_position_survives_a_restart() {
    let mut app = spawn_app().await;
    let u = "u_clock_restart";
    let at = app
        .clock_now()
        .await
        .checked_add(jiff::SignedDuration::from_hours(2))
        .unwrap();
    let body = json!({"userId": u, "packId": "cpk_gemini_topup", "externalRef": "cs_cr",
                      "source": "grant", "expiresAt": at.to_string()});
    let g = ok(&app.post("/v1/credits/grants", SK_TEST, body).await, 201).clone();
    let bal = g["balances"][0]["id"].as_str().unwrap().to_string();
    let now = app.advance_clock(3 * 3600).await;
    assert_eq!(app.balance(SK_TEST, &bal).await["status"], "expired");
    app.restart().await;
    assert!(app.clock_now().await >= now);
    assert_eq!(
        grs(&app.balance(SK_TEST, &bal).await),
        (50, 0, 0, s("expired"))
    );
    assert_eq!(
        app.ledger_of_type(SK_TEST, u, "credits.expired")
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acknowledged_while_the_server_is_killed_mid_burst_survive() {
    let app = Arc::new(spawn_app().await);
    let u = "u_burst";
    let bal = app
        .grant_one(SK_LIVE, u, "cpk_gemini_topup", "cs_burst")
        .await;
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (app, acked) = (app.clone(), acked.clone());
        tasks.spawn(async move {
            for _ in 0..20 {
                let body = json!({"userId": u, "model": GEMINI, "amount": 1});
                match app.try_post("/v1/consume", SK_LIVE, body).await {
                    Ok((st, b, _)) if st.as_u16() == 200 && b["allowed"] == true => {
                        acked
                            .lock()
                            .unwrap()
                            .push(b["reservationId"].as_str().unwrap().to_string());
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    }
    // Kill (SIGKILL) the server once some writes have been acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 12 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let pid = app.pid().to_string();
    let st = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    while tasks.join_next().await.is_some() {}
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(!acked.is_empty());

    let mut app = Arc::try_unwrap(app).ok().expect("tasks are done");
    app.restart().await;
    let committed: BTreeSet<String> = app
        .ledger_of_type(SK_LIVE, u, "usage.committed")
        .await
        .iter()
        .map(|e| e["reservationId"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = acked.difference(&committed).collect();
    assert!(
        lost.is_empty(),
        "acknowledged consumes lost in the crash: {lost:?}"
    );
    for id in &acked {
        assert_eq!(app.reservation(SK_LIVE, id).await["status"], "committed");
    }
    let b = app.balance(SK_LIVE, &bal).await;
    assert_eq!(
        b["remaining"].as_u64().unwrap(),
        50 - committed.len() as u64,
        "{b}"
    );
    app.assert_ledger_agrees(SK_LIVE, u).await;
}
