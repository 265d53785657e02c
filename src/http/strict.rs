//! A serde adapter over `serde_json` for request bodies, with two jobs:
//!
//! - It refuses a JSON array where a struct is expected. serde's derive also accepts a struct as a
//!   sequence of its fields in order (`["u_1", "image.x", 1]`), which API.md does not allow.
//! - It reports refusals as a typed [`BodyError`] (unknown field, missing field, malformed JSON,
//!   wrong value), so that the HTTP layer classifies them without reading serde's message text.
//!
//! Visitors are generic over the error type of whoever calls them. The adapter calls the wrapped
//! visitors with [`BodyError`]; when it must hand an error back to `serde_json` it parks the typed
//! error in a slot shared by every layer and passes `serde_json` a stand-in, and takes the typed
//! error back out when `serde_json` returns. The first error parked wins: it is where parsing
//! stopped.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor,
};
use std::cell::RefCell;
use std::fmt;

/// Why a body was refused.
#[derive(Debug)]
pub enum BodyError {
    /// From `serde_json` itself: malformed JSON, or a value of the wrong type or range.
    Json(serde_json::Error),
    UnknownField(String),
    MissingField(&'static str),
    /// A value the target type refused, with serde's description of what it expected.
    Invalid(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Json(e) => write!(f, "{e}"),
            BodyError::UnknownField(name) => write!(f, "unknown field `{name}`"),
            BodyError::MissingField(name) => write!(f, "missing field `{name}`"),
            BodyError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for BodyError {}

impl de::Error for BodyError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        BodyError::Invalid(message.to_string())
    }

    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        BodyError::UnknownField(field.to_owned())
    }

    fn missing_field(field: &'static str) -> Self {
        BodyError::MissingField(field)
    }
}

/// The slot where a typed error waits while `serde_json` unwinds.
type Slot = RefCell<Option<BodyError>>;

/// Parses a whole body as `T`: the value, or the path to the value at fault (`.` for the body
/// itself) and why.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, (String, BodyError)> {
    // Most bodies parse: they pay for no path tracking (serde_path_to_error copies every key it
    // passes). A body that fails is parsed again, with the path, to say where.
    if let Some(value) = fast(bytes) {
        return Ok(value);
    }
    with_path(bytes)
}

/// The same parse as [`with_path`], without the path; `None` on any refusal.
fn fast<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let slot = Slot::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let strict = Strict {
        de: &mut de,
        slot: &slot,
    };
    let value = T::deserialize(strict).ok()?;
    de.end().ok()?;
    Some(value)
}

fn with_path<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, (String, BodyError)> {
    let slot = Slot::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let strict = Strict {
        de: &mut de,
        slot: &slot,
    };
    let value = serde_path_to_error::deserialize(strict)
        .map_err(|e| (e.path().to_string(), e.into_inner()))?;
    de.end().map_err(|e| (".".to_owned(), BodyError::Json(e)))?;
    Ok(value)
}

/// Hands a typed error to `serde_json` as a stand-in, keeping the first one.
fn park<E: de::Error>(slot: &Slot, error: BodyError) -> E {
    let message = error.to_string();
    let mut parked = slot.borrow_mut();
    if parked.is_none() {
        *parked = Some(error);
    }
    E::custom(message)
}

/// Takes the typed error back when `serde_json` returns one.
fn unpark(slot: &Slot, error: serde_json::Error) -> BodyError {
    slot.borrow_mut().take().unwrap_or(BodyError::Json(error))
}

struct Strict<'s, D> {
    de: D,
    slot: &'s Slot,
}

struct Wrap<'s, X> {
    inner: X,
    slot: &'s Slot,
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, BodyError> {
            let slot = self.slot;
            self.de
                .$method($($arg,)* Wrap { inner: visitor, slot })
                .map_err(|e| unpark(slot, e))
        }
    )*};
}

