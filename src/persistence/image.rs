//! The engine's live state in the compact form that snapshots hold and sleeping users keep: each
//! user packed into bytes (bincode, through the codec) with its next deadline beside it, so that
//! loading a snapshot, starting the engine and finding the users whose deadlines come due never
//! unpack a user that nothing touches.
//!
//! Replay opens a user on its first record, applies records through the engine's own `apply`,
//! and packs it again at the end ([`Replay::finish`]). At startup it may instead keep a user's
//! records as the bytes the journal holds ([`Replay::keep`]): the user is then packed as its
//! earlier packed form followed by those events, applied when something unpacks it. Each step's
//! last record says what the state holds once it is applied ([`Settled`]), so the user's deadline
//! and plan are known without applying anything. That holds because a step is journaled whole
//! (the writer cuts batches only between pushes) and a snapshot is taken at a batch's end.

use super::codec::{self, CodecError, FrameKind, decode_payload, encode_versioned, split_version};
use crate::engine::catalog::Catalog;
use crate::engine::event::Event;
use crate::engine::ledger::LedgerLine;
use crate::engine::user::{
    Applied, Balance, Counter, Reservation, StoredUserState, Subscription, UserState,
};
use crate::engine::{Mode, Name, Record, Settled, Ts, UserKey, next_deadline};
use bytes::Bytes;
use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::sync::Arc;

/// One user at rest: its state as bytes, and the deadline it must be woken for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packed {
    bytes: PackedBytes,
    pub deadline: Option<Ts>,
}

/// Bytes that bincode reads as one block rather than element by element. Read from a mapped
/// snapshot (see [`borrowing_from`]) they are a slice of the mapping, not a copy: a million
/// users' forms were half of a start's snapshot load, most of it the kernel zeroing fresh pages
/// for the copies (BENCHMARKS.md, the tenth-session start).
///
/// A form [`Replay::finish`] made for a user with kept events is held as the three parts of
/// [`KEPT_VERSION`]'s layout: the old form is shared, not copied, and the parts are joined only
/// where the form is stored (the engine's entry for a sleeping user, or a snapshot).
/// Boxed, so that the million forms of a snapshot's users map stay one `Bytes` wide.
#[derive(Debug, Clone)]
enum PackedBytes {
    Whole(Bytes),
    Kept(Box<KeptParts>),
}

#[derive(Debug, Clone)]
struct KeptParts {
    head: [u8; KEPT_HEAD],
    base: Bytes,
    entries: Bytes,
}

impl PackedBytes {
    fn parts(&self) -> [&[u8]; 3] {
        match self {
            PackedBytes::Whole(bytes) => [bytes, &[], &[]],
            PackedBytes::Kept(kept) => [&kept.head, &kept.base, &kept.entries],
        }
    }
}

impl PartialEq for PackedBytes {
    fn eq(&self, other: &Self) -> bool {
        let bytes = |b: &PackedBytes| {
            b.parts()
                .into_iter()
                .flatten()
                .copied()
                .collect::<Vec<u8>>()
        };
        match (self, other) {
            (PackedBytes::Whole(a), PackedBytes::Whole(b)) => a == b,
            _ => bytes(self) == bytes(other),
        }
    }
}

impl Eq for PackedBytes {}

impl Serialize for PackedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PackedBytes::Whole(bytes) => serializer.serialize_bytes(bytes),
            PackedBytes::Kept(_) => serializer.serialize_bytes(&self.parts().concat()),
        }
    }
}

