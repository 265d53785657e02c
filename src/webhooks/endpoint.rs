//! An endpoint: where an app wants its events, which ones, and the secrets that sign them. The
//! parse functions here are the only way input becomes an endpoint's field, so a stored endpoint
//! is valid by construction.

use super::signing;
use crate::engine::notice::NoticeType;
use crate::engine::{Mode, Ts};
use serde::{Deserialize, Serialize};

/// API.md: a URL of at most 2048 characters.
pub const URL_CHARS_MAX: usize = 2048;
/// Descriptions are labels for people, not documents.
pub const DESCRIPTION_CHARS_MAX: usize = 500;
/// API.md: at most 16 endpoints per app and mode.
pub const ENDPOINTS_PER_SCOPE_MAX: usize = 16;
/// After a rotation the previous secret signs too, for this long (API.md: 24 h).
pub const PREVIOUS_SECRET_MS: i64 = 24 * 3600 * 1000;

/// Why endpoint input or an endpoint change was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRejection {
    #[error("url {0}")]
    Url(&'static str),
    #[error("url must be at most {URL_CHARS_MAX} characters")]
    UrlTooLong,
    #[error("events must list at least one event type, or be [\"*\"]")]
    NoEvents,
    #[error("events: \"*\" stands for every type and cannot be listed with others")]
    WildcardMixed,
    #[error(
        "events: '{0}' is not an event type; the types are credits.granted, credits.revoked, \
         credits.expired, credits.low, credits.depleted, credits.expiring, plan.limit_reached, \
         subscription.updated, subscription.canceled and reservation.expired"
    )]
    UnknownEventType(String),
    #[error("description must be at most {DESCRIPTION_CHARS_MAX} characters")]
    DescriptionTooLong,
    #[error(
        "this app already has {ENDPOINTS_PER_SCOPE_MAX} webhook endpoints in this mode, the \
         most it may have; delete one first"
    )]
    TooMany,
    #[error("no webhook endpoint with id '{0}'")]
    NotFound(String),
}

/// Which event types an endpoint receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventFilter {
    All,
    Types(Vec<NoticeType>),
}

impl EventFilter {
    pub fn parse(events: &[String]) -> Result<EventFilter, EndpointRejection> {
        if events.is_empty() {
            return Err(EndpointRejection::NoEvents);
        }
        if events.iter().any(|e| e == "*") {
            return match events.len() {
                1 => Ok(EventFilter::All),
                _ => Err(EndpointRejection::WildcardMixed),
            };
        }
        let mut types = Vec::new();
        for event in events {
            let kind = NoticeType::parse(event)
                .ok_or_else(|| EndpointRejection::UnknownEventType(event.clone()))?;
            if !types.contains(&kind) {
                types.push(kind);
            }
        }
        Ok(EventFilter::Types(types))
    }

    pub fn matches(&self, kind: NoticeType) -> bool {
        match self {
            EventFilter::All => true,
            EventFilter::Types(types) => types.contains(&kind),
        }
    }

    /// As API.md writes it: `["*"]` or the types.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            EventFilter::All => vec!["*"],
            EventFilter::Types(types) => types.iter().map(|t| t.as_str()).collect(),
        }
    }
}

/// `http://` or `https://` with a host, at most [`URL_CHARS_MAX`] characters.
pub fn parse_url(text: &str) -> Result<String, EndpointRejection> {
    if text.chars().count() > URL_CHARS_MAX {
        return Err(EndpointRejection::UrlTooLong);
    }
    let url = reqwest::Url::parse(text).map_err(|_| EndpointRejection::Url("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointRejection::Url(
            "must start with http:// or https://",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(EndpointRejection::Url("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs and the dashboard; a path token works as well.
        return Err(EndpointRejection::Url(
            "must not carry a user name or password",
        ));
    }
    // Kept as the caller wrote it: the parsed form may differ (a trailing slash, case).
    Ok(text.to_owned())
}

pub fn parse_description(text: Option<String>) -> Result<Option<String>, EndpointRejection> {
    match text {
        Some(t) if t.chars().count() > DESCRIPTION_CHARS_MAX => {
            Err(EndpointRejection::DescriptionTooLong)
        }
        other => Ok(other),
    }
}

/// The secret that signed before a rotation, and when it stops signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: String,
    pub until_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub app: String,
    pub mode: Mode,
    pub url: String,
    pub events: EventFilter,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why the server disabled it (failing for the app's `webhook_disable_after_seconds`, outbox
    /// full); `None` if enabled, or disabled by the app.
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<PreviousSecret>,
    pub created_at: Ts,
    /// Wall-clock milliseconds of the first failed attempt since the last success.
    pub failing_since_ms: Option<i64>,
}

impl Endpoint {
    pub fn new(
        app: &str,
        mode: Mode,
        url: String,
        events: EventFilter,
        description: Option<String>,
        now: Ts,
    ) -> Endpoint {
        Endpoint {
            id: format!("we_{}", ulid::Ulid::new()),
            app: app.to_owned(),
            mode,
            url,
            events,
            description,
            enabled: true,
            disabled_reason: None,
            secret: signing::new_secret(),
            previous_secret: None,
            created_at: now,
            failing_since_ms: None,
        }
    }

    /// The secrets that sign a delivery at `now_ms` (wall clock): the current one first.
    pub fn signing_secrets(&self, now_ms: i64) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let Some(previous) = self
            .previous_secret
            .as_ref()
            .filter(|p| now_ms < p.until_ms)
        {
            secrets.push(&previous.secret);
        }
        secrets
    }

    pub fn in_scope(&self, app: &str, mode: Mode) -> bool {
        self.app == app && self.mode == mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(parse_url("https://example.com/hook").is_ok());
        assert!(parse_url("http://127.0.0.1:9000").is_ok());
        assert_eq!(
            parse_url("ftp://example.com"),
            Err(EndpointRejection::Url(
                "must start with http:// or https://"
            ))
        );
        assert!(parse_url("example.com/hook").is_err());
        assert!(parse_url("https://").is_err());
        assert!(parse_url("https://user:pw@example.com").is_err());
        let long = format!("https://example.com/{}", "a".repeat(URL_CHARS_MAX));
        assert_eq!(parse_url(&long), Err(EndpointRejection::UrlTooLong));
    }

    #[test]
    fn events_are_known_types_or_exactly_the_wildcard() {
        let types = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(EventFilter::parse(&types(&["*"])), Ok(EventFilter::All));
        assert_eq!(
            EventFilter::parse(&types(&["credits.low", "credits.low"])),
            Ok(EventFilter::Types(vec![NoticeType::CreditsLow]))
        );
        assert_eq!(
            EventFilter::parse(&types(&["*", "credits.low"])),
            Err(EndpointRejection::WildcardMixed)
        );
        assert_eq!(EventFilter::parse(&[]), Err(EndpointRejection::NoEvents));
        assert!(matches!(
            EventFilter::parse(&types(&["credits.lowish"])),
            Err(EndpointRejection::UnknownEventType(_))
        ));
    }

    #[test]
    fn the_previous_secret_signs_only_until_it_lapses() {
        let mut e = Endpoint::new(
            "a",
            Mode::Test,
            "https://x.test".into(),
            EventFilter::All,
            None,
            Ts(0),
        );
        assert_eq!(e.signing_secrets(0).len(), 1);
        e.previous_secret = Some(PreviousSecret {
            secret: "whsec_old".into(),
            until_ms: 100,
        });
        assert_eq!(e.signing_secrets(99), vec![e.secret.as_str(), "whsec_old"]);
        assert_eq!(e.signing_secrets(100).len(), 1);
    }
}