impl<'de, D> Deserializer<'de> for Strict<'_, D>
where
    D: Deserializer<'de, Error = serde_json::Error>,
{
    type Error = BodyError;

    forward_deserialize! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(), deserialize_option(),
        deserialize_unit(), deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str), deserialize_seq(),
        deserialize_tuple(len: usize), deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(), deserialize_identifier(), deserialize_ignored_any(),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    }

    /// The point of the adapter: a struct is read as a map only, never as a sequence.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        self.deserialize_map(visitor)
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method::<BodyError>(v).map_err(|e| park(self.slot, e))
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64),
        visit_i128(i128), visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64),
        visit_u128(u128), visit_f32(f32), visit_f64(f64), visit_char(char), visit_str(&str),
        visit_borrowed_str(&'de str), visit_string(String), visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]), visit_byte_buf(Vec<u8>),
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner
            .visit_none::<BodyError>()
            .map_err(|e| park(self.slot, e))
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner
            .visit_unit::<BodyError>()
            .map_err(|e| park(self.slot, e))
    }

    fn visit_some<D2: Deserializer<'de>>(self, de: D2) -> Result<V::Value, D2::Error> {
        let slot = self.slot;
        self.inner
            .visit_some(Foreign { de, slot })
            .map_err(|e| park(slot, e))
    }

    fn visit_newtype_struct<D2: Deserializer<'de>>(self, de: D2) -> Result<V::Value, D2::Error> {
        let slot = self.slot;
        self.inner
            .visit_newtype_struct(Foreign { de, slot })
            .map_err(|e| park(slot, e))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        self.inner
            .visit_seq(Wrap { inner: seq, slot })
            .map_err(|e| park(slot, e))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let slot = self.slot;
        self.inner
            .visit_map(Wrap { inner: map, slot })
            .map_err(|e| park(slot, e))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<V::Value, A::Error> {
        // No request body holds an externally tagged enum; refuse rather than half-support one.
        Err(park(
            self.slot,
            BodyError::Invalid("enums are not accepted in request bodies".into()),
        ))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<'_, A> {
    type Error = BodyError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, BodyError> {
        let slot = self.slot;
        self.inner
            .next_element_seed(Wrap { inner: seed, slot })
            .map_err(|e| reclaim(slot, e))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<'_, A> {
    type Error = BodyError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, BodyError> {
        let slot = self.slot;
        self.inner
            .next_key_seed(Wrap { inner: seed, slot })
            .map_err(|e| reclaim(slot, e))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, BodyError> {
        let slot = self.slot;
        self.inner
            .next_value_seed(Wrap { inner: seed, slot })
            .map_err(|e| reclaim(slot, e))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, T: DeserializeSeed<'de>> DeserializeSeed<'de> for Wrap<'_, T> {
    type Value = T::Value;

    fn deserialize<D2: Deserializer<'de>>(self, de: D2) -> Result<T::Value, D2::Error> {
        let slot = self.slot;
        self.inner
            .deserialize(Foreign { de, slot })
            .map_err(|e| park(slot, e))
    }
}

/// The typed error behind an error of any deserializer in the chain: the parked one if there is
/// one, else the error's own text.
fn reclaim<E: de::Error>(slot: &Slot, error: E) -> BodyError {
    slot.borrow_mut()
        .take()
        .unwrap_or_else(|| BodyError::Invalid(error.to_string()))
}

/// [`Strict`] over a deserializer whose error type is not known here (the ones `serde_json`
/// passes to visitors and seeds are its own, but the signatures are generic).
struct Foreign<'s, D> {
    de: D,
    slot: &'s Slot,
}

macro_rules! forward_foreign {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, BodyError> {
            let slot = self.slot;
            self.de
                .$method($($arg,)* Wrap { inner: visitor, slot })
                .map_err(|e| reclaim(slot, e))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Foreign<'_, D> {
    type Error = BodyError;

    forward_foreign! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(), deserialize_option(),
        deserialize_unit(), deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str), deserialize_seq(),
        deserialize_tuple(len: usize), deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(), deserialize_identifier(), deserialize_ignored_any(),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, BodyError> {
        self.deserialize_map(visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: u64,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(default)]
        note: Option<String>,
        inner: Option<Inner>,
        list: Vec<Inner>,
    }

    fn parse(text: &str) -> Result<Outer, (String, BodyError)> {
        from_slice(text.as_bytes())
    }

    #[test]
    fn objects_parse_as_serde_would() {
        let outer = parse(r#"{"name": "a", "inner": {"n": 1}, "list": [{"n": 2}]}"#).unwrap();
        assert_eq!(outer.inner, Some(Inner { n: 1 }));
        assert_eq!(outer.list, vec![Inner { n: 2 }]);
        assert_eq!(outer.note, None);
    }

    #[test]
    fn an_array_where_a_struct_is_expected_is_refused_at_any_depth() {
        let (path, _) = parse(r#"["a", null, null, []]"#).unwrap_err();
        assert_eq!(path, ".");
        let (path, _) = parse(r#"{"name": "a", "inner": [1], "list": []}"#).unwrap_err();
        assert_eq!(path, "inner");
        let (path, _) = parse(r#"{"name": "a", "inner": null, "list": [[2]]}"#).unwrap_err();
        assert_eq!(path, "list[0]");
    }

    #[test]
    fn unknown_and_missing_fields_are_told_apart_by_type_with_their_path() {
        let (path, error) = parse(r#"{"name": "a", "list": [{"n": 1, "m": 2}]}"#).unwrap_err();
        assert!(
            matches!(&error, BodyError::UnknownField(f) if f == "m"),
            "{error:?}"
        );
        assert_eq!(path, "list[0].m");
        let (path, error) = parse(r#"{"name": "a", "list": [{}]}"#).unwrap_err();
        assert!(matches!(error, BodyError::MissingField("n")), "{error:?}");
        assert_eq!(path, "list[0]");
        let (_, error) = parse(r#"{"list": []}"#).unwrap_err();
        assert!(
            matches!(error, BodyError::MissingField("name")),
            "{error:?}"
        );
    }

    #[test]
    fn wrong_types_and_trailing_text_are_errors_of_their_own_kind() {
        let (path, error) = parse(r#"{"name": 5, "list": []}"#).unwrap_err();
        assert_eq!(path, "name");
        assert!(!matches!(
            error,
            BodyError::UnknownField(_) | BodyError::MissingField(_)
        ));
        let (_, error) = parse(r#"{"name": "a", "list": []} x"#).unwrap_err();
        assert!(
            matches!(&error, BodyError::Json(e) if e.is_syntax()),
            "{error:?}"
        );
    }
}
