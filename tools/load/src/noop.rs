//! Target `noop`: an axum endpoint that does nothing (the HTTP ceiling). It answers each route
//! the workloads use with a constant body, and runs as a child process of the load binary
//! (`load noop-serve`) so that its CPU and memory are measured apart from the load generator.

use crate::procs::{ChildGuard, free_port};
use crate::vevee::wait_ready;
use anyhow::Result;
use hyper::StatusCode;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// Serves the do-nothing endpoint on `listen` until killed.
pub fn serve(listen: SocketAddr) -> Result<()> {
    use axum::Router;
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::{get, post};
    const JSON: [(axum::http::HeaderName, &str); 1] = [(CONTENT_TYPE, "application/json")];
    let app = Router::new()
        .route(
            "/v1/reservations",
            post(|| async { (JSON, r#"{"reservationId":"res_noop","allowed":true}"#) }),
        )
        .route(
            "/v1/reservations/{id}/commit",
            post(|| async { (JSON, "{}") }),
        )
        .route(
            "/v1/consume",
            post(|| async {
                (
                    JSON,
                    r#"{"reservationId":"res_noop","allowed":true,"status":"committed"}"#,
                )
            }),
        )
        .route("/v1/users/{user}/usage", get(|| async { (JSON, "{}") }))
        .route(
            "/v1/credits/grants",
            post(|| async { (StatusCode::CREATED, JSON, "{}") }),
        )
        .route(
            "/v1/credit-packs",
            post(|| async { (StatusCode::CREATED, JSON, "{}") }),
        )
        .route("/readyz", get(|| async { "ok" }));
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// Starts `load noop-serve` on a free port and waits until it answers.
pub async fn spawn() -> Result<(ChildGuard, SocketAddr)> {
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let child = Command::new(std::env::current_exe()?)
        .arg("noop-serve")
        .arg("--listen")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .spawn()?;
    let mut guard = ChildGuard(child);
    wait_ready(addr, &mut guard).await?;
    Ok((guard, addr))
}
