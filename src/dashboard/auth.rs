//! Sign-in, session cookies and CSRF tokens.
//!
//! A session is a cookie the server signed with HMAC-SHA256 under a key made at startup: the app
//! it is for, a random nonce and when it expires. Nothing is stored on the server, so a restart
//! signs everyone out. Every form that changes something carries a CSRF token derived from the
//! session's nonce; the sign-in form, which has no session yet, gets its token from a short-lived
//! signed cookie of its own.

use crate::config::Config;
use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Duration;
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "vevee_dashboard";
pub const SIGNIN_COOKIE: &str = "vevee_dashboard_signin";
/// How long a sign-in lasts.
pub const SESSION_TTL_S: i64 = 8 * 3600;
/// How long a sign-in form stays usable.
pub const SIGNIN_TTL_S: i64 = 3600;
/// A wrong password is answered only after this long, and attempts for one app wait in line, so
/// guessing goes at most one password per second per app.
pub const FAILED_SIGNIN_DELAY: Duration = Duration::from_secs(1);
const NONCE_BYTES: usize = 16;

/// The key that signs cookies and derives CSRF tokens.
pub struct Keyring {
    key: [u8; 32],
}

/// A signed-in operator: one app, until `expires_s` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub app: String,
    pub nonce: String,
    pub expires_s: i64,
}

impl Keyring {
    /// A fresh random key, made once per process.
    pub fn random() -> Keyring {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system has no random source");
        Keyring { key }
    }

    pub fn from_key(key: [u8; 32]) -> Keyring {
        Keyring { key }
    }

