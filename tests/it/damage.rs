//! Damaged files on disk: a torn last journal batch is dropped, a corrupt snapshot is refused in
//! favour of the previous one, a corrupt batch in the middle stops startup with a clear message.

use crate::support::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Flips one byte in the middle of a file.
fn corrupt(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).expect("read file to corrupt");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, bytes).expect("write corrupted file");
}

fn snapshots(app: &TestApp) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(app.dir().join("snapshots"))
        .expect("snapshot dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    files
}

/// The journal's batches as (key, value), oldest first, with the server stopped.
fn with_journal<T>(app: &TestApp, f: impl FnOnce(&sled::Tree) -> T) -> T {
    let db = vevee::persistence::journal::open_db(&app.dir().join("data"))
        .expect("open the journal offline");
    let tree = db.open_tree("journal").expect("journal tree");
    let out = f(&tree);
    db.flush().expect("flush");
    out
}

async fn balance_remaining(app: &TestApp, id: &str) -> Option<u64> {
    let (status, body, _) = app
        .get(&format!("/v1/credits/balances/{id}"), SK_TEST)
        .await;
    (status.as_u16() == 200).then(|| body["remaining"].as_u64().unwrap())
}

#[tokio::test]
async fn a_corrupt_newest_snapshot_is_refused_and_the_previous_one_with_the_journal_is_used() {
    let mut app = spawn_app().await;
    let first = app
        .grant_one(SK_TEST, "u_snap", "cpk_gemini_topup", "cs_snap_1")
        .await;
    assert_eq!(app.stop().code(), Some(0), "graceful stop");
    app.start_again().await;
    let second = app
        .grant_one(SK_TEST, "u_snap", "cpk_gemini_topup", "cs_snap_2")
        .await;
    assert_eq!(app.stop().code(), Some(0), "graceful stop");
    let files = snapshots(&app);
    assert!(
        files.len() >= 2,
        "two snapshots after two graceful stops: {files:?}"
    );
    corrupt(files.last().unwrap());

    app.start_again().await;
    assert_eq!(balance_remaining(&app, &first).await, Some(50));
    assert_eq!(balance_remaining(&app, &second).await, Some(50));
    let log = app.log_tail(200);
    assert!(log.contains("refused"), "the refusal is logged:\n{log}");
}

#[tokio::test]
async fn a_torn_last_journal_batch_is_dropped_and_everything_before_it_kept() {
    let mut app = spawn_app().await;
    let kept = app
        .grant_one(SK_TEST, "u_torn", "cpk_gemini_topup", "cs_torn_1")
        .await;
    app.grant_one(SK_TEST, "u_torn", "cpk_gemini_topup", "cs_torn_2")
        .await;
    app.crash();
    with_journal(&app, |tree| {
        let (key, value) = tree.last().unwrap().expect("a last batch");
        tree.insert(key, &value[..value.len() / 2]).unwrap();
    });

    app.start_again().await;
    assert_eq!(balance_remaining(&app, &kept).await, Some(50));
    let log = app.log_tail(200);
    assert!(
        log.to_lowercase().contains("torn"),
        "the dropped batch is logged:\n{log}"
    );
}

#[tokio::test]
async fn a_corrupt_batch_in_the_middle_of_the_journal_stops_startup_with_a_message_naming_it() {
    let mut app = spawn_app().await;
    for i in 0..4 {
        app.grant_one(SK_TEST, "u_mid", "cpk_gemini_topup", &format!("cs_mid_{i}"))
            .await;
    }
    app.crash();
    let damaged = with_journal(&app, |tree| {
        let batches: Vec<_> = tree.iter().map(|kv| kv.unwrap()).collect();
        assert!(batches.len() >= 3, "one batch per acknowledged write");
        let (key, value) = &batches[1];
        let mut bytes = value.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        tree.insert(key, bytes).unwrap();
        u64::from_be_bytes(key.as_ref().try_into().unwrap())
    });

    let config = app.dir().join("config.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vevee"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vevee");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "vevee served a corrupt journal"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!status.success(), "startup must fail");
    assert!(
        text.contains(&damaged.to_string()),
        "the message names batch {damaged}:\n{text}"
    );

    let verify = Command::new(env!("CARGO_BIN_EXE_vevee"))
        .args(["verify", "--config"])
        .arg(&config)
        .output()
        .expect("run vevee verify");
    assert!(
        !verify.status.success(),
        "verify refuses the corrupt journal too"
    );
}

#[tokio::test]
async fn verify_reports_a_healthy_store_and_snapshot_drops_the_journal_it_covers() {
    let mut app = spawn_app().await;
    let grant = app
        .grant(SK_TEST, "u_verify", "cpk_creator_bundle", "cs_verify")
        .await;
    let id = grant["balances"][0]["id"].as_str().unwrap().to_owned();
    app.crash();
    let config = app.dir().join("config.toml");
    let run = |command: &str| {
        Command::new(env!("CARGO_BIN_EXE_vevee"))
            .args([command, "--config"])
            .arg(&config)
            .output()
            .expect("run vevee")
    };
    let verify = run("verify");
    let report = String::from_utf8_lossy(&verify.stdout).to_string();
    assert!(verify.status.success(), "verify passes: {report}");
    assert!(report.contains("users:                1"), "{report}");
    assert!(report.contains("balances:             2"), "{report}");
    assert!(report.contains("all hold"), "{report}");

    let snapshot = run("snapshot");
    assert!(
        snapshot.status.success(),
        "{}",
        String::from_utf8_lossy(&snapshot.stderr)
    );
    assert!(!snapshots(&app).is_empty(), "a snapshot file exists");
    app.start_again().await;
    assert_eq!(balance_remaining(&app, &id).await, Some(10));
}
