//! Whole numbers in JSON bodies. JSON Schema, and so the OpenAPI document, counts `2.0` as the
//! integer 2, and some clients write every number as a float (Python's `float`, generated
//! clients): such a quantity is still a whole number and is taken as one. A fraction (`1.5`), a
//! negative number or one past `u64` is refused with the field's name, as before.

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};
use std::fmt;

/// 2^64 as a float: floats from here up do not fit in a `u64`.
const U64_END_F64: f64 = 18_446_744_073_709_551_616.0;

struct WholeVisitor;

impl Visitor<'_> for WholeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && (0.0..U64_END_F64).contains(&v) {
            // Exact: a float with no fraction below 2^64 converts without rounding.
            Ok(v as u64)
        } else {
            Err(E::invalid_type(Unexpected::Float(v), &self))
        }
    }
}

/// A `u64` field that also takes a float with no fraction.
struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Whole, D::Error> {
        d.deserialize_any(WholeVisitor).map(Whole)
    }
}

/// For `#[serde(deserialize_with = "…")]` on a `u64`.
pub fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Whole::deserialize(d).map(|w| w.0)
}

/// For `#[serde(default, deserialize_with = "…")]` on an `Option<u64>`; `null` is `None`.
pub fn optional_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<Whole>::deserialize(d).map(|w| w.map(|w| w.0))
}

/// For `#[serde(default, deserialize_with = "…")]` on an `Option<u32>`.
pub fn optional_whole_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match optional_whole(d)? {
        None => Ok(None),
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| de::Error::invalid_value(Unexpected::Unsigned(v), &"at most 4294967295")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Body {
        #[serde(deserialize_with = "whole")]
        amount: u64,
        #[serde(default, deserialize_with = "optional_whole")]
        ttl: Option<u64>,
    }

    fn parse(text: &str) -> Result<Body, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_written_as_floats_are_taken_as_integers() {
        let body = parse(r#"{"amount": 3.0, "ttl": 6e2}"#).unwrap();
        assert_eq!(
            body,
            Body {
                amount: 3,
                ttl: Some(600)
            }
        );
        assert_eq!(
            parse(r#"{"amount": 9007199254740991}"#).unwrap().amount,
            9_007_199_254_740_991
        );
        assert_eq!(parse(r#"{"amount": 1, "ttl": null}"#).unwrap().ttl, None);
        assert_eq!(parse(r#"{"amount": 1}"#).unwrap().ttl, None);
    }

    #[test]
    fn fractions_negatives_and_numbers_past_u64_are_refused() {
        for bad in ["1.5", "-1", "-1.0", "1e20", "\"1\"", "true"] {
            let error = parse(&format!(r#"{{"amount": {bad}}}"#)).unwrap_err();
            assert!(error.contains("whole number"), "{bad}: {error}");
        }
    }
}
