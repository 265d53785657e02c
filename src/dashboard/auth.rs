//! Sign-in, session cookies and CSRF tokens.
//!
//! A session is a cookie the server signed with HMAC-SHA256: the app it is for, a random nonce and
//! when it expires. The key is made once and kept in the data directory, so sessions survive a
//! restart; the SHA-256 of the app's dashboard password is signed in too, so a new password in the
//! config ends every session of that app. Signing out records the session's nonce in a bounded,
//! persisted list of signed-out sessions ([`Signouts`]), so a copy of the cookie stops working at
//! once. Every form that changes something carries a CSRF token derived from the session's nonce;
//! the sign-in form, which has no session yet, gets its token from a short-lived signed cookie of
//! its own.
//!
//! Guessing is throttled per client address ([`Throttle`]): each address has a budget of attempts
//! per window, a wrong password is answered late, and nothing waits for anyone else's attempt, so
//! wrong guesses never hold up a right password.

use crate::config::Config;
use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "vevee_dashboard";
pub const SIGNIN_COOKIE: &str = "vevee_dashboard_signin";
/// How long a sign-in lasts.
pub const SESSION_TTL_S: i64 = 8 * 3600;
/// How long a sign-in form stays usable.
pub const SIGNIN_TTL_S: i64 = 3600;
/// A wrong password is answered only after this long. Attempts do not wait for each other: the
/// per-address budget below is what bounds guessing.
pub const FAILED_SIGNIN_DELAY: Duration = Duration::from_secs(1);
/// Sign-in attempts one client address may make per [`ATTEMPT_WINDOW`]; a right password gives
/// its attempt back.
pub const ATTEMPTS_PER_WINDOW_MAX: u32 = 10;
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(300);
/// Client addresses tracked at once; past it, the oldest window is forgotten.
pub const TRACKED_ADDRESSES_MAX: usize = 10_000;
/// Signed-out sessions remembered until they would have expired; past it, the one closest to
/// expiring is forgotten (and would work again for what is left of its 8 hours).
pub const SIGNOUTS_MAX: usize = 10_000;
/// Files in the data directory.
const KEY_FILE: &str = "dashboard-session.key";
const SIGNOUTS_FILE: &str = "dashboard-signouts";
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
    /// A fresh random key.
    pub fn random() -> Keyring {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system has no random source");
        Keyring { key }
    }

    pub fn from_key(key: [u8; 32]) -> Keyring {
        Keyring { key }
    }

    /// The key kept in `dir`, made on first start (readable by the owner only).
    pub fn load_or_create(dir: &Path) -> io::Result<Keyring> {
        let path = dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.try_into().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not 32 bytes; delete it to make a new key (everyone is signed out)", path.display()),
                    )
                })?;
                Ok(Keyring { key })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let keyring = Keyring::random();
                write_whole(&path, &keyring.key)?;
                Ok(keyring)
            }
            Err(e) => Err(e),
        }
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

    /// The cookie value of a session: `app|nonce|expires|mac`, where the MAC also covers the
    /// digest of the app's password, so that a new password ends the session.
    pub fn seal(&self, session: &Session, password: &[u8; 32]) -> String {
        let expires = session.expires_s.to_string();
        let password = hex::encode(password);
        let mac = self.mac(
            "session",
            &[&session.app, &session.nonce, &expires, &password],
        );
        format!("{}|{}|{}|{}", session.app, session.nonce, expires, mac)
    }

    /// The session a cookie value carries, if the signature holds for the app's current password
    /// (`password_of`) and it has not expired.
    pub fn open(
        &self,
        value: &str,
        now_s: i64,
        password_of: impl Fn(&str) -> Option<[u8; 32]>,
    ) -> Option<Session> {
        let mut parts = value.split('|');
        let (app, nonce, expires, mac) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let password = hex::encode(password_of(app)?);
        let expected = self.mac("session", &[app, nonce, expires, &password]);
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

/// Writes `bytes` to `path` whole and durably: a temporary file, fsynced, renamed over it.
fn write_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, path)
}

