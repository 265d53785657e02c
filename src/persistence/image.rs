//! The engine's live state in the compact form that snapshots hold and sleeping users keep: each
//! user packed into bytes (bincode, through the codec) with its next deadline beside it, so that
//! loading a snapshot, starting the engine and finding the users whose deadlines come due never
//! unpack a user that nothing touches.
//!
//! Replay opens a user on its first record, applies records through the engine's own `apply`,
//! and packs it again at the end ([`Replay::finish`]).

use super::codec::{CodecError, FrameKind, decode_payload, encode_versioned, split_version};
use crate::engine::catalog::Catalog;
use crate::engine::event::Event;
use crate::engine::ledger::LedgerLine;
use crate::engine::user::{
    Applied, Balance, Counter, Reservation, StoredUserState, Subscription, UserState,
};
use crate::engine::{Name, Record, Ts, UserKey, next_deadline};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::sync::Arc;

/// One user at rest: its state as bytes, and the deadline it must be woken for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packed {
    bytes: PackedBytes,
    pub deadline: Option<Ts>,
}

/// Bytes that bincode copies as one block rather than element by element.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PackedBytes(Box<[u8]>);

impl Serialize for PackedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for PackedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PackedBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("packed user bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<PackedBytes, E> {
                Ok(PackedBytes(v.into()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<PackedBytes, E> {
                Ok(PackedBytes(v.into_boxed_slice()))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// The layout of packed bytes: 2 leaves out the indexes derived from the balances (see
/// [`UserState`]'s serialization); 1, written by earlier builds, holds them.
const PACKED_VERSION: u16 = 2;

/// A user packed by a build that wrote version 1: every field, the indexes included.
#[derive(Deserialize)]
struct PackedV1 {
    subscription: Option<Subscription>,
    counters: FxHashMap<(Name, Name), Counter>,
    balances: Vec<Balance>,
    _balance_index: FxHashMap<Name, usize>,
    _grants: FxHashMap<(Name, Name), Vec<Name>>,
    reservations: FxHashMap<Name, Reservation>,
    pending: BTreeSet<(Ts, Name)>,
    request_keys: FxHashMap<String, Name>,
    ledger_tail: Vec<LedgerLine>,
}

impl Packed {
    pub fn pack(state: &UserState) -> Result<Packed, CodecError> {
        Ok(Packed {
            bytes: PackedBytes(encode_versioned(PACKED_VERSION, state)?.into_boxed_slice()),
            deadline: next_deadline(state),
        })
    }

    pub fn unpack(&self) -> Result<UserState, CodecError> {
        Packed::unpack_bytes(&self.bytes.0)
    }

    /// The packed bytes, to keep elsewhere and unpack with [`Packed::unpack_bytes`].
    pub fn bytes(&self) -> &[u8] {
        &self.bytes.0
    }

    pub fn unpack_bytes(bytes: &[u8]) -> Result<UserState, CodecError> {
        match split_version(bytes)? {
            (PACKED_VERSION, payload) => decode_payload(payload),
            (1, payload) => {
                let v1: PackedV1 = decode_payload(payload)?;
                // The indexes it holds are rebuilt from the balances, as in version 2.
                Ok(UserState::from(StoredUserState {
                    subscription: v1.subscription,
                    counters: v1.counters,
                    balances: v1.balances,
                    reservations: v1.reservations,
                    pending: v1.pending,
                    request_keys: v1.request_keys,
                    ledger_tail: v1.ledger_tail,
                }))
            }
            (found, _) => Err(CodecError::UnsupportedVersion {
                kind: FrameKind::History,
                found,
                newest: PACKED_VERSION,
            }),
        }
    }

    /// The layout earlier builds wrote (version 1), for the test that they still unpack.
    #[cfg(test)]
    pub fn pack_as_v1(state: &UserState) -> Packed {
        let fields = (
            &state.subscription,
            &state.counters,
            &state.balances,
            &state.balance_index,
            &state.grants,
            &state.reservations,
            &state.pending,
            &state.request_keys,
            &state.ledger_tail,
        );
        Packed {
            bytes: PackedBytes(
                encode_versioned(1, &fields)
                    .expect("encodes")
                    .into_boxed_slice(),
            ),
            deadline: next_deadline(state),
        }
    }

    /// Bytes this user takes at rest, for reports.
    pub fn len(&self) -> usize {
        self.bytes.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.0.is_empty()
    }
}

/// Everything a snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub catalogs: FxHashMap<String, Catalog>,
    pub test_clock_offsets_ms: FxHashMap<String, i64>,
    /// Active subscriptions per (app, plan), both modes, so a plan in use is not deleted.
    pub subscribers: FxHashMap<(String, String), u64>,
    pub users: FxHashMap<UserKey, Packed>,
}

/// Applies records to an [`Image`], keeping the users it touched open until [`Replay::finish`].
pub struct Replay<'a> {
    image: &'a mut Image,
    open: FxHashMap<UserKey, UserState>,
}

impl Image {
    pub fn replay(&mut self) -> Replay<'_> {
        Replay {
            image: self,
            open: FxHashMap::default(),
        }
    }
}

impl Replay<'_> {
    /// Makes room for `users` opened users at once: a tail of records that each open another
    /// user (a burst of distinct users) otherwise rehashes the map of unpacked users again and
    /// again as it doubles, moving every state each time.
    pub fn reserve_users(&mut self, users: usize) {
        self.open.reserve(users);
    }

    /// Applies a record the caller no longer needs. Returns what left memory with a user's event.
    pub fn apply_owned(&mut self, record: Record) -> Result<Applied, CodecError> {
        match record {
            Record::User { key, event } => self.apply_event(&key, event),
            Record::Catalog { app, change } => {
                self.image.catalogs.entry(app).or_default().apply(&change);
                Ok(Applied::default())
            }
            Record::TestClock { app, offset_ms } => {
                self.image.test_clock_offsets_ms.insert(app, offset_ms);
                Ok(Applied::default())
            }
            // Stored answers and early refunds live in the history store only.
            Record::Answer { .. } | Record::RefundBeforeCheckout { .. } => Ok(Applied::default()),
            Record::FlushLedger { key } => self.flush_ledger(&key),
        }
    }

    /// A `Record::User` whose key the caller keeps: the key is copied only for a user not yet
    /// opened (recovery writes each record's history under its key).
    pub fn apply_event(&mut self, key: &UserKey, event: Arc<Event>) -> Result<Applied, CodecError> {
        let user = match self.open.get_mut(key) {
            Some(user) => user,
            None => {
                let state = match self.image.users.remove(key) {
                    Some(packed) => packed.unpack()?,
                    None => UserState::default(),
                };
                self.open.entry(key.clone()).or_insert(state)
            }
        };
        let before = active_plan(user);
        let applied = user.apply_owned(event);
        let after = active_plan(user);
        if before != after {
            count(&mut self.image.subscribers, &key.app, before, -1);
            count(&mut self.image.subscribers, &key.app, after, 1);
        }
        Ok(applied)
    }

    /// A `Record::FlushLedger` whose key the caller keeps.
    pub fn flush_ledger(&mut self, key: &UserKey) -> Result<Applied, CodecError> {
        if let Some(user) = self.open.get_mut(key) {
            return Ok(user.flush_ledger());
        }
        match self.image.users.remove(key) {
            Some(packed) => {
                let mut user = packed.unpack()?;
                let applied = user.flush_ledger();
                self.open.insert(key.clone(), user);
                Ok(applied)
            }
            None => Ok(Applied::default()),
        }
    }

    /// Packs every user replay opened back into the image.
    pub fn finish(self) -> Result<(), CodecError> {
        for (key, state) in self.open {
            self.image.users.insert(key, Packed::pack(&state)?);
        }
        Ok(())
    }
}

fn active_plan(state: &UserState) -> Option<Name> {
    state
        .subscription
        .as_ref()
        .and_then(|s| s.active_plan())
        .cloned()
}

/// Adds `delta` to the subscriber count of `plan`, dropping counts that reach zero.
pub fn count(
    subscribers: &mut FxHashMap<(String, String), u64>,
    app: &str,
    plan: Option<Name>,
    delta: i64,
) {
    let Some(plan) = plan else { return };
    let key = (app.to_owned(), plan.into());
    let n = subscribers.get(&key).copied().unwrap_or(0);
    let n = n
        .checked_add_signed(delta)
        .expect("a plan loses more subscribers than it had");
    if n == 0 {
        subscribers.remove(&key);
    } else {
        subscribers.insert(key, n);
    }
}