    fn mac(&self, purpose: &str, parts: &[&str]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(purpose.as_bytes());
        for part in parts {
            // Lengths first, so that no two lists of parts sign the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// The cookie value of a session: `app|nonce|expires|mac`.
    pub fn seal(&self, session: &Session) -> String {
        let expires = session.expires_s.to_string();
        let mac = self.mac("session", &[&session.app, &session.nonce, &expires]);
        format!("{}|{}|{}|{}", session.app, session.nonce, expires, mac)
    }

    /// The session a cookie value carries, if the signature holds and it has not expired.
    pub fn open(&self, value: &str, now_s: i64) -> Option<Session> {
        let mut parts = value.split('|');
        let (app, nonce, expires, mac) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let expected = self.mac("session", &[app, nonce, expires]);
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        let expires_s: i64 = expires.parse().ok()?;
        (now_s < expires_s).then(|| Session {
            app: app.to_owned(),
            nonce: nonce.to_owned(),
            expires_s,
        })
    }

    /// The cookie value of a sign-in form: `nonce|expires|mac`.
    pub fn seal_signin(&self, nonce: &str, expires_s: i64) -> String {
        let expires = expires_s.to_string();
        let mac = self.mac("signin", &[nonce, &expires]);
        format!("{nonce}|{expires}|{mac}")
    }

    /// The nonce of a sign-in cookie that holds and has not expired.
    pub fn open_signin(&self, value: &str, now_s: i64) -> Option<String> {
        let mut parts = value.split('|');
        let (nonce, expires, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let expected = self.mac("signin", &[nonce, expires]);
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        (now_s < expires.parse::<i64>().ok()?).then(|| nonce.to_owned())
    }

    /// The CSRF token of the forms of a session (or of a sign-in form, by its nonce).
    pub fn csrf(&self, nonce: &str) -> String {
        self.mac("csrf", &[nonce])
    }

    pub fn csrf_holds(&self, nonce: &str, token: &str) -> bool {
        let expected = self.csrf(nonce);
        bool::from(expected.as_bytes().ct_eq(token.as_bytes()))
    }
}

pub fn new_nonce() -> String {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes).expect("the operating system has no random source");
    hex::encode(bytes)
}

pub fn now_s() -> i64 {
    crate::actors::clock::real_now().0 / 1000
}

/// The `Set-Cookie` value of a cookie scoped to the dashboard.
pub fn set_cookie(name: &str, value: &str, max_age_s: i64) -> String {
    format!("{name}={value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={max_age_s}")
}

/// The value of a cookie in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The apps one can sign in to, each with the SHA-256 of its password, and one line per app for
/// sign-in attempts.
pub struct Passwords {
    digests: Vec<(String, [u8; 32])>,
    lines: HashMap<String, tokio::sync::Mutex<()>>,
}

impl Passwords {
    pub fn from_config(config: &Config) -> Passwords {
        let digests: Vec<(String, [u8; 32])> = config
            .apps
            .iter()
            .filter_map(|a| {
                let password = a.dashboard_password.as_ref()?;
                Some((a.id.clone(), Sha256::digest(password.as_bytes()).into()))
            })
            .collect();
        let lines = digests
            .iter()
            .map(|(id, _)| (id.clone(), tokio::sync::Mutex::new(())))
            .collect();
        Passwords { digests, lines }
    }

    /// Apps with a dashboard password, in config order.
    pub fn apps(&self) -> impl Iterator<Item = &str> {
        self.digests.iter().map(|(id, _)| id.as_str())
    }

    pub fn has_app(&self, app: &str) -> bool {
        self.digests.iter().any(|(id, _)| id == app)
    }

    /// Whether `password` is the app's, compared in constant time.
    pub fn matches(&self, app: &str, password: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        self.digests
            .iter()
            .find(|(id, _)| id == app)
            .is_some_and(|(_, d)| bool::from(d.ct_eq(&digest)))
    }

    /// Checks a password in the app's line; a wrong one (or an unknown app) answers only after
    /// [`FAILED_SIGNIN_DELAY`], while the next attempt for the app waits.
    pub async fn check(&self, app: &str, password: &str) -> bool {
        let Some(line) = self.lines.get(app) else {
            tokio::time::sleep(FAILED_SIGNIN_DELAY).await;
            return false;
        };
        let _turn = line.lock().await;
        let ok = self.matches(app, password);
        if !ok {
            tracing::warn!(app, "dashboard sign-in with a wrong password");
            tokio::time::sleep(FAILED_SIGNIN_DELAY).await;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring::from_key([7; 32])
    }

    fn session() -> Session {
        Session {
            app: "pixel.forge".into(),
            nonce: "abc123".into(),
            expires_s: 1_000,
        }
    }

    #[test]
    fn a_sealed_session_opens_until_it_expires() {
        let sealed = keyring().seal(&session());
        assert_eq!(keyring().open(&sealed, 999), Some(session()));
        assert_eq!(keyring().open(&sealed, 1_000), None);
    }

    #[test]
    fn a_session_changed_by_hand_or_signed_with_another_key_does_not_open() {
        let sealed = keyring().seal(&session());
        let other_app = sealed.replacen("pixel.forge", "other", 1);
        assert_eq!(keyring().open(&other_app, 0), None);
        let later = sealed.replacen("|1000|", "|9999999999|", 1);
        assert_eq!(keyring().open(&later, 0), None);
        assert_eq!(Keyring::from_key([8; 32]).open(&sealed, 0), None);
        assert_eq!(keyring().open("garbage", 0), None);
        assert_eq!(keyring().open(&format!("{sealed}|x"), 0), None);
    }

    #[test]
    fn a_signin_cookie_is_not_a_session_and_expires() {
        let signin = keyring().seal_signin("n1", 50);
        assert_eq!(keyring().open_signin(&signin, 49), Some("n1".into()));
        assert_eq!(keyring().open_signin(&signin, 50), None);
        assert_eq!(keyring().open(&signin, 0), None);
        let sealed = keyring().seal(&session());
        assert_eq!(keyring().open_signin(&sealed, 0), None);
    }

    #[test]
    fn a_csrf_token_holds_only_for_its_nonce_and_key() {
        let token = keyring().csrf("abc123");
        assert!(keyring().csrf_holds("abc123", &token));
        assert!(!keyring().csrf_holds("abc124", &token));
        assert!(!keyring().csrf_holds("abc123", ""));
        assert!(!Keyring::from_key([8; 32]).csrf_holds("abc123", &token));
    }

    #[test]
    fn cookies_are_read_from_any_cookie_header_and_set_strict_and_http_only() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", "a=1; vevee_dashboard=xyz|1".parse().unwrap());
        headers.append("cookie", "b=2".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz|1"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
        let set = set_cookie(SESSION_COOKIE, "v", SESSION_TTL_S);
        for attribute in [
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=28800",
            "Path=/dashboard",
        ] {
            assert!(set.contains(attribute), "{set}");
        }
    }

    fn passwords() -> Passwords {
        let config = Config::parse(
            r#"
[server]
listen = "127.0.0.1:0"
[storage]
data_dir = "d"
snapshot_dir = "s"
[[apps]]
id = "a"
dashboard_password = "right"
[[apps]]
id = "b"
"#,
        )
        .unwrap();
        Passwords::from_config(&config)
    }

    #[test]
    fn only_apps_with_a_password_can_be_signed_in_to() {
        let p = passwords();
        assert_eq!(p.apps().collect::<Vec<_>>(), ["a"]);
        assert!(p.matches("a", "right"));
        assert!(!p.matches("a", "wrong"));
        assert!(!p.matches("b", ""));
    }

    #[tokio::test]
    async fn a_wrong_password_is_answered_late_and_a_right_one_at_once() {
        let p = passwords();
        let started = std::time::Instant::now();
        assert!(p.check("a", "right").await);
        assert!(started.elapsed() < FAILED_SIGNIN_DELAY);
        assert!(!p.check("a", "wrong").await);
        assert!(started.elapsed() >= FAILED_SIGNIN_DELAY);
        assert!(!p.check("nope", "right").await);
        assert!(started.elapsed() >= 2 * FAILED_SIGNIN_DELAY);
    }
}