thread_local! {
    /// The bytes being decoded on this thread, when they can be shared (see [`borrowing_from`]).
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` over `source` so that the packed forms it reads share `source` instead of
/// copying out of it. A form keeps all of `source` alive, so only a decode whose forms are
/// short-lived uses it: a snapshot, whose users are copied into the engine's own entries at the
/// start and dropped.
pub fn borrowing_from<R>(source: &Bytes, decode: impl FnOnce() -> R) -> R {
    struct Reset(Option<Bytes>);
    impl Drop for Reset {
        fn drop(&mut self) {
            SOURCE.with(|s| *s.borrow_mut() = self.0.take());
        }
    }
    let _reset = Reset(SOURCE.with(|s| s.borrow_mut().replace(source.clone())));
    decode()
}

impl<'de> Deserialize<'de> for PackedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PackedBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("packed user bytes")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<PackedBytes, E> {
                let shared = SOURCE.with(|s| {
                    s.borrow().as_ref().and_then(|source| {
                        let range = source.as_ptr_range();
                        (range.start <= v.as_ptr() && v.as_ptr_range().end <= range.end)
                            .then(|| source.slice_ref(v))
                    })
                });
                Ok(PackedBytes::Whole(
                    shared.unwrap_or_else(|| Bytes::copy_from_slice(v)),
                ))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<PackedBytes, E> {
                Ok(PackedBytes::Whole(Bytes::copy_from_slice(v)))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<PackedBytes, E> {
                Ok(PackedBytes::Whole(Bytes::from(v)))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// The layout of packed bytes: 2 leaves out the indexes derived from the balances (see
/// [`UserState`]'s serialization); 1, written by earlier builds, holds them.
const PACKED_VERSION: u16 = 2;
/// Packed bytes that end in events not applied yet: the length of the packed form before them
/// (u32, big-endian; 0 for a user that had none), that form, then the entries, each
/// [`KEPT_EVENT`] with the event's length (u32, big-endian) and its bytes as the journal holds
/// them, or [`KEPT_FLUSH`]. Made at startup only ([`Replay::keep`]); never nested.
const KEPT_VERSION: u16 = 3;
const KEPT_EVENT: u8 = 0;
const KEPT_FLUSH: u8 = 1;
/// Bytes before the packed form in [`KEPT_VERSION`]'s layout: the version and the form's length.
const KEPT_HEAD: usize = 2 + 4;
/// Past this many bytes of kept events a user is applied at once instead: unpacking it later
/// stays short (a few hundred events), and what kept users hold stays near what the journal's
/// tail holds.
const KEPT_BYTES_MAX: usize = 64 << 10;

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
            bytes: PackedBytes::Whole(Bytes::from(encode_versioned(PACKED_VERSION, state)?)),
            deadline: next_deadline(state),
        })
    }

    pub fn unpack(&self) -> Result<UserState, CodecError> {
        match &self.bytes {
            PackedBytes::Whole(bytes) => Packed::unpack_bytes(bytes),
            PackedBytes::Kept(kept) => {
                let mut state = match &kept.base[..] {
                    [] => UserState::default(),
                    base => Packed::unpack_bytes(base)?,
                };
                apply_kept(&mut state, &kept.entries)?;
                Ok(state)
            }
        }
    }

    /// The packed bytes in up to three parts, to join and keep elsewhere, then unpack with
    /// [`Packed::unpack_bytes`].
    pub fn parts(&self) -> [&[u8]; 3] {
        self.bytes.parts()
    }

    pub fn unpack_bytes(bytes: &[u8]) -> Result<UserState, CodecError> {
        match split_version(bytes)? {
            (PACKED_VERSION, payload) => decode_payload(payload),
            (KEPT_VERSION, payload) => {
                let (base, events) = split_kept(payload)?;
                let mut state = match base {
                    [] => UserState::default(),
                    base => Packed::unpack_bytes(base)?,
                };
                apply_kept(&mut state, events)?;
                Ok(state)
            }
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
            bytes: PackedBytes::Whole(Bytes::from(encode_versioned(1, &fields).expect("encodes"))),
            deadline: next_deadline(state),
        }
    }

    /// Whether it ends in events not applied yet ([`Replay::keep`]).
    pub fn is_kept(&self) -> bool {
        split_version(self.parts()[0]).is_ok_and(|(version, _)| version == KEPT_VERSION)
    }

    /// Bytes this user takes at rest, for reports.
    pub fn len(&self) -> usize {
        self.parts().iter().map(|part| part.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub catalogs: FxHashMap<String, Catalog>,
    pub test_clock_offsets_ms: FxHashMap<String, i64>,
    /// Active subscriptions per (app, plan), both modes, so a plan in use is not deleted.
    pub subscribers: FxHashMap<(String, String), u64>,
    #[serde(deserialize_with = "users_sized")]
    pub users: FxHashMap<UserKey, Packed>,
}

/// A table sized at once beyond which the users map grows as it is read.
const USERS_SIZED_MAX: usize = 1 << 24;

/// The users map, made at its full size before the first user is read (bincode gives the
/// length). serde's own reading starts small and doubles: at a million users that was seven
/// copies of the table into fresh pages (BENCHMARKS.md, the tenth-session start).
fn users_sized<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<FxHashMap<UserKey, Packed>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = FxHashMap<UserKey, Packed>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of users")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let size = map.size_hint().unwrap_or(0).min(USERS_SIZED_MAX);
            let mut users = FxHashMap::with_capacity_and_hasher(size, Default::default());
            while let Some((key, packed)) = map.next_entry()? {
                users.insert(key, packed);
            }
            Ok(users)
        }
    }
    deserializer.deserialize_map(Visitor)
}

/// Applies records to an [`Image`], keeping the users it touched open until [`Replay::finish`].
pub struct Replay<'a> {
    image: &'a mut Image,
    open: FxHashMap<UserKey, UserState>,
    /// The users [`Replay::keep`] met, each with an index into `kept_users`.
    kept: KeptKeys,
    kept_users: Vec<Kept>,
    /// The index of the last record's user.
    last_kept: Option<usize>,
    /// The bytes of the events kept, in the order met.
    arena: Arena,
}

/// Kept entries one after the other in large chunks, in the order met and already in
/// [`KEPT_VERSION`]'s layout, so that a user whose entries lie side by side (a tail where each
/// user made one step) gets a slice of a chunk as its entries, not a copy. Each user's entries are
/// a chain of runs: a run is entries of one user with no other user's between them, and grows
/// while the same user's records follow each other.
#[derive(Default)]
struct Arena {
    chunks: Vec<Vec<u8>>,
    runs: Vec<Run>,
}

/// Bytes of an arena chunk (a larger event gets a chunk of its own size).
const ARENA_CHUNK: usize = 1 << 20;
/// The index of no run.
const NO_RUN: u32 = u32::MAX;

/// Entries of one user side by side in one chunk.
struct Run {
    chunk: u32,
    start: u32,
    end: u32,
    user: u32,
    /// The user's run before this one ([`NO_RUN`] for its first).
    previous: u32,
}

impl Run {
    /// Where its bytes lie in its chunk.
    fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// Bytes of an entry in [`KEPT_VERSION`]'s layout: the event's, or none for a ledger flush.
fn kept_len(event: Option<&[u8]>) -> usize {
    event.map_or(1, |e| 1 + 4 + e.len())
}

/// Appends an entry in [`KEPT_VERSION`]'s layout.
fn put_entry(event: Option<&[u8]>, out: &mut Vec<u8>) {
    match event {
        None => out.push(KEPT_FLUSH),
        Some(event) => {
            out.push(KEPT_EVENT);
            // A framed record is shorter than 4 GiB, so its event's length fits.
            out.extend_from_slice(&(event.len() as u32).to_be_bytes());
            out.extend_from_slice(event);
        }
    }
}

impl Arena {
    /// Adds an entry for `user`, whose last run is `last`; returns the user's last run now.
    fn push(&mut self, user: u32, last: u32, event: Option<&[u8]>) -> u32 {
        let len = kept_len(event);
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= len);
        if !fits {
            self.chunks.push(Vec::with_capacity(ARENA_CHUNK.max(len)));
        }
        let chunk = self.chunks.len() - 1;
        let buf = &mut self.chunks[chunk];
        let start = buf.len();
        put_entry(event, buf);
        // A chunk is at most as long as a framed record or `ARENA_CHUNK`, both below 4 GiB.
        let (chunk, start, end) = (chunk as u32, start as u32, buf.len() as u32);
        if let Some(run) = self.runs.get_mut(last as usize)
            && run.chunk == chunk
            && run.end == start
        {
            run.end = end;
            return last;
        }
        let index = u32::try_from(self.runs.len()).expect("fewer than 2^32 runs in a replay");
        self.runs.push(Run {
            chunk,
            start,
            end,
            user,
            previous: last,
        });
        index
    }

    fn bytes(&self, run: &Run) -> &[u8] {
        &self.chunks[run.chunk as usize][run.range()]
    }

    /// Appends the entries of the chain of runs that ends at `last`, oldest first.
    fn write_chain(&self, last: u32, out: &mut Vec<u8>) {
        let mut chain = Vec::new();
        let mut run = last;
        while run != NO_RUN {
            chain.push(run);
            run = self.runs[run as usize].previous;
        }
        for &run in chain.iter().rev() {
            out.extend_from_slice(self.bytes(&self.runs[run as usize]));
        }
    }
}

/// The keys of the users [`Replay::keep`] met, by index, and found by their bytes: one buffer
/// of key bytes and a table of small indexes, instead of a boxed key and a map entry per user (a
/// tail of a million distinct users made a million boxes, and a table that left the cache).
#[derive(Default)]
struct KeptKeys {
    table: HashTable<u32>,
    bytes: Vec<u8>,
    /// Each key's hash and where it ends in `bytes`, by index.
    ends: Vec<(u64, usize)>,
}

impl KeptKeys {
    fn hash(key: &[u8]) -> u64 {
        FxBuildHasher.hash_one(key)
    }

    fn key(&self, index: usize) -> &[u8] {
        Self::key_in(&self.bytes, &self.ends, index)
    }

    /// The key at `index`, for a caller that holds the table mutably.
    fn key_in<'a>(bytes: &'a [u8], ends: &[(u64, usize)], index: usize) -> &'a [u8] {
        let start = index.checked_sub(1).map_or(0, |i| ends[i].1);
        &bytes[start..ends[index].1]
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        self.table
            .find(Self::hash(key), |&i| self.key(i as usize) == key)
            .map(|&i| i as usize)
    }

    /// The index of `key`, given the next one if it is new.
    fn find_or_add(&mut self, key: &[u8]) -> usize {
        let hash = Self::hash(key);
        let (table, bytes, ends) = (&mut self.table, &mut self.bytes, &mut self.ends);
        if let Some(&i) = table.find(hash, |&i| Self::key_in(bytes, ends, i as usize) == key) {
            return i as usize;
        }
        let index = ends.len();
        // A journal tail holds fewer records than u32 counts.
        let index_u32 = u32::try_from(index).expect("fewer than 2^32 users in a replay");
        table.insert_unique(hash, index_u32, |&i| ends[i as usize].0);
        bytes.extend_from_slice(key);
        ends.push((hash, bytes.len()));
        index
    }

    fn reserve(&mut self, users: usize) {
        let ends = &self.ends;
        self.table.reserve(users, |&i| ends[i as usize].0);
        self.ends.reserve(users);
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// A user [`Replay::keep`] met.
enum Kept {
    Events(KeptEvents),
    /// Applied and in `open`: its later records are applied too.
    Opened,
}

/// A user's records kept as bytes in the arena.
struct KeptEvents {
    /// Its last run in the arena ([`NO_RUN`] while it has none).
    last: u32,
    /// Bytes of its entries in [`KEPT_VERSION`]'s layout.
    len: usize,
    /// Whether any entry is an event (a flush alone changes nothing for a user replay has not
    /// seen otherwise).
    events: bool,
    /// Whether the last event ended its step, and the deadline its [`Settled`] gave.
    settled: bool,
    deadline: Option<Ts>,
    /// The plan before the first step that changed it, and after the last.
    plan: Option<Box<(Option<Name>, Option<Name>)>>,
}

impl Default for KeptEvents {
    fn default() -> Self {
        KeptEvents {
            last: NO_RUN,
            len: 0,
            events: false,
            settled: false,
            deadline: None,
            plan: None,
        }
    }
}

/// The variants of [`Record`] that [`Replay::keep`] reads by their index (a test pins them).
const RECORD_FLUSH_LEDGER: u32 = 4;
const RECORD_EVENT: u32 = 6;

impl Image {
    pub fn replay(&mut self) -> Replay<'_> {
        Replay {
            image: self,
            open: FxHashMap::default(),
            kept: KeptKeys::default(),
            kept_users: Vec::new(),
            last_kept: None,
            arena: Arena::default(),
        }
    }
}

impl Replay<'_> {
    /// Makes room for `users` users met by [`Replay::keep`] at once: a tail of records that each
    /// meet another user (a burst of distinct users) otherwise rehashes the map again and again
    /// as it doubles.
    pub fn reserve_users(&mut self, users: usize) {
        self.kept.reserve(users);
        self.kept_users.reserve(users);
    }

    /// Applies a record the caller no longer needs. Returns what left memory with a user's event.
    pub fn apply_owned(&mut self, record: Record) -> Result<Applied, CodecError> {
        match record {
            Record::User { key, event } | Record::Event { key, event, .. } => {
                self.apply_event(&key, event)
            }
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

    /// A record given as the journal's bytes, whose history is on disk already: a user's event or
    /// ledger flush is kept as bytes for a user replay has not opened, and applied for one it has;
    /// any other record is applied. What leaves memory is not returned: it is on disk.
    pub fn keep(&mut self, record: &[u8]) -> Result<(), CodecError> {
        let (variant, at) = codec::decode_prefix::<u32>(record)?;
        if variant != RECORD_EVENT && variant != RECORD_FLUSH_LEDGER {
            return self.apply_owned(codec::decode_record(record)?).map(drop);
        }
        let (_, key_len) = codec::decode_prefix::<(&[u8], Mode, &[u8])>(&record[at..])?;
        let (key, rest) = record[at..].split_at(key_len);
        // A step's records follow each other: most records are the previous one's user.
        let index = match self.last_kept {
            Some(index) if self.kept.key(index) == key => index,
            _ => {
                let index = self.kept.find_or_add(key);
                if index == self.kept_users.len() {
                    self.kept_users.push(Kept::Events(KeptEvents::default()));
                }
                self.last_kept = Some(index);
                index
            }
        };
        let kept = match &mut self.kept_users[index] {
            Kept::Events(kept) => kept,
            Kept::Opened => return self.apply_owned(codec::decode_record(record)?).map(drop),
        };
        let event = if variant == RECORD_FLUSH_LEDGER {
            None
        } else {
            let (settled, used) = codec::decode_prefix::<Option<Settled>>(rest)?;
            kept.events = true;
            kept.settled = settled.is_some();
            if let Some(settled) = settled {
                kept.deadline = settled.deadline;
                if let Some(mut plan) = settled.plan {
                    // The plan before the first change is kept; the one after, the newest.
                    if let Some(first) = kept.plan.take() {
                        plan.0 = first.0;
                    }
                    kept.plan = Some(plan);
                }
            }
            Some(&rest[used..])
        };
        kept.last = self.arena.push(index as u32, kept.last, event);
        kept.len += kept_len(event);
        if kept.len > KEPT_BYTES_MAX {
            self.open_kept(index)?;
        }
        Ok(())
    }

    /// Applies what [`Replay::keep`] kept of a user and opens it, so that its later records are
    /// applied.
    fn open_kept(&mut self, index: usize) -> Result<(), CodecError> {
        let Kept::Events(kept) = std::mem::replace(&mut self.kept_users[index], Kept::Opened)
        else {
            return Ok(());
        };
        let key: UserKey = codec::decode_record(self.kept.key(index))?;
        let base = self.image.users.remove(&key);
        if base.is_none() && !kept.events {
            // Nothing to apply a flush to. It stays opened, with no state until an event opens
            // it: were its later records kept again, a caller opening it now for an event would
            // leave them beside the state it opened, and they would be lost.
            return Ok(());
        }
        let mut state = match base {
            Some(packed) => packed.unpack()?,
            None => UserState::default(),
        };
        let before = active_plan(&state);
        let mut entries = Vec::with_capacity(kept.len);
        self.arena.write_chain(kept.last, &mut entries);
        apply_kept(&mut state, &entries)?;
        let after = active_plan(&state);
        recount(&mut self.image.subscribers, &key.app, before, after);
        self.open.insert(key, state);
        Ok(())
    }

    /// Opens a user [`Replay::keep`] kept before a record of it is applied.
    fn open_if_kept(&mut self, key: &UserKey) -> Result<(), CodecError> {
        if self.kept.is_empty() {
            return Ok(());
        }
        let key_bytes = codec::encode_bare(key)?;
        match self.kept.find(&key_bytes) {
            Some(index) => self.open_kept(index),
            None => Ok(()),
        }
    }

    /// A `Record::User` whose key the caller keeps: the key is copied only for a user not yet
    /// opened (recovery writes each record's history under its key).
    pub fn apply_event(&mut self, key: &UserKey, event: Arc<Event>) -> Result<Applied, CodecError> {
        self.open_if_kept(key)?;
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
        recount(&mut self.image.subscribers, &key.app, before, after);
        Ok(applied)
    }

    /// A `Record::FlushLedger` whose key the caller keeps.
    pub fn flush_ledger(&mut self, key: &UserKey) -> Result<Applied, CodecError> {
        self.open_if_kept(key)?;
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

    /// Packs every user replay opened back into the image, and every user it kept with the
    /// events it kept.
    pub fn finish(mut self) -> Result<(), CodecError> {
        for index in 0..self.kept_users.len() {
            if matches!(&self.kept_users[index], Kept::Events(k) if k.events && !k.settled) {
                // Its last step lost its end: this build's writer never splits a step across
                // batches, so only a journal it did not write has one; what the state holds
                // after it is known only by applying it.
                self.open_kept(index)?;
            }
        }
        // A user whose entries are one run gets a slice of its chunk. The entries of every user
        // with more runs are copied side by side into one buffer, in the order of the users'
        // indexes, by one pass over the runs in the order they were kept, so no run is looked
        // for at random. Each new form is the user's old form (shared, not copied) and its
        // entries, whose chunk or buffer lives until the last of them is dropped (the engine's
        // start joins and copies them into its own entries).
        let mut starts: Vec<Option<usize>> = Vec::with_capacity(self.kept_users.len());
        let mut total = 0usize;
        for kept in &self.kept_users {
            match kept {
                Kept::Events(kept) if self.arena.runs[kept.last as usize].previous != NO_RUN => {
                    starts.push(Some(total));
                    total += kept.len;
                }
                // One run, or opened in the meantime (its entries were applied).
                _ => starts.push(None),
            }
        }
        // Zeroed by `resize` rather than asked for zeroed: memory the allocator hands back from an
        // earlier replay is then written where it is, where a zeroed allocation of this size comes
        // as fresh pages, each a fault while the runs are copied in.
        #[allow(clippy::slow_vector_initialization)]
        let mut buffer = Vec::with_capacity(total);
        buffer.resize(total, 0u8);
        let mut next = starts.clone();
        let Arena { chunks, runs } = std::mem::take(&mut self.arena);
        for run in &runs {
            if let Some(at) = &mut next[run.user as usize] {
                let bytes = &chunks[run.chunk as usize][run.range()];
                buffer[*at..*at + bytes.len()].copy_from_slice(bytes);
                *at += bytes.len();
            }
        }
        let buffer = Bytes::from(buffer);
        let chunks: Vec<Bytes> = chunks.into_iter().map(Bytes::from).collect();
        for (index, kept) in std::mem::take(&mut self.kept_users).into_iter().enumerate() {
            let Kept::Events(kept) = kept else {
                continue;
            };
            let entries = match starts[index] {
                Some(start) => {
                    debug_assert_eq!(next[index], Some(start + kept.len), "filled exactly");
                    buffer.slice(start..start + kept.len)
                }
                None => {
                    let run = &runs[kept.last as usize];
                    debug_assert_eq!(run.range().len(), kept.len, "one run");
                    chunks[run.chunk as usize].slice(run.range())
                }
            };
            let key: UserKey = codec::decode_record(self.kept.key(index))?;
            if let Some(plan) = kept.plan {
                let (before, after) = *plan;
                recount(&mut self.image.subscribers, &key.app, before, after);
            }
            // One lookup per user: its old form is replaced in place.
            match self.image.users.entry(key) {
                Entry::Occupied(mut user) => {
                    let base = user.get();
                    let deadline = if kept.settled {
                        kept.deadline
                    } else {
                        base.deadline
                    };
                    let bytes = Packed::kept(Some(base), entries)?;
                    *user.get_mut() = Packed { bytes, deadline };
                }
                Entry::Vacant(user) => {
                    // A flush alone changes nothing for a user that had no state.
                    if kept.events {
                        let deadline = kept.settled.then_some(kept.deadline).flatten();
                        let bytes = Packed::kept(None, entries)?;
                        user.insert(Packed { bytes, deadline });
                    }
                }
            }
        }
        for (key, state) in self.open {
            self.image.users.insert(key, Packed::pack(&state)?);
        }
        Ok(())
    }
}

impl Packed {
    /// The bytes of `base` (or of no user) followed by kept `entries`, in [`KEPT_VERSION`]'s
    /// layout.
    fn kept(base: Option<&Packed>, entries: Bytes) -> Result<PackedBytes, CodecError> {
        let base = match base.map(|b| &b.bytes) {
            None => Bytes::new(),
            Some(PackedBytes::Whole(bytes)) if !base.is_some_and(Packed::is_kept) => bytes.clone(),
            Some(_) => {
                return Err(CodecError::Encode {
                    kind: FrameKind::History,
                    reason: "kept events after kept events".to_owned(),
                });
            }
        };
        let base_len = u32::try_from(base.len()).map_err(|_| CodecError::Encode {
            kind: FrameKind::History,
            reason: "a packed user larger than 4 GiB".to_owned(),
        })?;
        let mut head = [0u8; KEPT_HEAD];
        head[..2].copy_from_slice(&KEPT_VERSION.to_be_bytes());
        head[2..].copy_from_slice(&base_len.to_be_bytes());
        Ok(PackedBytes::Kept(Box::new(KeptParts {
            head,
            base,
            entries,
        })))
    }
}

/// The packed form and the entries of [`KEPT_VERSION`]'s payload.
fn split_kept(payload: &[u8]) -> Result<(&[u8], &[u8]), CodecError> {
    let damaged = || CodecError::Decode {
        kind: FrameKind::History,
        reason: "kept events: a length runs past the end".to_owned(),
    };
    let (len, rest) = payload.split_first_chunk::<4>().ok_or_else(damaged)?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return Err(damaged());
    }
    Ok(rest.split_at(len))
}

/// Applies kept entries in order; what leaves memory is on disk already.
fn apply_kept(state: &mut UserState, mut entries: &[u8]) -> Result<(), CodecError> {
    let damaged = |what: &str| CodecError::Decode {
        kind: FrameKind::History,
        reason: format!("kept events: {what}"),
    };
    while let Some((&kind, rest)) = entries.split_first() {
        match kind {
            KEPT_FLUSH => {
                state.flush_ledger();
                entries = rest;
            }
            KEPT_EVENT => {
                let (len, rest) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| damaged("a length runs past the end"))?;
                let len = u32::from_be_bytes(*len) as usize;
                if len > rest.len() {
                    return Err(damaged("an event runs past the end"));
                }
                let (event, rest) = rest.split_at(len);
                let event: Event = codec::decode_record(event)?;
                state.apply_owned(Arc::new(event));
                entries = rest;
            }
            other => return Err(damaged(&format!("unknown entry {other}"))),
        }
    }
    Ok(())
}

fn active_plan(state: &UserState) -> Option<Name> {
    state.active_plan().cloned()
}

/// Moves a subscriber of `app` from plan `before` to plan `after`, if they differ.
fn recount(
    subscribers: &mut FxHashMap<(String, String), u64>,
    app: &str,
    before: Option<Name>,
    after: Option<Name>,
) {
    if before != after {
        count(subscribers, app, before, -1);
        count(subscribers, app, after, 1);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ids::UserId;
    use crate::engine::tests::user_key;

    #[test]
    fn the_record_variants_keep_reads_by_index_are_the_ones_it_means() {
        let key = user_key("u1");
        let variant = |record: &Record| {
            let bytes = codec::encode_bare(record).expect("encodes");
            codec::decode_prefix::<u32>(&bytes).expect("decodes").0
        };
        let event = Arc::new(Event {
            id: "evt_1".into(),
            at: Ts(0),
            kind: crate::engine::event::EventKind::UsageExpired {
                reservation_id: "res_1".into(),
            },
        });
        let record = Record::Event {
            key: key.clone(),
            settled: None,
            event,
        };
        assert_eq!(variant(&record), RECORD_EVENT);
        assert_eq!(
            variant(&Record::FlushLedger { key: key.clone() }),
            RECORD_FLUSH_LEDGER
        );
        // The key follows the variant as `UserKey` itself encodes.
        let bytes = codec::encode_bare(&record).expect("encodes");
        let (_, at) = codec::decode_prefix::<u32>(&bytes).expect("variant");
        let (_, len) = codec::decode_prefix::<(&str, Mode, &str)>(&bytes[at..]).expect("key");
        assert_eq!(
            &bytes[at..at + len],
            codec::encode_bare(&key).expect("encodes")
        );
    }

    #[test]
    fn an_image_reads_back_its_users_through_a_snapshot() {
        let mut image = Image::default();
        for n in 0..1000 {
            let key = UserKey {
                app: "app".into(),
                mode: if n % 2 == 0 { Mode::Live } else { Mode::Test },
                user: UserId::parse(&format!("u{n}")).expect("a user id"),
            };
            let mut state = UserState::default();
            let counter = crate::engine::user::Counter {
                window: Ts(n),
                used: n as u64,
                reserved: 0,
                limit_reached_noticed: false,
            };
            state
                .counters
                .insert(("pro".into(), "images".into()), counter);
            image
                .users
                .insert(key, Packed::pack(&state).expect("packs"));
        }
        let bytes = codec::encode_snapshot(7, &image).expect("encodes");
        let (seq, read) = codec::decode_snapshot::<Image>(&bytes).expect("decodes");
        assert_eq!((seq, &read), (7, &image));
        // Read while borrowing from the snapshot, the forms are slices of it, equal all the same.
        let source = Bytes::from(bytes);
        let (_, shared) =
            borrowing_from(&source, || codec::decode_snapshot::<Image>(&source)).expect("decodes");
        assert_eq!(shared, image);
        let within = source.as_ptr_range();
        assert!(
            shared
                .users
                .values()
                .all(|p| within.contains(&p.parts()[0].as_ptr()))
        );
        assert!(
            !read
                .users
                .values()
                .any(|p| within.contains(&p.parts()[0].as_ptr()))
        );
    }

    /// A user granted a pack and then consuming `consumes` times, kept by replay as bytes.
    fn kept_user(consumes: usize) -> (UserState, Packed) {
        use crate::engine::tests::{World, pack};
        let key = user_key("u1");
        let mut w = World::with(
            vec![],
            vec![pack("img", &[("i", "image.*", 100_000)], None)],
        );
        w.grant_one("img", "r");
        for _ in 0..consumes {
            w.consume("image.flux", 1).expect("consume");
        }
        let mut image = Image::default();
        keep_steps(&mut image, &key, &w.journal, &w.state);
        (w.state, image.users.remove(&key).expect("a user"))
    }

    /// Replays `events` of `key` into `image` as startup does for a sleeping user: each record
    /// kept as the journal's bytes, the step settled on `state`, then finished.
    fn keep_steps(image: &mut Image, key: &UserKey, events: &[Event], state: &UserState) {
        let events = events.iter().cloned().map(Arc::new).collect();
        let settled = Settled::of(state, None);
        let mut replay = image.replay();
        for record in Record::events(key, events, settled) {
            replay
                .keep(&codec::encode_bare(&record).expect("encodes"))
                .expect("keeps");
        }
        replay.finish().expect("packs");
    }

    /// A user with no state whose first record in the tail is a ledger flush, then an event
    /// applied (as a batch of an earlier build is, decoded), then records kept as bytes: every
    /// event reaches the state it is packed with.
    #[test]
    fn a_user_opened_after_a_lone_flush_has_every_later_record_applied() {
        use crate::engine::tests::{World, pack};
        let key = user_key("u1");
        let mut w = World::with(vec![], vec![pack("img", &[("i", "image.*", 100)], None)]);
        w.grant_one("img", "r");
        let granted = w.journal.len();
        w.consume("image.flux", 3).expect("consume");
        let events: Vec<Arc<Event>> = w.journal.iter().cloned().map(Arc::new).collect();
        let mut image = Image::default();
        let mut replay = image.replay();
        let flush = Record::FlushLedger { key: key.clone() };
        replay
            .keep(&codec::encode_bare(&flush).expect("encodes"))
            .expect("keeps");
        for event in &events[..granted] {
            replay.apply_event(&key, event.clone()).expect("applies");
        }
        let settled = Settled::of(&w.state, None);
        for record in Record::events(&key, events[granted..].to_vec(), settled) {
            replay
                .keep(&codec::encode_bare(&record).expect("encodes"))
                .expect("keeps");
        }
        replay.finish().expect("packs");
        let packed = image.users.remove(&key).expect("a user");
        assert_eq!(packed.unpack().expect("unpacks"), w.state);
    }

    #[test]
    fn a_packed_form_is_as_wide_as_its_bytes() {
        // A snapshot's users map holds a million of them.
        assert_eq!(size_of::<PackedBytes>(), size_of::<Bytes>());
    }

    /// A user in a snapshot with records kept after it: its new form holds the old one as a slice
    /// of the snapshot (shared, not copied), and joined, as the engine stores it or a snapshot
    /// writes it, unpacks to the state that applying every record gives.
    #[test]
    fn a_kept_users_form_shares_its_old_form_and_joins_into_what_is_stored() {
        use crate::engine::tests::{World, pack};
        let key = user_key("u1");
        let mut w = World::with(vec![], vec![pack("img", &[("i", "image.*", 100)], None)]);
        w.grant_one("img", "r");
        let mut image = Image::default();
        image
            .users
            .insert(key.clone(), Packed::pack(&w.state).expect("packs"));
        let source = Bytes::from(codec::encode_snapshot(1, &image).expect("encodes"));
        let (_, mut image) =
            borrowing_from(&source, || codec::decode_snapshot::<Image>(&source)).expect("decodes");
        let granted = w.journal.len();
        w.consume("image.flux", 3).expect("consume");
        w.consume("image.flux", 4).expect("consume");
        keep_steps(&mut image, &key, &w.journal[granted..], &w.state);

        let packed = &image.users[&key];
        assert!(packed.is_kept());
        let [_, base, entries] = packed.parts();
        assert!(!entries.is_empty());
        assert!(
            source.as_ptr_range().contains(&base.as_ptr()),
            "the old form is shared"
        );
        let joined = packed.parts().concat();
        assert_eq!(joined.len(), packed.len());
        assert_eq!(Packed::unpack_bytes(&joined).expect("unpacks"), w.state);
        assert_eq!(packed.unpack().expect("unpacks"), w.state);
        assert_eq!(packed.deadline, next_deadline(&w.state));

        let bytes = codec::encode_snapshot(2, &image).expect("encodes");
        let (_, read) = codec::decode_snapshot::<Image>(&bytes).expect("decodes");
        assert_eq!(read, image, "written whole, read back equal");
        assert_eq!(read.users[&key].parts()[0], &joined[..]);
        assert_eq!(read.users[&key].unpack().expect("unpacks"), w.state);
    }

    #[test]
    fn a_kept_user_unpacks_to_the_applied_state_and_past_the_bound_is_applied_at_once() {
        let version = |packed: &Packed| split_version(packed.parts()[0]).expect("versioned").0;
        let (state, packed) = kept_user(10);
        assert_eq!(version(&packed), KEPT_VERSION, "kept as bytes");
        assert!(packed.is_kept());
        assert!(packed.len() < KEPT_BYTES_MAX);
        assert_eq!(packed.unpack().expect("unpacks"), state);
        assert_eq!(packed.deadline, next_deadline(&state));

        let (state, packed) = kept_user(1_000);
        assert_eq!(version(&packed), PACKED_VERSION, "applied past the bound");
        assert!(!packed.is_kept());
        assert_eq!(packed.unpack().expect("unpacks"), state);
    }
}