/// The apps one can sign in to, each with the SHA-256 of its password.
pub struct Passwords {
    digests: Vec<(String, [u8; 32])>,
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
        Passwords { digests }
    }

    /// Apps with a dashboard password, in config order.
    pub fn apps(&self) -> impl Iterator<Item = &str> {
        self.digests.iter().map(|(id, _)| id.as_str())
    }

    /// The SHA-256 of the app's password, if it has one.
    pub fn digest(&self, app: &str) -> Option<[u8; 32]> {
        self.digests
            .iter()
            .find(|(id, _)| id == app)
            .map(|(_, d)| *d)
    }

    /// Whether `password` is the app's, compared in constant time.
    pub fn matches(&self, app: &str, password: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        self.digest(app)
            .is_some_and(|d| bool::from(d.ct_eq(&digest)))
    }

    /// Checks a password; a wrong one (or an unknown app) is answered only after
    /// [`FAILED_SIGNIN_DELAY`]. Nothing is held while waiting, so other attempts, right or wrong,
    /// from anywhere, go on.
    pub async fn check(&self, app: &str, password: &str) -> bool {
        let ok = self.matches(app, password);
        if !ok {
            tracing::warn!(app, "dashboard sign-in with a wrong password");
            tokio::time::sleep(FAILED_SIGNIN_DELAY).await;
        }
        ok
    }
}

/// Sign-in attempts per client address, in fixed windows.
#[derive(Default)]
pub struct Throttle {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    /// Addresses are counted whole for IPv4, and by their /64 for IPv6, which one client
    /// usually holds in full.
    fn bucket(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(_) => addr,
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        }
    }

    /// Takes one attempt from `addr`'s budget, or says how many seconds until it refills.
    pub fn take(&self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        let key = Throttle::bucket(addr);
        let mut windows = self.windows.lock().expect("throttle lock");
        if windows.len() >= TRACKED_ADDRESSES_MAX && !windows.contains_key(&key) {
            windows.retain(|_, (start, _)| now.duration_since(*start) < ATTEMPT_WINDOW);
            if windows.len() >= TRACKED_ADDRESSES_MAX {
                let oldest = windows.iter().min_by_key(|(_, (start, _))| *start);
                if let Some(oldest) = oldest.map(|(k, _)| *k) {
                    windows.remove(&oldest);
                }
            }
        }
        let (start, used) = windows.entry(key).or_insert((now, 0));
        if now.duration_since(*start) >= ATTEMPT_WINDOW {
            *start = now;
            *used = 0;
        }
        if *used >= ATTEMPTS_PER_WINDOW_MAX {
            let left = ATTEMPT_WINDOW.saturating_sub(now.duration_since(*start));
            return Err(left.as_secs().max(1));
        }
        *used += 1;
        Ok(())
    }

    /// Gives back the attempt of a right password: an operator is never throttled for signing in.
    pub fn give_back(&self, addr: IpAddr) {
        let key = Throttle::bucket(addr);
        if let Some((_, used)) = self.windows.lock().expect("throttle lock").get_mut(&key) {
            *used = used.saturating_sub(1);
        }
    }
}

/// Sessions signed out before they expired, by nonce, kept in a file beside the key so that a
/// restart does not bring them back.
pub struct Signouts {
    path: PathBuf,
    ended: Mutex<HashMap<String, i64>>,
}

