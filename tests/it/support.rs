//! Starts the real `vevee` binary and talks to it over HTTP only.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const APP_ID: &str = "pixelforge";
pub const SK_TEST: &str = "sk_test_it_3f9a0c1e5b7d";
pub const SK_LIVE: &str = "sk_live_it_7b2d4e6a8c0f";
pub const PK_TEST: &str = "pk_test_it_1c5e8f20a4b6";
pub const PK_LIVE: &str = "pk_live_it_9d3b7a41e2c8";
pub const WHSEC_TEST: &str = "whsec_it_test_5a1f3e";
pub const WHSEC_LIVE: &str = "whsec_it_live_8c2b4d";

pub const GEMINI: &str = "image.gemini-3-1-flash-image-preview";
pub const DALLE: &str = "image.dall-e-3";
pub const VEO: &str = "video.veo-3";
/// Any other image model: covered by Pro's `image.*`, by no seeded pack.
pub const IMAGEN: &str = "image.imagen-4";

pub const DAY: i64 = 86_400;
/// 2^53 − 1, the largest quantity API.md allows.
pub const MAX_QTY: u64 = 9_007_199_254_740_991;

/// `(status, JSON body, headers)`. A body that is not JSON is kept as a string.
pub type Resp = (StatusCode, Value, HeaderMap);

#[derive(Clone, Copy)]
pub struct Options {
    /// Write `secret_key_live` / `publishable_key_live` into the config.
    pub live_keys: bool,
    /// Replaces the webhook secrets and their tolerance: `(test, live, tolerance seconds)`.
    pub webhook: Option<(&'static str, &'static str, i64)>,
    /// `[server] idle_seconds`: how soon an idle user goes to sleep.
    pub idle_seconds: Option<u64>,
    /// `[server] open_reservations_per_user_max` and `balances_per_user_max`.
    pub user_bounds: Option<(usize, usize)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            live_keys: true,
            webhook: None,
            idle_seconds: None,
            user_bounds: None,
        }
    }
}

