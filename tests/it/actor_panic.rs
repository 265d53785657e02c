//! A user's actor that panics (issue 13, item 10), through the testing hook
//! `VEVEE_TEST_PANIC_USER`: its reserves panic in the actor after changing the state in memory
//! and before queueing their records. The server must answer at once, stop for recovery, and
//! come back with every acknowledged write.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::support::*;

const VICTIM: &str = "u_panics";

#[tokio::test]
async fn a_panicking_actor_answers_503_and_the_server_stops_and_recovers_every_acknowledged_write()
{
    let mut app = spawn_app_tweaked(Tweaks {
        env: vec![("VEVEE_TEST_PANIC_USER", VICTIM.to_string())],
        ..Tweaks::default()
    })
    .await;
    // Acknowledged writes, of the victim and of another user.
    let victim_balance = app
        .grant_one(SK_TEST, VICTIM, "cpk_gemini_topup", "ref_victim")
        .await;
    let other_balance = app
        .grant_one(SK_TEST, "u_bystander", "cpk_gemini_topup", "ref_other")
        .await;
    app.consume_ok(SK_TEST, "u_bystander", GEMINI, 3).await;

    // The victim's reserve panics in its actor: a clear answer, not a hang and not a 500.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    let r = client
        .post(format!("{}/v1/reservations", app.base))
        .bearer_auth(SK_TEST)
        .json(&json!({"userId": VICTIM, "model": GEMINI, "amount": 1}))
        .send()
        .await
        .expect("an answer within the client's timeout");
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").cloned();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["type"], "unavailable", "{body}");
    assert!(retry_after.is_some(), "503 carries Retry-After: {body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Until the process is gone, the victim's requests are refused the same way, or find the
    // server no longer listening: never a hang.
    let again = client
        .get(format!("{}/v1/users/{VICTIM}/usage", app.base))
        .bearer_auth(SK_TEST)
        .send()
        .await;
    match again {
        Ok(r) => assert_eq!(r.status().as_u16(), 503),
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }

    // The process stops for recovery, with a non-zero status, and says why and for whom.
    let exited = app.wait_exit(Duration::from_secs(20)).await;
    let exited = exited.unwrap_or_else(|| panic!("still running\n{}", app.log_tail(40)));
    assert!(!exited.success(), "stopped with {exited}");
    let log = app.log_tail(200);
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains(VICTIM) && l.contains("panicked")),
        "{log}"
    );

    // A supervisor starts it again (without the hook): every acknowledged write is there, the
    // panicking reserve is not, and the victim is served again.
    app.tweaks.env.clear();
    app.start_again().await;
    let b = app.balance(SK_TEST, &victim_balance).await;
    assert_eq!(grs(&b), (50, 50, 0, s("active")), "{b}");
    let b = app.balance(SK_TEST, &other_balance).await;
    assert_eq!(grs(&b), (50, 47, 0, s("active")), "{b}");
    let types: Vec<String> = app
        .ledger_all(SK_TEST, VICTIM)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        ["credits.granted"],
        "the reserve that panicked left nothing"
    );
    app.reserve_ok(SK_TEST, VICTIM, GEMINI, 1).await;
    app.assert_ledger_agrees(SK_TEST, VICTIM).await;
    app.assert_ledger_agrees(SK_TEST, "u_bystander").await;
    let (status, _, _) = app.send(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(status.as_u16(), 200);
}
