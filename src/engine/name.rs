//! `Name`: an immutable string shared by reference count, for the ids that every decision copies.
//!
//! A reservation's id, its plan and limit ids, its balance ids and its model are each copied into
//! the event, the reservation, the ledger line and the answer. As `String`s every copy was an
//! allocation (and a cache miss on the allocator's free list, a fifth of the actor's time in the
//! depth-100 profile, BENCHMARKS.md); a `Name` copy is an increment. Names made from the catalog
//! share the catalog's allocation.
//!
//! Serialized as a plain string, so the bytes on disk are those of a `String`. Decoding makes a
//! new allocation per name: a per-thread table of recent names that shared repeats cost replay
//! a tenth more time than it saved (recovery bench, BENCHMARKS.md), and what replay keeps in
//! memory is mostly names made from the catalog once a user acts again.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

#[derive(Clone, Eq, PartialOrd, Ord)]
pub struct Name(Arc<str>);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Name {
        Name(Arc::from(text))
    }
}

impl From<String> for Name {
    fn from(text: String) -> Name {
        Name(Arc::from(text))
    }
}

impl From<&String> for Name {
    fn from(text: &String) -> Name {
        Name(Arc::from(text.as_str()))
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0.as_ref().to_owned()
    }
}

/// Copies of one name are one allocation: equal without reading the bytes.
impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that a map keyed by names is searched with a `&str`.
        self.0.hash(state);
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == &*other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == &*other.0
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        **self == *other.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Name;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Name, E> {
                Ok(Name::from(text))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_encodes_as_the_string_it_holds() {
        let config = bincode::config::standard();
        let name = Name::from("res_01H");
        let as_name = bincode::serde::encode_to_vec(&name, config).unwrap();
        let as_string = bincode::serde::encode_to_vec("res_01H".to_owned(), config).unwrap();
        assert_eq!(as_name, as_string);
        let (back, _): (Name, usize) =
            bincode::serde::borrow_decode_from_slice(&as_string, config).unwrap();
        assert_eq!(back, "res_01H");
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, "\"res_01H\"");
        assert_eq!(serde_json::from_str::<Name>(&json).unwrap(), name);
    }

    #[test]
    fn names_compare_and_hash_by_their_text() {
        let (a, b) = (Name::from("plan_pro"), Name::from(String::from("plan_pro")));
        assert!(!Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, b);
        assert_ne!(a, Name::from("plan_free"));
        let mut map = rustc_hash::FxHashMap::default();
        map.insert(a.clone(), 1);
        assert_eq!(map.get("plan_pro"), Some(&1));
        assert_eq!(map.get(&b), Some(&1));
        assert_eq!(a, "plan_pro");
        assert_eq!("plan_pro", a);
    }
}
