//! Who is calling, apart from HTTP: the configured API keys, identified into (app, mode, kind),
//! and the request budget of test keys. Refusals are typed values; `http::error` turns them into
//! answers, so this module knows no status code.

use crate::config::Config;
use crate::engine::{Mode, Name};
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Secret,
    Publishable,
}

/// Who is calling: an app, in one mode, with a secret or a publishable key.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Shared: every request copies it into the user's key.
    pub app: Name,
    pub mode: Mode,
    pub kind: KeyKind,
}

/// Why a key identifies nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A live key while the config holds none for it: the operator has a step to take.
    #[error(
        "this live key is not configured: set secret_key_live (and publishable_key_live) \
         for the app in the config file, inline or as env:VARIABLE, and restart"
    )]
    LiveNotConfigured,
    #[error("invalid API key")]
    Unknown,
}

/// The configured API keys, kept as SHA-256 digests and compared in constant time.
pub struct Keys {
    entries: Vec<([u8; 32], Caller)>,
}

impl Keys {
    pub fn from_config(config: &Config) -> Keys {
        let mut entries = Vec::new();
        for app in &config.apps {
            let keys = [
                (&app.secret_key_live, Mode::Live, KeyKind::Secret),
                (&app.secret_key_test, Mode::Test, KeyKind::Secret),
                (&app.publishable_key_live, Mode::Live, KeyKind::Publishable),
                (&app.publishable_key_test, Mode::Test, KeyKind::Publishable),
            ];
            for (key, mode, kind) in keys {
                if let Some(key) = key {
                    let caller = Caller {
                        app: Name::from(&app.id),
                        mode,
                        kind,
                    };
                    entries.push((Sha256::digest(key.as_bytes()).into(), caller));
                }
            }
        }
        Keys { entries }
    }

    pub fn identify(&self, key: &str) -> Result<Caller, KeyError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every entry is compared, so the time taken does not tell which one matched.
        let mut found = None;
        for (candidate, caller) in &self.entries {
            if bool::from(candidate.ct_eq(&digest)) {
                found = Some(caller.clone());
            }
        }
        found.ok_or_else(|| {
            if key.starts_with("sk_live_") || key.starts_with("pk_live_") {
                KeyError::LiveNotConfigured
            } else {
                KeyError::Unknown
            }
        })
    }
}

/// A test key's app used up this second's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("test mode allows {per_second} requests per second per app")]
pub struct SandboxLimited {
    pub per_second: i64,
    /// When the budget is full again: buckets refill every second.
    pub retry_after_s: u64,
}

/// A per-app request budget for test keys: a token bucket refilled every second.
pub struct SandboxLimit {
    per_second: i64,
    buckets: DashMap<String, (AtomicI64, Mutex<Instant>)>,
}

impl SandboxLimit {
    pub fn new(per_second: u32) -> SandboxLimit {
        SandboxLimit {
            per_second: i64::from(per_second),
            buckets: DashMap::new(),
        }
    }

    pub fn check(&self, app: &str) -> Result<(), SandboxLimited> {
        let bucket = self
            .buckets
            .entry(app.to_owned())
            .or_insert_with(|| (AtomicI64::new(self.per_second), Mutex::new(Instant::now())));
        let (tokens, refilled) = &*bucket;
        {
            let mut last = refilled.lock().expect("sandbox limit poisoned");
            if last.elapsed() >= Duration::from_secs(1) {
                *last = Instant::now();
                tokens.store(self.per_second, Ordering::Relaxed);
            }
        }
        if tokens.fetch_sub(1, Ordering::Relaxed) > 0 {
            return Ok(());
        }
        Err(SandboxLimited {
            per_second: self.per_second,
            retry_after_s: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "data"
snapshot_dir = "snapshots"
[[apps]]
id = "a"
secret_key_test = "sk_test_1"
publishable_key_test = "pk_test_1"
"#;

    #[test]
    fn keys_identify_their_app_mode_and_kind_and_a_live_key_without_config_says_so() {
        let keys = Keys::from_config(&Config::parse(CONFIG).unwrap());
        let caller = keys.identify("pk_test_1").unwrap();
        assert_eq!(
            (caller.app.as_str(), caller.mode, caller.kind),
            ("a", Mode::Test, KeyKind::Publishable)
        );
        assert_eq!(keys.identify("sk_test_2").unwrap_err(), KeyError::Unknown);
        assert_eq!(
            keys.identify("sk_live_1").unwrap_err(),
            KeyError::LiveNotConfigured
        );
    }

    #[test]
    fn a_test_app_past_its_budget_is_told_the_budget() {
        let limit = SandboxLimit::new(2);
        assert!(limit.check("a").is_ok() && limit.check("a").is_ok());
        let refused = limit.check("a").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "test mode allows 2 requests per second per app"
        );
        assert!(limit.check("b").is_ok(), "each app has its own budget");
    }
}
