//! Target `vevee`: the real server (`target/release/vevee serve` with a temp config), HTTP/1.1
//! keep-alive over loopback. `noop` speaks the same HTTP and uses the client half of this file.

use crate::procs::{ChildGuard, free_port};
use crate::targets::ResId;
use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

pub struct HttpConn {
    sender: http1::SendRequest<Full<Bytes>>,
    auth: String,
}
pub async fn http_connect(addr: SocketAddr, auth: &str) -> Result<HttpConn> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(HttpConn {
        sender,
        auth: format!("Bearer {auth}"),
    })
}

impl HttpConn {
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: String,
    ) -> Result<(StatusCode, Bytes)> {
        self.call_bytes(method, path, Bytes::from(body)).await
    }

    /// A request with a body already encoded (the batch bench cycles a few).
    pub async fn call_bytes(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        body: String,
        ok: &[u16],
    ) -> Result<Bytes> {
        let (status, bytes) = self.call(method, path, body).await?;
        if !ok.contains(&status.as_u16()) {
            bail!(
                "{path}: {status} {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
        Ok(bytes)
    }
}

fn json_str<'a>(body: &'a [u8], field: &str) -> Option<&'a str> {
    let s = std::str::from_utf8(body).ok()?;
    let key = format!("\"{field}\":\"");
    let start = s.find(&key)? + key.len();
    let end = s[start..].find('"')?;
    Some(&s[start..start + end])
}
/// `VEVEE_LOAD_SERVER_TOML`: extra `[server]` lines for an experiment (e.g. `actor_threads = 1`).
fn vevee_config(dir: &Path, port: u16) -> String {
    let extra = std::env::var("VEVEE_LOAD_SERVER_TOML").unwrap_or_default();
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nsandbox_requests_per_second = 100000000\n{extra}\n\
         [storage]\ndata_dir = \"{}\"\nsnapshot_dir = \"{}\"\n\
         [[apps]]\nid = \"bench\"\nsecret_key_live = \"sk_live_bench\"\nseed_demo_catalog = false\n",
        dir.join("data").display(),
        dir.join("snapshots").display()
    )
}

pub async fn wait_ready(addr: SocketAddr, child: &mut ChildGuard) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        if let Some(status) = child.0.try_wait()? {
            bail!("server exited during startup: {status}");
        }
        if let Ok(mut h) = http_connect(addr, "").await
            && let Ok(Ok((status, _))) = tokio::time::timeout(
                Duration::from_secs(2),
                h.call(Method::GET, "/readyz", String::new()),
            )
            .await
            && status.is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("server at {addr} not ready after 60 s")
}

/// Starts vevee with a fresh data directory; the guard kills it.
pub async fn start_vevee(vevee_bin: &Path, dir: &Path) -> Result<(ChildGuard, SocketAddr)> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let config = dir.join("config.toml");
    std::fs::write(&config, vevee_config(dir, port))?;
    let log = std::fs::File::create(dir.join("vevee.log"))?;
    let child = Command::new(vevee_bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", vevee_bin.display()))?;
    let mut guard = ChildGuard(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    wait_ready(addr, &mut guard).await?;
    Ok((guard, addr))
}

pub async fn vevee_catalog(addr: SocketAddr) -> Result<()> {
    let mut h = http_connect(addr, "sk_live_bench").await?;
    h.expect(
        Method::POST,
        "/v1/credit-packs",
        r#"{"id":"bench","name":"Bench","items":[{"id":"i","match":"image.*","amount":1000000000,"unit":"count"}]}"#.into(),
        &[200, 201, 409],
    )
    .await?;
    // VEVEE_BENCH_WEBHOOK_URL subscribes an endpoint to every event (BENCHMARKS.md, "Webhooks
    // out"): the same run with the deliverer busy.
    if let Ok(url) = std::env::var("VEVEE_BENCH_WEBHOOK_URL") {
        let body = format!(r#"{{"url":"{url}","events":["*"]}}"#);
        h.expect(Method::POST, "/v1/webhook-endpoints", body, &[200])
            .await?;
    }
    Ok(())
}

/// The workload's steps over HTTP (vevee and the do-nothing endpoint answer the same routes).
impl HttpConn {
    pub async fn reserve(&mut self, user: &str) -> Result<ResId> {
        let body = format!(r#"{{"userId":"{user}","model":"image.x","amount":1}}"#);
        let bytes = self
            .expect(Method::POST, "/v1/reservations", body, &[200, 201])
            .await?;
        match json_str(&bytes, "reservationId") {
            Some(id) => Ok(ResId::Http(id.to_string())),
            None => bail!("denied: {}", String::from_utf8_lossy(&bytes)),
        }
    }

    pub async fn commit(&mut self, id: &str) -> Result<()> {
        let path = format!("/v1/reservations/{id}/commit");
        self.expect(Method::POST, &path, "{}".into(), &[200])
            .await?;
        Ok(())
    }

    /// A reserve and commit in one step (`POST /v1/consume`).
    pub async fn consume(&mut self, user: &str) -> Result<()> {
        let body = format!(r#"{{"userId":"{user}","model":"image.x","amount":1}}"#);
        let bytes = self
            .expect(Method::POST, "/v1/consume", body, &[200, 201])
            .await?;
        if json_str(&bytes, "status") != Some("committed") {
            bail!("denied: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(())
    }

    pub async fn usage(&mut self, user: &str) -> Result<()> {
        let path = format!("/v1/users/{user}/usage");
        self.expect(Method::GET, &path, String::new(), &[200])
            .await?;
        Ok(())
    }

    /// Grants the `bench` pack (one balance of 10^9 `image.*`); `external_ref` makes it
    /// idempotent.
    pub async fn grant(&mut self, user: &str, external_ref: &str) -> Result<()> {
        let body = format!(
            r#"{{"userId":"{user}","packId":"bench","externalRef":"{external_ref}","source":"grant"}}"#
        );
        self.expect(Method::POST, "/v1/credits/grants", body, &[200, 201])
            .await?;
        Ok(())
    }
}
