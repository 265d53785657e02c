//! Newtypes that parse their input, so that a value of one of these types is valid by construction.

use super::name::Name;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a piece of input was refused; the HTTP layer adds the name of the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub &'static str);

/// The largest quantity the API accepts: 2^53 − 1, so that JavaScript clients read it exactly.
pub const AMOUNT_MAX: u64 = (1 << 53) - 1;

/// A positive quantity of units, at most [`AMOUNT_MAX`].
pub fn parse_amount(value: u64) -> Result<u64, Invalid> {
    match value {
        0 => Err(Invalid("must be a positive integer")),
        v if v > AMOUNT_MAX => Err(Invalid("must be at most 9007199254740991")),
        v => Ok(v),
    }
}

/// A plan limit: like an amount, except that 0 is allowed. A 0 limit covers its models with no
/// room (a "0-quota free plan"), so its users count as subscribers and credits pay for everything.
pub fn parse_limit(value: u64) -> Result<u64, Invalid> {
    match value {
        0 => Ok(0),
        v => parse_amount(v),
    }
}

/// A user id of the app's own: `^[A-Za-z0-9_.:@-]{1,128}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(Name);

impl UserId {
    pub fn parse(text: &str) -> Result<UserId, Invalid> {
        let ok = (1..=128).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:@-".contains(&b));
        if ok {
            Ok(UserId(Name::from(text)))
        } else {
            Err(Invalid(
                "must be 1 to 128 characters of A-Z, a-z, 0-9, _ . : @ -",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_segment_start(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_category(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && is_segment_start(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| is_segment_start(b) || b == b'_' || b == b'-')
}

fn is_model_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && is_segment_start(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| is_segment_start(b) || b == b'_' || b == b'-' || b == b'.')
}

/// What is metered: `category.model`, e.g. `image.dall-e-3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelKey(Name);

impl ModelKey {
    pub fn parse(text: &str) -> Result<ModelKey, Invalid> {
        const MESSAGE: &str = "must be a model key like image.dall-e-3: lowercase category, a dot, \
                               a model name, at most 128 characters";
        let valid = text.len() <= 128
            && text
                .split_once('.')
                .is_some_and(|(category, model)| is_category(category) && is_model_name(model));
        if valid {
            Ok(ModelKey(Name::from(text)))
        } else {
            Err(Invalid(MESSAGE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first dot.
    pub fn category(&self) -> &str {
        self.0.split_once('.').map_or("", |(c, _)| c)
    }
}

/// What a plan limit or a credit balance covers: one model, a whole category, or everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Pattern {
    Model(ModelKey),
    Category(Name),
    Any,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, Invalid> {
        if text == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(category) = text.strip_suffix(".*") {
            if is_category(category) && text.len() <= 128 {
                return Ok(Pattern::Category(Name::from(category)));
            }
        }
        ModelKey::parse(text).map(Pattern::Model).map_err(|_| {
            Invalid("must be a model key like image.dall-e-3, a category like image.*, or *")
        })
    }

    pub fn covers(&self, model: &ModelKey) -> bool {
        match self {
            Pattern::Model(m) => m == model,
            Pattern::Category(c) => model.category() == c.as_str(),
            Pattern::Any => true,
        }
    }

    /// Whether some model key is covered by both patterns.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        match (self, other) {
            (Pattern::Any, _) | (_, Pattern::Any) => true,
            (Pattern::Model(a), Pattern::Model(b)) => a == b,
            (Pattern::Category(c), Pattern::Model(m))
            | (Pattern::Model(m), Pattern::Category(c)) => m.category() == c.as_str(),
            (Pattern::Category(a), Pattern::Category(b)) => a == b,
        }
    }

    /// Lower is more specific: a model key, then a category, then everything.
    pub fn specificity(&self) -> u8 {
        match self {
            Pattern::Model(_) => 0,
            Pattern::Category(_) => 1,
            Pattern::Any => 2,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Model(m) => f.write_str(m.as_str()),
            Pattern::Category(c) => write!(f, "{c}.*"),
            Pattern::Any => f.write_str("*"),
        }
    }
}

/// A catalog id (plan, pack, limit, pack item) or a unit: `^[A-Za-z0-9_.-]{1,64}$`.
pub fn parse_slug(text: &str) -> Result<Name, Invalid> {
    let ok = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(Name::from(text))
    } else {
        Err(Invalid(
            "must be 1 to 64 characters of A-Z, a-z, 0-9, _ . -",
        ))
    }
}

/// The part of an id that sorts in the order ids were made: between the prefix (`le_`) and the
/// user tag (`_…`) if there is one. One user's ids of every kind share this order.
pub fn sort_part(id: &str) -> &str {
    let rest = id.split_once('_').map_or(id, |(_, rest)| rest);
    rest.split_once('_').map_or(rest, |(part, _)| part)
}

/// Source of fresh prefixed ids. The engine asks for ids instead of making them, so that `decide`
/// stays a pure function and tests get deterministic ids.
pub trait IdSource {
    fn next_id(&mut self, prefix: &'static str) -> Name;
}

/// Sequential ids for tests: `res_000001`, `bal_000002`, …
#[derive(Debug, Default)]
pub struct CountingIds(pub u64);

impl IdSource for CountingIds {
    fn next_id(&mut self, prefix: &'static str) -> Name {
        self.0 += 1;
        Name::from(format!("{prefix}_{:06}", self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_keys_follow_the_api_grammar() {
        for good in [
            "image.dall-e-3",
            "video.veo-3",
            "text.gpt-4.1",
            "a.b",
            "0x.y_z",
        ] {
            assert!(ModelKey::parse(good).is_ok(), "{good} should parse");
        }
        for bad in [
            "image", ".x", "image.", "Image.x", "image.-x", "im age.x", "image.*", "",
        ] {
            assert!(ModelKey::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(ModelKey::parse(&format!("a.{}", "b".repeat(127))).is_err());
        assert_eq!(ModelKey::parse("text.gpt-4.1").unwrap().category(), "text");
    }

    #[test]
    fn patterns_cover_models_by_key_category_or_everything() {
        let dalle = ModelKey::parse("image.dall-e-3").unwrap();
        let veo = ModelKey::parse("video.veo-3").unwrap();
        let cases = [
            ("image.dall-e-3", true, false),
            ("image.*", true, false),
            ("*", true, true),
        ];
        for (pattern, covers_dalle, covers_veo) in cases {
            let p = Pattern::parse(pattern).unwrap();
            assert_eq!(p.covers(&dalle), covers_dalle, "{pattern} on dall-e");
            assert_eq!(p.covers(&veo), covers_veo, "{pattern} on veo");
            assert_eq!(p.to_string(), pattern);
        }
        assert!(Pattern::parse("image.**").is_err());
        assert!(Pattern::parse("*.x").is_err());
    }

    #[test]
    fn overlapping_patterns_share_a_model() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("image.*").overlaps(&p("image.dall-e-3")));
        assert!(!p("image.*").overlaps(&p("video.veo-3")));
        assert!(p("*").overlaps(&p("video.veo-3")));
        assert!(!p("image.a").overlaps(&p("image.b")));
    }

    #[test]
    fn user_ids_and_amounts_are_checked() {
        assert!(UserId::parse("u_1@x.io:7-a").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a b").is_err());
        assert!(UserId::parse(&"a".repeat(129)).is_err());
        assert_eq!(parse_amount(AMOUNT_MAX), Ok(AMOUNT_MAX));
        assert!(parse_amount(0).is_err());
        assert!(parse_amount(AMOUNT_MAX + 1).is_err());
        assert_eq!(parse_limit(0), Ok(0));
        assert_eq!(parse_limit(AMOUNT_MAX), Ok(AMOUNT_MAX));
        assert!(parse_limit(AMOUNT_MAX + 1).is_err());
    }
}