/// Config lines a test may change, also between restarts (they apply at the next start).
#[derive(Clone, Debug)]
pub struct Tweaks {
    /// Extra lines for the `[server]` table.
    pub server_lines: String,
    /// Extra lines for the app's `[[apps]]` table.
    pub app_lines: String,
    pub dashboard_password: String,
    /// `None` leaves the key out of the config, so the server's default applies.
    pub seed_demo_catalog: Option<bool>,
    /// Environment variables for the server process (e.g. a testing hook).
    pub env: Vec<(&'static str, String)>,
}

impl Default for Tweaks {
    fn default() -> Self {
        Tweaks {
            server_lines: String::new(),
            app_lines: String::new(),
            dashboard_password: "it-dashboard-password".into(),
            seed_demo_catalog: Some(true),
            env: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub tweaks: Tweaks,
    dir: TempDir,
    child: Option<Child>,
    client: reqwest::Client,
    options: Options,
    /// Extra lines for the `[storage]` table (e.g. snapshot cadence).
    extra_storage: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    spawn_app_with_storage(options, "").await
}

/// Like `spawn_app_with`, with `extra_storage` appended to the config's `[storage]` table, e.g.
/// `"snapshot_every_records = 200\nsnapshot_every_seconds = 1\n"`.
pub async fn spawn_app_with_storage(options: Options, extra_storage: &str) -> TestApp {
    spawn_app_full(options, extra_storage, Tweaks::default()).await
}

/// A server whose config carries `tweaks`.
pub async fn spawn_app_tweaked(tweaks: Tweaks) -> TestApp {
    spawn_app_full(Options::default(), "", tweaks).await
}

async fn spawn_app_full(options: Options, extra_storage: &str, tweaks: Tweaks) -> TestApp {
    let dir = tempfile::Builder::new()
        .prefix("vevee-it-")
        .tempdir()
        .expect("temp dir");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .expect("http client");
    let mut app = TestApp {
        base: String::new(),
        tweaks,
        dir,
        child: None,
        client,
        options,
        extra_storage: extra_storage.to_string(),
    };
    app.start().await;
    app
}

impl TestApp {
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The temporary directory that holds the config, `data/` and `snapshots/`.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops the server with SIGTERM (graceful: flush and final snapshot) and waits for it.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        child.wait().expect("wait for the server")
    }

    /// SIGTERM, then waits at most `limit` for the server to exit; `None` (and a SIGKILL) if it
    /// did not.
    pub fn stop_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("the server is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Waits at most `limit` for the server to exit on its own; `None` (and a SIGKILL) if it
    /// did not.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("the server is running");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        None
    }

    /// The `host:port` the server listens on.
    pub fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn write_config(&self) -> PathBuf {
        let d = self.dir.path();
        let mut cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\naddress_file = \"{}\"\n{}\n[storage]\ndata_dir = \"{}\"\n\
             snapshot_dir = \"{}\"\n{}\n[[apps]]\nid = \"{APP_ID}\"\n\
             secret_key_test = \"{SK_TEST}\"\npublishable_key_test = \"{PK_TEST}\"\n\
             stripe_webhook_secret_test = \"{WHSEC_TEST}\"\n\
             stripe_webhook_secret_live = \"{WHSEC_LIVE}\"\n\
             dashboard_password = \"{}\"\n{}{}\n",
            self.address_path().display(),
            self.tweaks.server_lines,
            d.join("data").display(),
            d.join("snapshots").display(),
            self.extra_storage,
            self.tweaks.dashboard_password,
            self.tweaks
                .seed_demo_catalog
                .map_or(String::new(), |seed| format!(
                    "seed_demo_catalog = {seed}\n"
                )),
            self.tweaks.app_lines,
        );
        if let Some((open, balances)) = self.options.user_bounds {
            cfg = cfg.replace(
                "[storage]",
                &format!(
                    "open_reservations_per_user_max = {open}\nbalances_per_user_max = \
                     {balances}\n\n[storage]"
                ),
            );
        }
        if let Some(idle) = self.options.idle_seconds {
            cfg = cfg.replace("[storage]", &format!("idle_seconds = {idle}\n\n[storage]"));
        }
        if let Some((test, live, tolerance)) = self.options.webhook {
            cfg = cfg
                .replace(WHSEC_TEST, test)
                .replace(WHSEC_LIVE, live)
                .replace(
                    "[storage]",
                    &format!("webhook_tolerance_seconds = {tolerance}\n\n[storage]"),
                );
        }
        if self.options.live_keys {
            cfg.push_str(&format!(
                "secret_key_live = \"{SK_LIVE}\"\npublishable_key_live = \"{PK_LIVE}\"\n"
            ));
        }
        let path = d.join("config.toml");
        std::fs::write(&path, cfg).expect("write config");
        path
    }

    fn address_path(&self) -> PathBuf {
        self.dir.path().join("address")
    }