impl Signouts {
    pub fn load(dir: &Path, now_s: i64) -> io::Result<Signouts> {
        let path = dir.join(SIGNOUTS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let ended = text
            .lines()
            .filter_map(|line| {
                let (nonce, expires) = line.split_once(' ')?;
                Some((nonce.to_owned(), expires.parse::<i64>().ok()?))
            })
            .filter(|(_, expires)| *expires > now_s)
            .collect();
        Ok(Signouts {
            path,
            ended: Mutex::new(ended),
        })
    }

    pub fn is_ended(&self, session: &Session) -> bool {
        self.ended
            .lock()
            .expect("signouts lock")
            .contains_key(&session.nonce)
    }

    /// Ends `session` and writes the list before answering, so that the sign-out holds across
    /// a crash.
    pub fn end(&self, session: &Session, now_s: i64) -> io::Result<()> {
        let mut ended = self.ended.lock().expect("signouts lock");
        ended.retain(|_, expires| *expires > now_s);
        if ended.len() >= SIGNOUTS_MAX {
            let soonest = ended
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(nonce, _)| nonce.clone());
            if let Some(soonest) = soonest {
                tracing::warn!("the list of signed-out sessions is full: forgetting the oldest");
                ended.remove(&soonest);
            }
        }
        ended.insert(session.nonce.clone(), session.expires_s);
        let text: String = ended
            .iter()
            .map(|(nonce, expires)| format!("{nonce} {expires}\n"))
            .collect();
        write_whole(&self.path, text.as_bytes())
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

    const PW: [u8; 32] = [3; 32];

    fn pw(_: &str) -> Option<[u8; 32]> {
        Some(PW)
    }

    #[test]
    fn a_sealed_session_opens_until_it_expires() {
        let sealed = keyring().seal(&session(), &PW);
        assert_eq!(keyring().open(&sealed, 999, pw), Some(session()));
        assert_eq!(keyring().open(&sealed, 1_000, pw), None);
    }

    #[test]
    fn a_session_does_not_open_once_its_app_has_another_password_or_none() {
        let sealed = keyring().seal(&session(), &PW);
        assert_eq!(keyring().open(&sealed, 0, |_| Some([4; 32])), None);
        assert_eq!(keyring().open(&sealed, 0, |_| None), None);
    }

    #[test]
    fn a_session_changed_by_hand_or_signed_with_another_key_does_not_open() {
        let sealed = keyring().seal(&session(), &PW);
        let other_app = sealed.replacen("pixel.forge", "other", 1);
        assert_eq!(keyring().open(&other_app, 0, pw), None);
        let later = sealed.replacen("|1000|", "|9999999999|", 1);
        assert_eq!(keyring().open(&later, 0, pw), None);
        assert_eq!(Keyring::from_key([8; 32]).open(&sealed, 0, pw), None);
        assert_eq!(keyring().open("garbage", 0, pw), None);
        assert_eq!(keyring().open(&format!("{sealed}|x"), 0, pw), None);
    }

    #[test]
    fn a_signin_cookie_is_not_a_session_and_expires() {
        let signin = keyring().seal_signin("n1", 50);
        assert_eq!(keyring().open_signin(&signin, 49), Some("n1".into()));
        assert_eq!(keyring().open_signin(&signin, 50), None);
        assert_eq!(keyring().open(&signin, 0, pw), None);
        let sealed = keyring().seal(&session(), &PW);
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

    #[test]
    fn each_address_has_its_own_budget_and_right_passwords_give_theirs_back() {
        let throttle = Throttle::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..ATTEMPTS_PER_WINDOW_MAX {
            assert!(throttle.take(a, t0).is_ok());
        }
        let wait = throttle.take(a, t0).unwrap_err();
        assert_eq!(wait, ATTEMPT_WINDOW.as_secs());
        assert!(
            throttle.take(b, t0).is_ok(),
            "another address is not held up"
        );
        throttle.give_back(a);
        assert!(throttle.take(a, t0).is_ok());
        assert!(
            throttle.take(a, t0 + ATTEMPT_WINDOW).is_ok(),
            "a new window refills"
        );
        // One IPv6 client holds a whole /64.
        let (c, d): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        for _ in 0..ATTEMPTS_PER_WINDOW_MAX {
            assert!(throttle.take(c, t0).is_ok());
        }
        assert!(throttle.take(d, t0).is_err());
    }

    #[test]
    fn signed_out_sessions_stay_ended_across_a_reload_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let signouts = Signouts::load(dir.path(), 0).unwrap();
        assert!(!signouts.is_ended(&session()));
        signouts.end(&session(), 10).unwrap();
        assert!(signouts.is_ended(&session()));
        assert!(
            Signouts::load(dir.path(), 999)
                .unwrap()
                .is_ended(&session())
        );
        assert!(
            !Signouts::load(dir.path(), 1_000)
                .unwrap()
                .is_ended(&session())
        );
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = Keyring::load_or_create(dir.path()).unwrap();
        let again = Keyring::load_or_create(dir.path()).unwrap();
        assert_eq!(first.key, again.key);
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(Keyring::load_or_create(dir.path()).is_err());
    }
}
