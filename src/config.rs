//! The server's configuration: a TOML file, typed, with secrets inline or from the environment.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
}

/// The time limits of a connection, from `[server]`: what `http::serve` enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_deadline: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Logs as JSON lines instead of text.
    #[serde(default)]
    pub json_logs: bool,
    /// Actor threads; 0 means one per core.
    #[serde(default)]
    pub actor_threads: usize,
    /// Requests per second per app allowed with test keys; a runaway loop in development gets 429.
    #[serde(default = "defaults::sandbox_requests_per_second")]
    pub sandbox_requests_per_second: u32,
    /// How far a Stripe signature's timestamp may be from the wall clock.
    #[serde(default = "defaults::webhook_tolerance_seconds")]
    pub webhook_tolerance_seconds: i64,
    /// A user with no request for this long goes to sleep in a packed form (its deadlines still
    /// fire on time); the next request wakes it.
    #[serde(default = "defaults::idle_seconds")]
    pub idle_seconds: u64,
    /// Awake users beyond which those idle for a second are put to sleep at once, instead of
    /// after `idle_seconds`: a burst of distinct users cannot hold memory for the whole wait.
    #[serde(default = "defaults::awake_users_max")]
    pub awake_users_max: usize,
    /// Journal records queued and not yet on disk beyond which writes are refused with 503.
    #[serde(default = "defaults::journal_backlog_records_max")]
    pub journal_backlog_records_max: u64,
    /// Pending reservations one user may hold (409 `too_many_open_reservations` beyond).
    #[serde(default = "defaults::open_reservations_per_user_max")]
    pub open_reservations_per_user_max: usize,
    /// Balances one user may have (409 `too_many_balances` beyond).
    #[serde(default = "defaults::balances_per_user_max")]
    pub balances_per_user_max: usize,
    /// A request's headers must arrive within this long of its first byte, in all.
    #[serde(default = "defaults::header_read_timeout_seconds")]
    pub header_read_timeout_seconds: u64,
    /// A request's body must arrive within this long of its headers, in all.
    #[serde(default = "defaults::body_read_timeout_seconds")]
    pub body_read_timeout_seconds: u64,
    /// A kept-alive connection with no request for this long is closed.
    #[serde(default = "defaults::idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
    /// After SIGTERM, connections still open this long are dropped (the journal is flushed and
    /// the final snapshot taken all the same).
    #[serde(default = "defaults::shutdown_deadline_seconds")]
    pub shutdown_deadline_seconds: u64,
    /// If set, the address the server listens on is written to this file once it listens: with
    /// `listen = "127.0.0.1:0"` the system picks a free port, and a script reads it from here.
    #[serde(default)]
    pub address_file: Option<PathBuf>,
    /// The dashboard's sign-in page offers the app ids in a list; off by default, so that a
    /// visitor is not told which apps exist.
    #[serde(default)]
    pub dashboard_sign_in_lists_apps: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub snapshot_dir: PathBuf,
    /// A snapshot is taken after this many journal records…
    #[serde(default = "defaults::snapshot_every_records")]
    pub snapshot_every_records: u64,
    /// …or this many seconds, whichever comes first (if anything was written).
    #[serde(default = "defaults::snapshot_every_seconds")]
    pub snapshot_every_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub id: String,
    pub secret_key_live: Option<String>,
    pub secret_key_test: Option<String>,
    pub publishable_key_live: Option<String>,
    pub publishable_key_test: Option<String>,
    pub stripe_webhook_secret_live: Option<String>,
    pub stripe_webhook_secret_test: Option<String>,
    pub dashboard_password: Option<String>,
    /// Loads the walkthrough's catalog (plans free and pro, two packs) on first start, while the
    /// app's catalog is empty. Off unless asked for: an operator's own app must not start with
    /// PixelForge's plans. The shipped `config.toml` turns it on for the demo app.
    #[serde(default)]
    pub seed_demo_catalog: bool,
    /// Days before a balance's `expiresAt` when `credits.expiring` fires.
    #[serde(default = "defaults::expiring_notice_days")]
    pub expiring_notice_days: u32,
    /// Waits between delivery attempts of an outgoing webhook, in seconds, then it is given up.
    #[serde(default = "defaults::webhook_retry_seconds")]
    pub webhook_retry_seconds: Vec<u64>,
    /// A webhook endpoint whose every attempt has failed for this long (wall clock, since its
    /// last success) is disabled. API.md: 24 h.
    #[serde(default = "defaults::webhook_disable_after_seconds")]
    pub webhook_disable_after_seconds: u64,
}

