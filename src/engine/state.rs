//! The whole engine's state as the journal describes it, and the journal's record type.
//!
//! Live operation keeps this state spread over actors; recovery and snapshots keep it in one value.
//! Both change it only through [`UserState::apply`] and [`Catalog::apply`], so replay equals live.

use super::catalog::{Catalog, CatalogChange};
use super::event::Event;
use super::ids::UserId;
use super::name::Name;
use super::time::Ts;
use super::user::{Applied, UserState};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mode {
    Live,
    Test,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Test => "test",
        }
    }
}

/// Who a user is: the same user id in two apps, or in two modes, are two users.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserKey {
    pub app: Name,
    pub mode: Mode,
    pub user: UserId,
}

/// A stored answer to a request that carried an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// SHA-256 of method, path and body: a reuse of the key with anything else is refused.
    pub fingerprint: [u8; 32],
    pub status: u16,
    pub body: Vec<u8>,
    pub at: Ts,
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    User {
        key: UserKey,
        #[serde(deserialize_with = "super::event::deserialize_shared")]
        event: Arc<Event>,
    },
    Catalog {
        app: String,
        change: CatalogChange,
    },
    /// The test clock of an app moved to `offset_ms` ahead of real time.
    TestClock {
        app: String,
        offset_ms: i64,
    },
    Answer {
        app: String,
        mode: Mode,
        key: String,
        answer: StoredAnswer,
    },
    /// A user going to sleep moves the ledger lines it still holds to disk as one (short) page.
    FlushLedger {
        key: UserKey,
    },
    /// Stripe refunded the whole of a payment intent that no checkout has granted from yet:
    /// remembered, so that its checkout, if it comes, is revoked at once. `at` is the wall clock
    /// when the refund arrived; it lives in the history store only.
    RefundBeforeCheckout {
        app: String,
        mode: Mode,
        intent: String,
        charge_id: String,
        at: Ts,
    },
    /// A user's event, as this build writes it; [`Record::User`] is what earlier builds wrote.
    /// `settled` sits before the event so that a reader can take it without decoding the event.
    Event {
        key: UserKey,
        settled: Option<Settled>,
        #[serde(deserialize_with = "super::event::deserialize_shared")]
        event: Arc<Event>,
    },
}

/// What a user's state holds once the events of one step are applied, carried by the step's last
/// record: replay can then leave a sleeping user's events unapplied, as bytes, and still know
/// when to wake it and whom it subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// [`super::next_deadline`] of the state.
    pub deadline: Option<Ts>,
    /// The active plan before the step and after it, when the step changed it (boxed: rare, and
    /// every queued record holds room for a `Settled`).
    pub plan: Option<Box<(Option<Name>, Option<Name>)>>,
}

impl Settled {
    /// What `state` holds after a step that began on `plan_before`.
    pub fn of(state: &UserState, plan_before: Option<Name>) -> Settled {
        let plan_after = state.active_plan();
        Settled {
            deadline: super::next_deadline(state),
            plan: (plan_before.as_ref() != plan_after)
                .then(|| Box::new((plan_before, plan_after.cloned()))),
        }
    }
}

impl Record {
    /// The records of one step of a user: its events, the last one settled.
    pub fn events(
        key: &UserKey,
        events: Vec<Arc<Event>>,
        settled: Settled,
    ) -> impl Iterator<Item = Record> + '_ {
        let last = events.len().saturating_sub(1);
        let mut settled = Some(settled);
        events
            .into_iter()
            .enumerate()
            .map(move |(i, event)| Record::Event {
                key: key.clone(),
                settled: if i == last { settled.take() } else { None },
                event,
            })
    }
}

/// The live state of the whole engine. History (ledger pages, ended reservations, stored answers)
/// is not in it: `apply` hands that over as it goes, and the history store keeps it on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineState {
    pub catalogs: FxHashMap<String, Catalog>,
    pub test_clock_offsets_ms: FxHashMap<String, i64>,
    pub users: FxHashMap<UserKey, UserState>,
}

impl EngineState {
    /// Applies a record the caller no longer needs, moving its event into the user's ledger.
    /// Returns what left memory with a user's event.
    pub fn apply_owned(&mut self, record: Record) -> Applied {
        match record {
            Record::User { key, event } | Record::Event { key, event, .. } => {
                match self.users.get_mut(&key) {
                    Some(user) => user.apply_owned(event),
                    None => self.users.entry(key).or_default().apply_owned(event),
                }
            }
            other => self.apply(&other),
        }
    }

    pub fn apply(&mut self, record: &Record) -> Applied {
        match record {
            Record::User { key, event } | Record::Event { key, event, .. } => {
                return self.users.entry(key.clone()).or_default().apply(event);
            }
            Record::Catalog { app, change } => {
                self.catalogs.entry(app.clone()).or_default().apply(change);
            }
            Record::TestClock { app, offset_ms } => {
                self.test_clock_offsets_ms.insert(app.clone(), *offset_ms);
            }
            // Stored answers and early refunds live in the history store only.
            Record::Answer { .. } | Record::RefundBeforeCheckout { .. } => {}
            Record::FlushLedger { key } => {
                if let Some(user) = self.users.get_mut(key) {
                    return user.flush_ledger();
                }
            }
        }
        Applied::default()
    }
}

impl UserKey {
    /// A stable 64-bit fingerprint of the user, carried in the ids the user's actor issues so that a
    /// request naming only an id (`GET /v1/reservations/{id}`) finds its user without an index of
    /// every id.
    pub fn tag(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.app.as_bytes());
        hash.update([0, self.mode as u8, 0]);
        hash.update(self.user.as_str().as_bytes());
        let digest = hash.finalize();
        u64::from_be_bytes(
            digest[..8]
                .try_into()
                .expect("a SHA-256 digest has 32 bytes"),
        )
    }
}

/// The user tag an id carries after its last `_`, if any.
pub fn tag_of_id(id: &str) -> Option<u64> {
    let (_, tag) = id.rsplit_once('_')?;
    (tag.len() == 16)
        .then(|| u64::from_str_radix(tag, 16).ok())
        .flatten()
}
