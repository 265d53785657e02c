//! Clients that send slowly or not at all: read timeouts and the shutdown deadline.

use crate::support::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far longer than any limit configured below: a connection still open after it was not cut.
const PATIENCE: Duration = Duration::from_secs(15);

async fn tight_app(lines: &str) -> TestApp {
    spawn_app_tweaked(Tweaks {
        server_lines: lines.to_owned(),
        ..Tweaks::default()
    })
    .await
}

/// Sends `chunks` one at a time, `gap` apart, until the server closes the connection. Returns how
/// many were sent before it did, or `None` if all were sent and it is still open.
async fn drip(stream: &mut TcpStream, chunks: &[Vec<u8>], gap: Duration) -> Option<usize> {
    for (i, chunk) in chunks.iter().enumerate() {
        if stream.write_all(chunk).await.is_err() {
            return Some(i);
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(gap, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(i + 1),
            Ok(Ok(n)) => panic!(
                "the server answered a request it never fully got: {}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    None
}

fn header_lines(n: usize) -> Vec<Vec<u8>> {
    let mut chunks = vec![b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec()];
    chunks.extend((0..n).map(|i| format!("X-Drip-{i}: 1\r\n").into_bytes()));
    chunks
}

#[tokio::test]
async fn a_client_that_drips_its_headers_is_disconnected() {
    let app = tight_app("header_read_timeout_seconds = 1\nidle_timeout_seconds = 30\n").await;
    let mut stream = TcpStream::connect(app.address()).await.unwrap();
    let gap = Duration::from_millis(250);
    let chunks = header_lines((PATIENCE.as_millis() / gap.as_millis()) as usize);
    let sent = drip(&mut stream, &chunks, gap).await;
    assert!(
        sent.is_some(),
        "headers dripped for {PATIENCE:?} kept the connection open"
    );
    // The server is fine for everyone else.
    ok(&app.get("/healthz", SK_TEST).await, 200);
}

#[tokio::test]
async fn a_client_that_drips_its_body_is_disconnected() {
    let app = tight_app("body_read_timeout_seconds = 1\n").await;
    let mut stream = TcpStream::connect(app.address()).await.unwrap();
    let head = format!(
        "POST /v1/consume HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SK_TEST}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    );
    let gap = Duration::from_millis(250);
    let mut chunks = vec![head.into_bytes()];
    chunks.extend((0..(PATIENCE.as_millis() / gap.as_millis())).map(|_| b" ".to_vec()));
    assert!(
        drip(&mut stream, &chunks, gap).await.is_some(),
        "a body dripped for {PATIENCE:?} kept the connection open"
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_and_a_busy_one_is_not() {
    let app = tight_app("idle_timeout_seconds = 1\nheader_read_timeout_seconds = 30\n").await;
    let mut stream = TcpStream::connect(app.address()).await.unwrap();
    // Requests a little under a second apart keep it open past the idle limit...
    for _ in 0..4 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // ...and silence closes it.
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection stayed open: {closed:?}"
    );
}

#[tokio::test]
async fn sigterm_with_a_stalled_client_exits_by_the_deadline_after_flushing() {
    let mut app = tight_app(
        "shutdown_deadline_seconds = 1\nheader_read_timeout_seconds = 600\n\
         idle_timeout_seconds = 600\n",
    )
    .await;
    app.subscribe(SK_TEST, "before_stop", "pro").await;
    let mut stalled = TcpStream::connect(app.address()).await.unwrap();
    stalled
        .write_all(b"POST /v1/consume HTTP/1.1\r\nHost: x\r\nX-Half")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = app.stop_within(PATIENCE);
    assert!(
        status.is_some_and(|s| s.success()),
        "the server did not exit cleanly within {PATIENCE:?} of SIGTERM: {status:?}\n{}",
        app.log_tail(20)
    );
    let log = app.log_tail(40);
    assert!(log.contains("shutdown deadline passed"), "{log}");
    assert!(log.contains("final snapshot written"), "{log}");
    app.start_again().await;
    let usage = app.usage(SK_TEST, "before_stop").await;
    assert_eq!(usage["subscription"]["planId"], json!("pro"), "{usage}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_a_request_id_like_every_answer() {
    let app = spawn_app().await;
    let body = vec![b' '; 3 * 1024 * 1024];
    let r = app.post_raw("/v1/consume", SK_TEST, body).await;
    assert_error(
        &r,
        413,
        "payload_too_large",
        Some("body_too_large"),
        Param::Any,
    );
    assert!(r.2.get("request-id").is_some(), "{:?}", r.2);
}