    /// Starts the server on a port the system picks (`listen = "127.0.0.1:0"`) and reads the
    /// address back from `address_file`: no window in which another process can take the port.
    async fn start(&mut self) {
        let config = self.write_config();
        let _ = std::fs::remove_file(self.address_path());
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        writeln!(log, "----- start -----").ok();
        let log_err: File = log.try_clone().expect("clone log");
        let child = Command::new(env!("CARGO_BIN_EXE_vevee"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(self.dir.path())
            .envs(self.tweaks.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .expect("spawn vevee");
        self.child = Some(child);
        if let Err(e) = self.wait_ready().await {
            self.kill();
            panic!(
                "vevee did not become ready: {e}\n--- server log ---\n{}",
                self.log_tail(60)
            );
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("server exited early with {status}"));
            }
            // The file is written whole (renamed into place) once the server listens.
            let Ok(address) = std::fs::read_to_string(self.address_path()) else {
                if Instant::now() > deadline {
                    return Err("no address file within 20 s".into());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            };
            self.base = format!("http://{}", address.trim());
            let url = format!("{}/readyz", self.base);
            let r = self
                .client
                .get(&url)
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if let Ok(r) = r {
                if r.status() == StatusCode::OK {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err("GET /readyz was not 200 within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL the server (no graceful shutdown) and start it again on the same directories.
    pub async fn restart(&mut self) {
        self.kill();
        self.start().await;
    }

    /// SIGKILL only, for tests that want to act while the server is down.
    pub fn crash(&mut self) {
        self.kill();
    }

    pub async fn start_again(&mut self) {
        self.start().await;
    }

    // ---------------------------------------------------------------- raw HTTP

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self
            .client
            .request(method.clone(), format!("{}{}", self.base, path));
        if let Some(k) = key {
            rb = rb.header("authorization", format!("Bearer {k}"));
        }
        if let Some(b) = body {
            rb = rb.header("content-type", "application/json").body(b);
        }
        for (n, v) in headers {
            rb = rb.header(*n, *v);
        }
        // A 429 (the sandbox rate limit) means "not processed, try later": a client retries.
        let mut attempts = 0;
        loop {
            let resp = rb
                .try_clone()
                .expect("clonable request")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_tail(30)));
            let status = resp.status();
            let headers = resp.headers().clone();
            if status == StatusCode::TOO_MANY_REQUESTS && attempts < 50 {
                attempts += 1;
                let wait = headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.2)
                    .clamp(0.05, 2.0);
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                continue;
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            return (status, body, headers);
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.send(Method::GET, path, Some(key), None, &[]).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Resp {
        self.send(
            Method::POST,
            path,
            Some(key),
            Some(body.to_string().into_bytes()),
            &[],
        )
        .await
    }

    pub async fn post_idem(&self, path: &str, key: &str, body: Value, idem: &str) -> Resp {
        let b = Some(body.to_string().into_bytes());
        self.send(
            Method::POST,
            path,
            Some(key),
            b,
            &[("idempotency-key", idem)],
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, key: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.send(Method::POST, path, Some(key), Some(body.into()), &[])
            .await
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> Resp {
        self.send(
            Method::PUT,
            path,
            Some(key),
            Some(body.to_string().into_bytes()),
            &[],
        )
        .await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Resp {
        self.send(Method::DELETE, path, Some(key), None, &[]).await
    }

    /// A POST that reports transport errors instead of panicking (for crash tests).
    pub async fn try_post(&self, path: &str, key: &str, body: Value) -> Result<Resp, String> {
        let resp = self
            .client
            .post(format!("{}{}", self.base, path))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, body, headers))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    // ---------------------------------------------------------------- test clock

    pub async fn advance_clock(&self, seconds: i64) -> Timestamp {
        let r = self
            .post(
                "/v1/test/clock/advance",
                SK_TEST,
                json!({ "seconds": seconds }),
            )
            .await;
        ts(&ok(&r, 200)["now"])
    }

    pub async fn clock_now(&self) -> Timestamp {
        ts(&ok(&self.get("/v1/test/clock", SK_TEST).await, 200)["now"])
    }

    /// Moves the test clock so that it passes `target` by at most about a second (the extra
    /// second absorbs timestamps that are printed truncated to whole seconds).
    pub async fn advance_clock_to(&self, target: Timestamp) -> Timestamp {
        let now = self.clock_now().await;
        let d = target.duration_since(now);
        assert!(d.is_positive(), "clock {now} is already past {target}");
        let mut secs = d.as_secs();
        if d.subsec_nanos() > 0 {
            secs += 1;
        }
        let reached = self.advance_clock(secs + 1).await;
        assert!(
            reached >= target,
            "advanced to {reached}, short of {target}"
        );
        reached
    }

    // ---------------------------------------------------------------- domain helpers

    pub async fn subscribe(&self, key: &str, user: &str, plan: &str) -> Value {
        let r = self
            .put(
                &format!("/v1/users/{user}/subscription"),
                key,
                json!({ "planId": plan }),
            )
            .await;
        ok(&r, 200).clone()
    }

    pub async fn cancel(&self, key: &str, user: &str) -> Value {
        let r = self
            .delete(&format!("/v1/users/{user}/subscription"), key)
            .await;
        ok(&r, 200).clone()
    }

    /// Grants `pack` with `source: "purchase"` and expects a new grant (201).
    pub async fn grant(&self, key: &str, user: &str, pack: &str, external_ref: &str) -> Value {
        let body = json!({"userId": user, "packId": pack, "externalRef": external_ref,
                          "source": "purchase"});
        let r = self.post("/v1/credits/grants", key, body).await;
        ok(&r, 201).clone()
    }

    /// The id of the only balance of a one-item pack grant.
    pub async fn grant_one(&self, key: &str, user: &str, pack: &str, external_ref: &str) -> String {
        let g = self.grant(key, user, pack, external_ref).await;
        let bals = g["balances"].as_array().expect("balances");
        assert_eq!(bals.len(), 1, "one balance expected: {g}");
        bals[0]["id"].as_str().unwrap().to_string()
    }

    pub async fn balance(&self, key: &str, id: &str) -> Value {
        ok(
            &self.get(&format!("/v1/credits/balances/{id}"), key).await,
            200,
        )
        .clone()
    }

    pub async fn revoke(&self, key: &str, id: &str, reason: &str) -> Value {
        let r = self
            .post(
                &format!("/v1/credits/balances/{id}/revoke"),
                key,
                json!({ "reason": reason }),
            )
            .await;
        ok(&r, 200).clone()
    }

    /// POST /v1/reservations; the answer is 200 whether allowed or denied.
    pub async fn reserve(&self, key: &str, user: &str, model: &str, amount: u64) -> Value {
        self.reserve_with(
            key,
            json!({"userId": user, "model": model, "amount": amount}),
        )
        .await
    }

    pub async fn reserve_with(&self, key: &str, body: Value) -> Value {
        ok(&self.post("/v1/reservations", key, body).await, 200).clone()
    }

    /// A reservation that must be allowed; returns it.
    pub async fn reserve_ok(&self, key: &str, user: &str, model: &str, amount: u64) -> Value {
        let r = self.reserve(key, user, model, amount).await;
        assert_eq!(
            r["allowed"], true,
            "reserve {amount} of {model} for {user}: {r}"
        );
        r
    }

    pub async fn commit(&self, key: &str, id: &str, amount: Option<u64>) -> Value {
        let body = match amount {
            Some(a) => json!({ "amount": a }),
            None => json!({}),
        };
        ok(
            &self
                .post(&format!("/v1/reservations/{id}/commit"), key, body)
                .await,
            200,
        )
        .clone()
    }

    pub async fn release(&self, key: &str, id: &str) -> Value {
        ok(
            &self
                .post(&format!("/v1/reservations/{id}/release"), key, json!({}))
                .await,
            200,
        )
        .clone()
    }

    pub async fn reservation(&self, key: &str, id: &str) -> Value {
        ok(&self.get(&format!("/v1/reservations/{id}"), key).await, 200).clone()
    }

    pub async fn consume(&self, key: &str, user: &str, model: &str, amount: u64) -> Value {
        let body = json!({"userId": user, "model": model, "amount": amount});
        ok(&self.post("/v1/consume", key, body).await, 200).clone()
    }

    pub async fn consume_ok(&self, key: &str, user: &str, model: &str, amount: u64) -> Value {
        let r = self.consume(key, user, model, amount).await;
        assert_eq!(
            r["allowed"], true,
            "consume {amount} of {model} for {user}: {r}"
        );
        assert_eq!(r["status"], "committed", "{r}");
        r
    }

    pub async fn check(&self, key: &str, user: &str, model: &str, amount: u64) -> Value {
        let body = json!({"userId": user, "model": model, "amount": amount});
        ok(&self.post("/v1/check", key, body).await, 200).clone()
    }

    pub async fn usage(&self, key: &str, user: &str) -> Value {
        ok(
            &self.get(&format!("/v1/users/{user}/usage"), key).await,
            200,
        )
        .clone()
    }

    /// The whole ledger of a user, newest first, read page by page.
    pub async fn ledger_all(&self, key: &str, user: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                None => format!("/v1/users/{user}/ledger?limit=500"),
                Some(a) => format!("/v1/users/{user}/ledger?limit=500&startingAfter={a}"),
            };
            let page = ok(&self.get(&path, key).await, 200).clone();
            let data = page["data"].as_array().expect("ledger data").clone();
            out.extend(data.iter().cloned());
            if page["hasMore"] != true || data.is_empty() {
                return out;
            }
            after = Some(data.last().unwrap()["id"].as_str().unwrap().to_string());
        }
    }

    /// Ledger entries of one type, newest first.
    pub async fn ledger_of_type(&self, key: &str, user: &str, ty: &str) -> Vec<Value> {
        self.ledger_all(key, user)
            .await
            .into_iter()
            .filter(|e| e["type"] == ty)
            .collect()
    }

    /// API.md: "For every balance, granted − committed − revoked − expired − reserved = remaining,
    /// from the ledger alone (reserved: reservations with `usage.reserved` and no later end)."
    /// Checks it for every balance the ledger ever granted, against GET /v1/credits/balances/{id}.
    pub async fn assert_ledger_agrees(&self, key: &str, user: &str) {
        let entries = self.ledger_all(key, user).await;
        let per_balance = ledger_sums(&entries);
        for (bal, s) in &per_balance {
            let b = self.balance(key, bal).await;
            let lhs = s.granted - s.committed - s.revoked - s.expired - s.reserved;
            assert_eq!(
                lhs,
                b["remaining"].as_i64().unwrap(),
                "ledger identity broken for {bal}: {s:?} but balance is {b}\nledger: {}",
                Value::Array(entries.clone())
            );
            assert_eq!(
                s.reserved,
                b["reserved"].as_i64().unwrap(),
                "reserved from the ledger ({s:?}) differs from balance {b}"
            );
            assert_eq!(
                s.granted,
                b["granted"].as_i64().unwrap(),
                "granted differs: {b}"
            );
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- vevee log tail ({}) ---\n{}",
                self.base,
                self.log_tail(40)
            );
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Sums {
    pub granted: i64,
    pub committed: i64,
    pub revoked: i64,
    pub expired: i64,
    pub reserved: i64,
}

fn credit_allocs(v: &Value) -> Vec<(String, i64)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["source"] == "credits")
                .map(|x| {
                    (
                        x["balanceId"].as_str().unwrap_or("").to_string(),
                        x["amount"].as_i64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Per-balance sums computed from ledger entries only (entries given newest first).
pub fn ledger_sums(entries: &[Value]) -> HashMap<String, Sums> {
    let mut sums: HashMap<String, Sums> = HashMap::new();
    // reservation id -> (last usage.* type, allocations of its usage.reserved entry)
    let mut res: HashMap<String, (String, Value)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for e in entries.iter().rev() {
        let ty = e["type"].as_str().unwrap_or("");
        let amount = e["amount"].as_i64().unwrap_or(0);
        let bal = e["balanceId"].as_str().map(str::to_string);
        match ty {
            "credits.granted" => sums.entry(bal.unwrap()).or_default().granted += amount,
            "credits.revoked" => sums.entry(bal.unwrap()).or_default().revoked += amount,
            "credits.expired" => sums.entry(bal.unwrap()).or_default().expired += amount,
            "usage.committed" => {
                for (b, a) in credit_allocs(&e["allocations"]) {
                    sums.entry(b).or_default().committed += a;
                }
            }
            _ => {}
        }
        if ty.starts_with("usage.") {
            let id = e["reservationId"].as_str().unwrap_or("").to_string();
            let slot = res.entry(id.clone()).or_insert_with(|| {
                order.push(id.clone());
                (String::new(), Value::Null)
            });
            slot.0 = ty.to_string();
            if ty == "usage.reserved" {
                slot.1 = e["allocations"].clone();
            }
        }
    }
    for id in order {
        let (last, allocs) = &res[&id];
        if last == "usage.reserved" {
            for (b, a) in credit_allocs(allocs) {
                sums.entry(b).or_default().reserved += a;
            }
        }
    }
    sums
}

// -------------------------------------------------------------------- assertions

/// Asserts the status and returns the body.
#[track_caller]
pub fn ok(r: &Resp, status: u16) -> &Value {
    assert_eq!(
        r.0.as_u16(),
        status,
        "expected {status}, got {} with body {}",
        r.0,
        r.1
    );
    &r.1
}

/// How an error's `param` is checked.
#[derive(Clone, Copy, Debug)]
pub enum Param {
    /// Exactly this field name.
    Is(&'static str),
    /// A param that names this field (for nested fields, whose spelling API.md leaves open,
    /// e.g. `limits[0].limit` or `limits.0.limit`).
    Mentions(&'static str),
    /// Not checked.
    Any,
}

/// `None` if the answer is the expected error in the API.md shape, else what is wrong.
pub fn error_mismatch(
    r: &Resp,
    status: u16,
    ty: &str,
    code: Option<&str>,
    param: Param,
) -> Option<String> {
    let (s, b, _) = r;
    let mut bad = Vec::new();
    if s.as_u16() != status {
        bad.push(format!("status {s} (want {status})"));
    }
    let e = &b["error"];
    if !e.is_object() {
        bad.push("no `error` object".to_string());
    } else {
        if e["type"] != ty {
            bad.push(format!("type {} (want {ty})", e["type"]));
        }
        if let Some(c) = code {
            if e["code"] != c {
                bad.push(format!("code {} (want {c})", e["code"]));
            }
        } else if !e["code"].is_string() {
            bad.push("code is not a string".to_string());
        }
        if e["message"].as_str().is_none_or(|m| m.is_empty()) {
            bad.push("message is not a non-empty string".to_string());
        }
        match param {
            Param::Is(p) => {
                if e["param"] != p {
                    bad.push(format!("param {} (want {p})", e["param"]));
                }
            }
            Param::Mentions(p) => {
                if !e["param"].as_str().is_some_and(|x| x.contains(p)) {
                    bad.push(format!("param {} (want one naming {p})", e["param"]));
                }
            }
            Param::Any => {}
        }
    }
    if bad.is_empty() {
        None
    } else {
        Some(format!("{}; body {b}", bad.join(", ")))
    }
}

#[track_caller]
pub fn assert_error(r: &Resp, status: u16, ty: &str, code: Option<&str>, param: Param) {
    if let Some(m) = error_mismatch(r, status, ty, code, param) {
        panic!("unexpected error answer: {m}");
    }
}

pub fn ts(v: &Value) -> Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a timestamp string: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("not RFC 3339: {v}: {e}"))
}

/// Seconds from `a` to `b` (may be fractional if the server keeps sub-second time).
pub fn secs_between(a: &Value, b: &Value) -> f64 {
    ts(b).duration_since(ts(a)).as_secs_f64()
}

/// A normalised allocation: (source, limitId or balanceId, amount).
pub type Alloc = (String, String, u64);

pub fn plan_part(limit_id: &str, amount: u64) -> Alloc {
    ("plan".into(), limit_id.into(), amount)
}

pub fn credit_part(balance_id: &str, amount: u64) -> Alloc {
    ("credits".into(), balance_id.into(), amount)
}

#[track_caller]
pub fn allocs(v: &Value) -> Vec<Alloc> {
    v.as_array()
        .unwrap_or_else(|| panic!("allocations is not an array: {v}"))
        .iter()
        .map(|a| {
            let source = a["source"].as_str().unwrap_or("?").to_string();
            let id = if source == "plan" {
                &a["limitId"]
            } else {
                &a["balanceId"]
            };
            (
                source,
                id.as_str().unwrap_or("?").to_string(),
                a["amount"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The counter of `limit_id` in a usage answer.
#[track_caller]
pub fn counter<'a>(usage: &'a Value, limit_id: &str) -> &'a Value {
    usage["counters"]
        .as_array()
        .unwrap_or_else(|| panic!("no counters: {usage}"))
        .iter()
        .find(|c| c["limitId"] == limit_id)
        .unwrap_or_else(|| panic!("no counter {limit_id}: {usage}"))
}

/// The balance `id` among a usage answer's `credits`.
#[track_caller]
pub fn credit_in<'a>(usage: &'a Value, id: &str) -> Option<&'a Value> {
    usage["credits"]
        .as_array()
        .unwrap_or_else(|| panic!("no credits: {usage}"))
        .iter()
        .find(|c| c["id"] == id)
}

/// `(used, reserved, remaining)` of a counter.
#[track_caller]
pub fn urr(c: &Value) -> (u64, u64, u64) {
    (
        c["used"].as_u64().unwrap_or(u64::MAX),
        c["reserved"].as_u64().unwrap_or(u64::MAX),
        c["remaining"].as_u64().unwrap_or(u64::MAX),
    )
}

/// `(granted, remaining, reserved, status)` of a balance.
#[track_caller]
pub fn grs(b: &Value) -> (u64, u64, u64, String) {
    (
        b["granted"].as_u64().unwrap_or(u64::MAX),
        b["remaining"].as_u64().unwrap_or(u64::MAX),
        b["reserved"].as_u64().unwrap_or(u64::MAX),
        b["status"].as_str().unwrap_or("?").to_string(),
    )
}

pub fn s(x: &str) -> String {
    x.to_string()
}

/// A one-item credit pack body.
pub fn pack_body(id: &str, m: &str, amount: u64, expires_in_days: Option<u64>) -> Value {
    json!({
        "id": id, "name": format!("Pack {id}"),
        "price": {"amount": 100, "currency": "usd"},
        "expiresInDays": expires_in_days,
        "stripePriceId": null,
        "items": [{"id": "item", "match": m, "amount": amount, "unit": "count"}]
    })
}

pub async fn create_pack(app: &TestApp, id: &str, m: &str, amount: u64, days: Option<u64>) {
    let r = app
        .post("/v1/credit-packs", SK_TEST, pack_body(id, m, amount, days))
        .await;
    ok(&r, 201);
}