/// API.md's default for `expiring_notice_days`.
pub const EXPIRING_NOTICE_DAYS_DEFAULT: u32 = 3;

mod defaults {
    pub fn expiring_notice_days() -> u32 {
        super::EXPIRING_NOTICE_DAYS_DEFAULT
    }
    pub fn webhook_retry_seconds() -> Vec<u64> {
        vec![5, 300, 1800, 7200, 18000, 36000, 36000]
    }
    pub fn webhook_disable_after_seconds() -> u64 {
        24 * 3600
    }
    pub fn sandbox_requests_per_second() -> u32 {
        10_000
    }
    pub fn webhook_tolerance_seconds() -> i64 {
        300
    }
    pub fn idle_seconds() -> u64 {
        300
    }
    pub fn awake_users_max() -> usize {
        250_000
    }
    pub fn journal_backlog_records_max() -> u64 {
        262_144
    }
    pub fn open_reservations_per_user_max() -> usize {
        10_000
    }
    pub fn balances_per_user_max() -> usize {
        10_000
    }
    pub fn header_read_timeout_seconds() -> u64 {
        10
    }
    pub fn body_read_timeout_seconds() -> u64 {
        30
    }
    pub fn idle_timeout_seconds() -> u64 {
        60
    }
    pub fn shutdown_deadline_seconds() -> u64 {
        10
    }
    pub fn snapshot_every_records() -> u64 {
        1_000_000
    }
    pub fn snapshot_every_seconds() -> u64 {
        600
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

/// A secret written as `env:NAME` is read from the environment variable NAME.
fn resolve(field: &str, app: &str, value: &mut Option<String>) -> Result<(), ConfigError> {
    let Some(text) = value.as_deref() else {
        return Ok(());
    };
    if let Some(name) = text.strip_prefix("env:") {
        let secret = std::env::var(name).map_err(|_| {
            ConfigError::Invalid(format!(
                "app '{app}': {field} names environment variable {name}, which is not set"
            ))
        })?;
        *value = Some(secret);
    }
    if value.as_deref().is_some_and(str::is_empty) {
        return Err(ConfigError::Invalid(format!(
            "app '{app}': {field} is empty"
        )));
    }
    Ok(())
}

fn expect_prefix(
    field: &str,
    app: &str,
    value: &Option<String>,
    prefix: &str,
) -> Result<(), ConfigError> {
    match value {
        Some(v) if !v.starts_with(prefix) => Err(ConfigError::Invalid(format!(
            "app '{app}': {field} must start with {prefix}"
        ))),
        _ => Ok(()),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let mut seen = std::collections::HashSet::new();
        for app in &mut config.apps {
            let id = app.id.clone();
            if crate::engine::ids::parse_slug(&id).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "app id '{id}' must be 1 to 64 of A-Z a-z 0-9 _ . -"
                )));
            }
            if !seen.insert(id.clone()) {
                return Err(ConfigError::Invalid(format!("app id '{id}' appears twice")));
            }
            resolve("secret_key_live", &id, &mut app.secret_key_live)?;
            resolve("secret_key_test", &id, &mut app.secret_key_test)?;
            resolve("publishable_key_live", &id, &mut app.publishable_key_live)?;
            resolve("publishable_key_test", &id, &mut app.publishable_key_test)?;
            resolve(
                "stripe_webhook_secret_live",
                &id,
                &mut app.stripe_webhook_secret_live,
            )?;
            resolve(
                "stripe_webhook_secret_test",
                &id,
                &mut app.stripe_webhook_secret_test,
            )?;
            resolve("dashboard_password", &id, &mut app.dashboard_password)?;
            expect_prefix("secret_key_live", &id, &app.secret_key_live, "sk_live_")?;
            expect_prefix("secret_key_test", &id, &app.secret_key_test, "sk_test_")?;
            expect_prefix(
                "publishable_key_live",
                &id,
                &app.publishable_key_live,
                "pk_live_",
            )?;
            expect_prefix(
                "publishable_key_test",
                &id,
                &app.publishable_key_test,
                "pk_test_",
            )?;
            if app.webhook_disable_after_seconds == 0 {
                return Err(ConfigError::Invalid(format!(
                    "app '{id}': webhook_disable_after_seconds must be positive"
                )));
            }
        }
        let server = &config.server;
        if [
            server.header_read_timeout_seconds,
            server.body_read_timeout_seconds,
            server.idle_timeout_seconds,
        ]
        .contains(&0)
        {
            return Err(ConfigError::Invalid(
                "[server] read and idle timeouts must be positive".into(),
            ));
        }
        if server.awake_users_max == 0 {
            return Err(ConfigError::Invalid(
                "[server] awake_users_max must be positive".into(),
            ));
        }
        if config.storage.snapshot_every_records == 0 || config.storage.snapshot_every_seconds == 0
        {
            return Err(ConfigError::Invalid(
                "snapshot intervals must be positive".into(),
            ));
        }
        Ok(config)
    }

    pub fn limits(&self) -> ConnectionLimits {
        let s = &self.server;
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(s.header_read_timeout_seconds),
            body_read_timeout: Duration::from_secs(s.body_read_timeout_seconds),
            idle_timeout: Duration::from_secs(s.idle_timeout_seconds),
            shutdown_deadline: Duration::from_secs(s.shutdown_deadline_seconds),
        }
    }

    pub fn actor_threads(&self) -> usize {
        match self.server.actor_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "data"
snapshot_dir = "snapshots"
[[apps]]
id = "a"
secret_key_test = "sk_test_1"
"#;

    #[test]
    fn a_minimal_config_parses_with_defaults() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.server.webhook_tolerance_seconds, 300);
        let limits = config.limits();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.shutdown_deadline, Duration::from_secs(10));
        assert_eq!(config.server.address_file, None);
        assert_eq!(config.apps[0].secret_key_live, None);
        assert_eq!(config.apps[0].webhook_disable_after_seconds, 86_400);
        assert!(
            !config.apps[0].seed_demo_catalog,
            "an app gets the demo catalog only when its config asks for it"
        );
    }

    #[test]
    fn the_shipped_config_seeds_the_demo_app() {
        let config = Config::parse(include_str!("../config.toml")).unwrap();
        assert!(config.apps.iter().all(|a| a.seed_demo_catalog));
    }

    #[test]
    fn unknown_fields_and_wrong_key_prefixes_are_refused_with_the_field_named() {
        let unknown = MINIMAL.replace("[storage]", "[storage]\ncolour = 1");
        assert!(
            Config::parse(&unknown)
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
        let wrong = MINIMAL.replace("sk_test_1", "pk_test_1");
        assert!(
            Config::parse(&wrong)
                .unwrap_err()
                .to_string()
                .contains("secret_key_test")
        );
    }

    #[test]
    fn webhook_endpoints_are_disabled_after_a_positive_time() {
        let zero = format!("{MINIMAL}webhook_disable_after_seconds = 0\n");
        let error = Config::parse(&zero).unwrap_err().to_string();
        assert!(error.contains("webhook_disable_after_seconds"), "{error}");
        let short = format!("{MINIMAL}webhook_disable_after_seconds = 60\n");
        assert_eq!(
            Config::parse(&short).unwrap().apps[0].webhook_disable_after_seconds,
            60
        );
    }

    #[test]
    fn a_secret_may_come_from_the_environment() {
        let missing = MINIMAL.replace("\"sk_test_1\"", "\"env:VEVEE_TEST_SURELY_UNSET\"");
        let error = Config::parse(&missing).unwrap_err().to_string();
        assert!(error.contains("VEVEE_TEST_SURELY_UNSET"), "{error}");
    }
}
