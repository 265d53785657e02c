//! The history store: what has left the live state, on disk beside the journal.
//!
//! Sled trees (through [`KvTree`], so sled stays behind the journal module):
//!
//! | tree           | key                                  | value                              |
//! |----------------|--------------------------------------|------------------------------------|
//! | `ledger`       | user prefix + sort part of first id  | one page of ledger lines           |
//! | `ended`        | user prefix, `~`, millisecond of the | ids of the reservations it ended   |
//! |                | reservations, key of the page        | that a page before it had begun    |
//! | `request_keys` | user prefix + Idempotency-Key        | reservation id and its creation    |
//! | `answers`      | app, mode and Idempotency-Key        | the stored answer                  |
//! | `payments`     | app, mode, payment intent, balance   | the user the balance belongs to    |
//! | `events`       | app, mode, sort part of the event id | the user and the outgoing event    |
//! | `undelivered`  | the same key as in `events`          | the journal sequence it is durable at |
//! | `early_refunds`| app, mode, `i`, payment intent       | the refund's charge and its time   |
//! |                | app, mode, `a`, time, payment intent | nothing: the same refunds by age   |
//! | `written`      | `below`                              | every batch that begins below this |
//! |                |                                      | sequence has all of its history    |
//!
//! `early_refunds` holds full Stripe refunds whose payment intent had granted nothing when they
//! arrived (Stripe does not promise to deliver a checkout before its refund). It is bounded by
//! age ([`EARLY_REFUND_KEEP_MS`], by the wall clock) and by count per app and mode
//! ([`EARLY_REFUNDS_PER_MODE_MAX`]): the oldest go first.
//!
//! The user prefix is the app, the mode and the user id, each followed by a zero byte (none of
//! them can hold one), so one user's keys never run into another's. A page is keyed by the sort
//! part of its oldest line's id (ids of one user sort in the order they were made), so the page
//! that holds any id is the last page keyed at or below it.
//!
//! Everything here is written by the journal writer, right after the journal batch it comes from,
//! and made durable by the same sync. sled's log comes back from a crash as a prefix, so a crash
//! can keep a batch without its history but never history without its batch, and only the newest
//! batch can have lost any (every older one has a batch after it). After a batch's history the
//! writer marks the batch written (`written`); unless the mark covers the newest batch, recovery
//! writes again what that batch caused (every key with the value it had), so a crash between the
//! writes loses nothing, and then marks every batch it replayed. The one exception: an event
//! already in `events` is not put back in `undelivered`, so replay does not send again what was
//! delivered.

use super::codec::{CodecError, decode_value, encode_value};
use super::journal::{JournalError, KvRange, KvTree, SledJournal};
use crate::engine::event::EventKind;
use crate::engine::ids::UserId;
use crate::engine::ids::sort_part;
use crate::engine::ledger::LedgerLine;
use crate::engine::notice::SentNotice;
use crate::engine::state::StoredAnswer;
use crate::engine::user::{Applied, RequestKey, Reservation};
use crate::engine::{Mode, Name, Ts, UserKey};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] JournalError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("damaged history: {what}")]
    Damaged { what: &'static str },
}

/// One change to the history, handed to the journal writer with the records it comes from.
#[derive(Debug, Clone)]
pub enum HistoryWrite {
    Page {
        user: UserKey,
        lines: Arc<Vec<LedgerLine>>,
    },
    RequestKey {
        user: UserKey,
        key: RequestKey,
    },
    Payment {
        user: UserKey,
        intent: String,
        balance_id: Name,
    },
    Answer {
        app: String,
        mode: Mode,
        key: String,
        answer: StoredAnswer,
    },
    Notice {
        user: UserKey,
        notice: Box<SentNotice>,
        /// The journal sequence once the record that carries it is durable (set when it is
        /// queued, see [`HistoryWrite::durable_at`]; 0 for replayed records).
        durable_at: u64,
    },
    /// A full refund of a payment intent that had granted nothing yet; `at` by the wall clock.
    RefundBeforeCheckout {
        app: String,
        mode: Mode,
        intent: String,
        charge_id: String,
        at: Ts,
    },
}

impl HistoryWrite {
    /// Notes that the records this write comes from are durable once the journal reaches `end`.
    pub fn durable_at(mut self, end: u64) -> HistoryWrite {
        if let HistoryWrite::Notice { durable_at, .. } = &mut self {
            *durable_at = end;
        }
        self
    }

    /// The writes for what left a user's memory with one event.
    pub fn from_applied(user: &UserKey, applied: Applied, out: &mut Vec<HistoryWrite>) {
        if let Some(lines) = applied.page {
            out.push(HistoryWrite::Page {
                user: user.clone(),
                lines,
            });
        }
        if let Some(key) = applied.request_key {
            out.push(HistoryWrite::RequestKey {
                user: user.clone(),
                key,
            });
        }
        if let Some((intent, balance_id)) = applied.payment {
            out.push(HistoryWrite::Payment {
                user: user.clone(),
                intent,
                balance_id,
            });
        }
        if let Some(notice) = applied.notice {
            out.push(HistoryWrite::Notice {
                user: user.clone(),
                notice,
                durable_at: 0,
            });
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredRequestKey {
    reservation_id: Name,
    created_at: Ts,
}

/// An outgoing event as `events` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredNotice {
    pub user: UserId,
    pub notice: SentNotice,
}

/// Where an outgoing event is kept, for delivery to say which one it is done with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NoticeKey(Vec<u8>);

impl NoticeKey {
    /// The key of event `id` of the app and mode.
    pub fn of(app: &str, mode: Mode, id: &str) -> NoticeKey {
        NoticeKey(notice_key(app, mode, id))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key read back from a store that kept [`NoticeKey::as_bytes`].
    pub fn from_bytes(bytes: Vec<u8>) -> NoticeKey {
        NoticeKey(bytes)
    }
}

/// An event that is durable and not yet handed to delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub key: NoticeKey,
    pub app: String,
    pub mode: Mode,
    pub stored: StoredNotice,
}

/// Outgoing events are kept this long for `GET /v1/events` (API.md: the last 30 days).
pub const EVENTS_KEEP_MS: i64 = 30 * crate::engine::time::MS_PER_DAY;

/// Event keys one sweep looks at, at most: a pass (every 10 minutes) is bounded however far
/// behind it is, and drops up to 14.4 million events a day.
pub const EVENTS_SWEPT_PER_PASS_MAX: usize = 100_000;

#[derive(Serialize, Deserialize)]
struct StoredRefund {
    charge_id: String,
    at: Ts,
}

#[derive(Clone)]
pub struct History {
    ledger: KvTree,
    ended: KvTree,
    request_keys: KvTree,
    answers: KvTree,
    payments: KvTree,
    events: KvTree,
    undelivered: KvTree,
    early_refunds: KvTree,
    written: KvTree,
    /// How many early refunds each app and mode holds, by the key prefix of its scope; counted
    /// from the disk the first time a scope is written. The lock also keeps the journal writer's
    /// inserts and the sweep's removals from interleaving.
    early_refund_counts: Arc<Mutex<FxHashMap<Vec<u8>, u64>>>,
}

fn user_prefix(user: &UserKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(user.app.len() + user.user.as_str().len() + 4);
    key.extend_from_slice(user.app.as_bytes());
    key.push(0);
    key.push(mode_byte(user.mode));
    key.push(0);
    key.extend_from_slice(user.user.as_str().as_bytes());
    key.push(0);
    key
}

fn mode_byte(mode: Mode) -> u8 {
    match mode {
        Mode::Live => b'l',
        Mode::Test => b't',
    }
}

fn keyed(prefix: &[u8], rest: &str) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(rest.as_bytes());
    key
}

/// The first key after every key that starts with `prefix` (whose last byte is the zero
/// separator).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Marks the grouped keys of `ended`: reservation ids, which the older keys hold, start with
/// their prefix (`res_`).
const FAR_END_GROUP: u8 = b'~';

/// The key prefix under which the pages that ended reservations made in the same millisecond as
/// `reservation_id` list them: the user prefix, [`FAR_END_GROUP`], the ULID's time part (all of
/// the sort part for ids without one) and a zero byte; each page's own key follows.
fn far_end_group(prefix: &[u8], reservation_id: &str) -> Vec<u8> {
    let sort = sort_part(reservation_id);
    let millisecond = sort.get(..ULID_TIME_LEN).unwrap_or(sort);
    let mut key = Vec::with_capacity(prefix.len() + millisecond.len() + 2);
    key.extend_from_slice(prefix);
    key.push(FAR_END_GROUP);
    key.extend_from_slice(millisecond.as_bytes());
    key.push(0);
    key
}

/// Characters of a ULID that hold its millisecond.
const ULID_TIME_LEN: usize = 10;

/// Indexes the reservations a page ends whose `usage.reserved` line is in an earlier page (the
/// others are found through the page that holds that line). One key per page and millisecond of
/// the reservations, not one per reservation: with thousands of reservations open on one user,
/// every commit ends one made far back, and one sled insert each was most of the writer's time.
/// The keys depend only on the page, so replay writes them again unchanged.
fn index_far_ends(
    prefix: &[u8],
    page_key: &str,
    lines: &[LedgerLine],
    out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<(), HistoryError> {
    let begun_here: FxHashSet<&str> = lines
        .iter()
        .filter_map(|l| match &l.event.kind {
            EventKind::UsageReserved(r) => Some(r.reservation_id.as_str()),
            _ => None,
        })
        .collect();
    let mut groups: Vec<(Vec<u8>, Vec<&Name>)> = Vec::new();
    for line in lines {
        let Some(res) = &line.reservation else {
            continue;
        };
        if begun_here.contains(res.id.as_str()) {
            continue;
        }
        let group = far_end_group(prefix, &res.id);
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, ids)) => ids.push(&res.id),
            None => groups.push((group, vec![&res.id])),
        }
    }
    for (mut key, ids) in groups {
        key.extend_from_slice(page_key.as_bytes());
        out.push((key, Some(encode_value(&ids)?)));
    }
    Ok(())
}

fn answer_key(app: &str, mode: Mode, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(app.len() + key.len() + 3);
    out.extend_from_slice(app.as_bytes());
    out.push(0);
    out.push(mode_byte(mode));
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

/// `events` and `undelivered` key: the scope, then the event id's sort part (events of every user
/// of the scope sort by time) and the id itself (unique).
fn notice_key(app: &str, mode: Mode, id: &str) -> Vec<u8> {
    let mut key = answer_key(app, mode, sort_part(id));
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

fn payment_prefix(app: &str, mode: Mode, intent: &str) -> Vec<u8> {
    let mut key = answer_key(app, mode, intent);
    key.push(0);
    key
}

/// Stored answers and request keys are kept this long (API.md: 24 h).
pub const KEEP_MS: i64 = crate::engine::time::MS_PER_DAY;

/// A refund that arrived before its checkout is remembered this long, by the wall clock. Stripe
/// retries a webhook for up to three days, so a checkout that comes later than this is not a
/// delivery out of order.
pub const EARLY_REFUND_KEEP_MS: i64 = 30 * crate::engine::time::MS_PER_DAY;

/// At most this many early refunds are remembered per app and mode; past it the oldest is
/// forgotten (and logged). `charge.refunded` also comes for payments vevee never granted from
/// (subscriptions, other products), so this bound is reached by an account that refunds more
/// than this many of those in 30 days.
pub const EARLY_REFUNDS_PER_MODE_MAX: u64 = 100_000;

/// The two kinds of key in `early_refunds`, after the scope.
const BY_INTENT: u8 = b'i';
const BY_AGE: u8 = b'a';
/// The one key of `written`.
const WRITTEN_KEY: &[u8] = b"below";

fn early_refund_key(scope: &[u8], intent: &str) -> Vec<u8> {
    let mut key = scope.to_vec();
    key.push(BY_INTENT);
    key.extend_from_slice(intent.as_bytes());
    key
}

fn early_refund_age_key(scope: &[u8], at: Ts, intent: &str) -> Vec<u8> {
    let mut key = scope.to_vec();
    key.push(BY_AGE);
    // Wall-clock times are positive: big-endian bytes sort as the times do.
    key.extend_from_slice(&u64::try_from(at.0).unwrap_or(0).to_be_bytes());
    key.extend_from_slice(intent.as_bytes());
    key
}

/// The time and payment intent in an age key, after its scope and kind byte.
fn split_age_key(rest: &[u8]) -> Option<(Ts, &[u8])> {
    let (at, intent) = rest.split_first_chunk::<8>()?;
    Some((Ts(i64::try_from(u64::from_be_bytes(*at)).ok()?), intent))
}

impl History {
    pub fn open(journal: &SledJournal) -> Result<History, HistoryError> {
        Ok(History {
            ledger: journal.tree("ledger")?,
            ended: journal.tree("ended")?,
            request_keys: journal.tree("request_keys")?,
            answers: journal.tree("answers")?,
            payments: journal.tree("payments")?,
            events: journal.tree("events")?,
            undelivered: journal.tree("undelivered")?,
            early_refunds: journal.tree("early_refunds")?,
            written: journal.tree("written")?,
            early_refund_counts: Arc::default(),
        })
    }

    /// Writes a group of changes: one sled batch per tree. An event is delivered only once the
    /// journal is durable up to its own records' end (its `durable_at`).
    pub fn write(&self, writes: &[HistoryWrite]) -> Result<(), HistoryError> {
        let mut events = Vec::new();
        let mut undelivered = Vec::new();
        let mut ledger = Vec::new();
        let mut ended = Vec::new();
        let mut request_keys = Vec::new();
        let mut answers = Vec::new();
        let mut payments = Vec::new();
        for write in writes {
            match write {
                HistoryWrite::Page { user, lines } => {
                    let Some(first) = lines.first() else { continue };
                    let prefix = user_prefix(user);
                    let page_key = sort_part(&first.event.id);
                    ledger.push((keyed(&prefix, page_key), Some(encode_value(&**lines)?)));
                    index_far_ends(&prefix, page_key, lines, &mut ended)?;
                }
                HistoryWrite::RequestKey { user, key } => {
                    let stored = StoredRequestKey {
                        reservation_id: key.reservation_id.clone(),
                        created_at: key.created_at,
                    };
                    let k = keyed(&user_prefix(user), &key.key);
                    request_keys.push((k, Some(encode_value(&stored)?)));
                }
                HistoryWrite::Answer {
                    app,
                    mode,
                    key,
                    answer,
                } => answers.push((answer_key(app, *mode, key), Some(encode_value(answer)?))),
                HistoryWrite::Payment {
                    user,
                    intent,
                    balance_id,
                } => {
                    let mut key = payment_prefix(&user.app, user.mode, intent);
                    key.extend_from_slice(balance_id.as_bytes());
                    payments.push((key, Some(user.user.as_str().as_bytes().to_vec())));
                }
                HistoryWrite::Notice {
                    user,
                    notice,
                    durable_at: own,
                } => {
                    let key = notice_key(&user.app, user.mode, &notice.id);
                    // Replay writes it again: an event seen before was handed to delivery then.
                    if self.events.get(&key)?.is_some() {
                        continue;
                    }
                    let stored = StoredNotice {
                        user: user.user.clone(),
                        notice: (**notice).clone(),
                    };
                    events.push((key.clone(), Some(encode_value(&stored)?)));
                    undelivered.push((key, Some(own.to_be_bytes().to_vec())));
                }
                HistoryWrite::RefundBeforeCheckout {
                    app,
                    mode,
                    intent,
                    charge_id,
                    at,
                } => {
                    let scope = answer_key(app, *mode, "");
                    let max = EARLY_REFUNDS_PER_MODE_MAX;
                    self.remember_refund(&scope, intent, charge_id, *at, max)?;
                }
            }
        }
        for (tree, changes) in [
            (&self.ledger, ledger),
            (&self.ended, ended),
            (&self.request_keys, request_keys),
            (&self.answers, answers),
            (&self.payments, payments),
            (&self.events, events),
            (&self.undelivered, undelivered),
        ] {
            if !changes.is_empty() {
                tree.write(changes)?;
            }
        }
        Ok(())
    }

    /// [`History::write`] for the journal batch that ends before `end`, then
    /// [`History::mark_written`] up to `end`.
    pub fn write_batch(&self, end: u64, writes: &[HistoryWrite]) -> Result<(), HistoryError> {
        self.write(writes)?;
        self.mark_written(end)
    }

    /// Marks every journal batch that begins below `end` as having all of its history written.
    /// sled's log comes back from a crash as a prefix, so a mark found by
    /// [`History::written_below`] comes with everything written before it.
    pub fn mark_written(&self, end: u64) -> Result<(), HistoryError> {
        Ok(self.written.put(WRITTEN_KEY, &end.to_be_bytes())?)
    }

    /// The mark [`History::mark_written`] left: every batch that begins below it has all of its
    /// history written (0 when there is none).
    pub fn written_below(&self) -> Result<u64, HistoryError> {
        let Some(value) = self.written.get(WRITTEN_KEY)? else {
            return Ok(0);
        };
        let end = <[u8; 8]>::try_from(&value[..]).map_err(|_| HistoryError::Damaged {
            what: "the mark of the batches whose history is written",
        })?;
        Ok(u64::from_be_bytes(end))
    }

    /// The user's lines on disk, newest first: all of them, or from the page that holds
    /// `starting_at` on (lines newer than it in that page come first; the caller skips them).
    pub fn lines_newest_first(&self, user: &UserKey, starting_at: Option<&str>) -> Lines {
        let prefix = user_prefix(user);
        let end = match starting_at {
            // Up to and including the page keyed exactly at the id.
            Some(id) => {
                let mut end = keyed(&prefix, sort_part(id));
                end.push(0);
                end
            }
            None => prefix_end(&prefix),
        };
        Lines {
            pages: self.ledger.range(&prefix, &end).rev(),
            page: Vec::new(),
            error: None,
        }
    }

    /// A reservation that ended and whose line has been written here.
    pub fn ended(&self, user: &UserKey, id: &str) -> Result<Option<Reservation>, HistoryError> {
        let prefix = user_prefix(user);
        // Far from its start: the index names the page that ended it.
        let group = far_end_group(&prefix, id);
        for item in self.ended.scan_prefix(&group) {
            let (key, ids) = item?;
            let ids: Vec<Name> = decode_value(&ids)?;
            if ids.iter().any(|r| r == id) {
                let page_key = std::str::from_utf8(&key[group.len()..]).unwrap_or_default();
                return self.find_in_pages(&prefix, page_key, 1, id);
            }
        }
        // Written before far ends were grouped: one key per reservation, naming its line.
        if let Some(line_id) = self.ended.get(&keyed(&prefix, id))? {
            let line_id = String::from_utf8_lossy(&line_id).into_owned();
            return self.find_in_pages(&prefix, &line_id, 1, id);
        }
        // Near its start: its end is in the page that holds its `usage.reserved` line, which is
        // the last page keyed at or below the reservation's own id or the one after it.
        self.find_in_pages(&prefix, id, 2, id)
    }

    /// Looks for the line ending `id` in the page holding `around` and the `pages - 1` after it.
    fn find_in_pages(
        &self,
        prefix: &[u8],
        around: &str,
        pages: usize,
        id: &str,
    ) -> Result<Option<Reservation>, HistoryError> {
        let at = keyed(prefix, sort_part(around));
        let mut at_inclusive = at.clone();
        at_inclusive.push(0);
        let first = self.ledger.range(prefix, &at_inclusive).next_back();
        let after = self.ledger.range(&at_inclusive, &prefix_end(prefix));
        for item in first.into_iter().chain(after).take(pages) {
            let (_, value) = item?;
            let lines: Vec<LedgerLine> = decode_value(&value)?;
            if let Some(r) = lines.iter().find_map(|l| l.ended(id)) {
                return Ok(Some(r.clone()));
            }
        }
        Ok(None)
    }

    /// The reservation of an ended reserve with this `Idempotency-Key`, made after `since`.
    pub fn by_request_key(
        &self,
        user: &UserKey,
        key: &str,
        since: Ts,
    ) -> Result<Option<Name>, HistoryError> {
        let Some(value) = self.request_keys.get(&keyed(&user_prefix(user), key))? else {
            return Ok(None);
        };
        let stored: StoredRequestKey = decode_value(&value)?;
        Ok((stored.created_at > since).then_some(stored.reservation_id))
    }

    pub fn answer(
        &self,
        app: &str,
        mode: Mode,
        key: &str,
    ) -> Result<Option<StoredAnswer>, HistoryError> {
        match self.answers.get(&answer_key(app, mode, key))? {
            Some(value) => Ok(Some(decode_value(&value)?)),
            None => Ok(None),
        }
    }

    /// The balances a Stripe payment intent paid for, with their users.
    pub fn paid_balances(
        &self,
        app: &str,
        mode: Mode,
        intent: &str,
    ) -> Result<Vec<(String, String)>, HistoryError> {
        let prefix = payment_prefix(app, mode, intent);
        let mut out = Vec::new();
        for item in self.payments.scan_prefix(&prefix) {
            let (key, user) = item?;
            let balance = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            out.push((String::from_utf8_lossy(&user).into_owned(), balance));
        }
        Ok(out)
    }

    /// Remembers a refund before its checkout, once (a redelivery, or recovery writing it again,
    /// keeps the first), then forgets the oldest of its scope past `max` (the tests' stand-in for
    /// [`EARLY_REFUNDS_PER_MODE_MAX`]) and those older than [`EARLY_REFUND_KEEP_MS`] at `at`.
    fn remember_refund(
        &self,
        scope: &[u8],
        intent: &str,
        charge_id: &str,
        at: Ts,
        max: u64,
    ) -> Result<(), HistoryError> {
        let mut counts = self
            .early_refund_counts
            .lock()
            .expect("early refund counts poisoned");
        let key = early_refund_key(scope, intent);
        if self.early_refunds.get(&key)?.is_some() {
            return Ok(());
        }
        let mut by_age = scope.to_vec();
        by_age.push(BY_AGE);
        let count = match counts.get_mut(scope) {
            Some(count) => count,
            None => {
                let mut n = 0;
                for item in self.early_refunds.scan_prefix(&by_age) {
                    item?;
                    n += 1;
                }
                counts.entry(scope.to_vec()).or_insert(n)
            }
        };
        let stored = StoredRefund {
            charge_id: charge_id.to_owned(),
            at,
        };
        self.early_refunds.write([
            (key, Some(encode_value(&stored)?)),
            (early_refund_age_key(scope, at, intent), Some(Vec::new())),
        ])?;
        *count += 1;
        // The oldest first: by age past the keep time, then by count past the bound.
        while let Some(item) = self.early_refunds.scan_prefix(&by_age).next() {
            let (age_key, _) = item?;
            let Some((oldest_at, oldest)) = split_age_key(&age_key[by_age.len()..]) else {
                break;
            };
            let too_old = oldest_at.plus_ms(EARLY_REFUND_KEEP_MS) <= at;
            if !too_old && *count <= max {
                break;
            }
            let oldest = String::from_utf8_lossy(oldest).into_owned();
            if !too_old {
                tracing::warn!(
                    intent = %oldest,
                    max,
                    "too many refunds waiting for their checkout; forgetting the oldest"
                );
            }
            self.early_refunds.write([
                (age_key.to_vec(), None),
                (early_refund_key(scope, &oldest), None),
            ])?;
            *count = count.saturating_sub(1);
        }
        Ok(())
    }

    /// The charge that fully refunded `intent` before any checkout granted from it, if that was
    /// less than [`EARLY_REFUND_KEEP_MS`] before `wall_now`.
    pub fn refund_before_checkout(
        &self,
        app: &str,
        mode: Mode,
        intent: &str,
        wall_now: Ts,
    ) -> Result<Option<String>, HistoryError> {
        let key = early_refund_key(&answer_key(app, mode, ""), intent);
        let Some(value) = self.early_refunds.get(&key)? else {
            return Ok(None);
        };
        let stored: StoredRefund = decode_value(&value)?;
        Ok((stored.at.plus_ms(EARLY_REFUND_KEEP_MS) > wall_now).then_some(stored.charge_id))
    }

    /// Forgets early refunds older than [`EARLY_REFUND_KEEP_MS`] at `wall_now`. Returns how many.
    fn sweep_early_refunds(&self, wall_now: Ts) -> Result<u64, HistoryError> {
        let mut counts = self
            .early_refund_counts
            .lock()
            .expect("early refund counts poisoned");
        let mut old = Vec::new();
        for item in self.early_refunds.scan_prefix(&[]) {
            let (key, _) = item?;
            let Some(kind_at) = scope_len(&key) else {
                continue;
            };
            if key.get(kind_at) != Some(&BY_AGE) {
                continue;
            }
            let Some((at, intent)) = split_age_key(&key[kind_at + 1..]) else {
                continue;
            };
            if at.plus_ms(EARLY_REFUND_KEEP_MS) > wall_now {
                continue;
            }
            let scope = &key[..kind_at];
            let intent = String::from_utf8_lossy(intent);
            old.push((early_refund_key(scope, &intent), None));
            old.push((key.to_vec(), None));
            if let Some(count) = counts.get_mut(scope) {
                *count = count.saturating_sub(1);
            }
        }
        let dropped = old.len() as u64 / 2;
        self.early_refunds.write(old)?;
        Ok(dropped)
    }

    /// The scope's events newest first, from just before `starting_after` if given (`None` if
    /// that id is not one of the scope's events).
    pub fn events_newest_first(
        &self,
        app: &str,
        mode: Mode,
        starting_after: Option<&str>,
    ) -> Option<impl Iterator<Item = Result<StoredNotice, HistoryError>> + use<>> {
        let prefix = answer_key(app, mode, "");
        let end = match starting_after {
            Some(id) => {
                let key = notice_key(app, mode, id);
                self.events.get(&key).ok()??;
                key
            }
            None => prefix_end(&prefix),
        };
        Some(self.events.range(&prefix, &end).rev().map(|item| {
            let (_, value) = item?;
            Ok(decode_value::<StoredNotice>(&value)?)
        }))
    }

    /// Up to `max` events, oldest first, whose changes are durable (below `durable` in the
    /// journal) and that delivery has not taken yet.
    pub fn undelivered(&self, durable: u64, max: usize) -> Result<Vec<Undelivered>, HistoryError> {
        let mut out = Vec::new();
        for item in self.undelivered.scan_prefix(&[]) {
            if out.len() >= max {
                break;
            }
            let (key, value) = item?;
            let at = value
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if at > durable {
                continue;
            }
            let Some(stored) = self.events.get(&key)? else {
                continue;
            };
            let Some(scope) = scope_of(&key) else {
                continue;
            };
            out.push(Undelivered {
                key: NoticeKey(key.to_vec()),
                app: scope.0,
                mode: scope.1,
                stored: decode_value(&stored)?,
            });
        }
        Ok(out)
    }

    /// One event, if it is still kept.
    pub fn event(&self, key: &NoticeKey) -> Result<Option<StoredNotice>, HistoryError> {
        match self.events.get(&key.0)? {
            Some(value) => Ok(Some(decode_value(&value)?)),
            None => Ok(None),
        }
    }

    /// Forgets the events whose journal records never became durable: written here just before a
    /// flush that a crash cut off (`durable_at` past the journal's end after recovery). Without
    /// this they would be delivered once later records reached their sequence. Returns how many.
    pub fn forget_undurable(&self, journal_end: u64) -> Result<u64, HistoryError> {
        let mut gone = Vec::new();
        for item in self.undelivered.scan_prefix(&[]) {
            let (key, value) = item?;
            let at = value
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if at > journal_end {
                gone.push((key.to_vec(), None));
            }
        }
        let count = gone.len() as u64;
        if count > 0 {
            self.events.write(gone.clone())?;
            self.undelivered.write(gone)?;
        }
        Ok(count)
    }

    /// Delivery has taken these events (made its own durable records of them).
    pub fn taken(&self, keys: impl IntoIterator<Item = NoticeKey>) -> Result<(), HistoryError> {
        let changes: Vec<_> = keys.into_iter().map(|k| (k.0, None)).collect();
        if !changes.is_empty() {
            self.undelivered.write(changes)?;
        }
        Ok(())
    }

    /// Drops stored answers and request keys older than [`KEEP_MS`] by `now` of their app and
    /// mode, delivered events older than [`EVENTS_KEEP_MS`] of the apps `now` knows (at most
    /// [`EVENTS_SWEPT_PER_PASS_MAX`] looked at, see [`History::sweep_events`]), and early refunds
    /// older than [`EARLY_REFUND_KEEP_MS`] by `wall_now`. Returns how many were dropped. Reads
    /// check the age themselves: this only frees disk.
    pub fn sweep(
        &self,
        now: impl Fn(&str, Mode) -> Option<Ts>,
        wall_now: Ts,
    ) -> Result<u64, HistoryError> {
        let mut dropped = self.sweep_early_refunds(wall_now)?;
        let mut old = Vec::new();
        for item in self.answers.scan_prefix(&[]) {
            let (key, value) = item?;
            let answer: StoredAnswer = decode_value(&value)?;
            if scope_now(&key, &now).is_some_and(|now| answer.at.plus_ms(KEEP_MS) <= now) {
                old.push((key.to_vec(), None));
            }
        }
        dropped += old.len() as u64;
        self.answers.write(old)?;
        let mut old = Vec::new();
        for item in self.request_keys.scan_prefix(&[]) {
            let (key, value) = item?;
            let stored: StoredRequestKey = decode_value(&value)?;
            if scope_now(&key, &now).is_some_and(|now| stored.created_at.plus_ms(KEEP_MS) <= now) {
                old.push((key.to_vec(), None));
            }
        }
        dropped += old.len() as u64;
        self.request_keys.write(old)?;
        let known = |app: &str, mode: Mode| now(app, mode).is_some();
        dropped += self.sweep_events(wall_now, known, EVENTS_SWEPT_PER_PASS_MAX)?;
        Ok(dropped)
    }

    /// Drops events older than [`EVENTS_KEEP_MS`] at `wall_now` that delivery has taken, in the
    /// scopes (app and mode) that `known` accepts, looking at no more than `max` keys. Returns
    /// how many were dropped; a pass that stops at `max` leaves the rest to the next.
    ///
    /// By key range, reading no value: after its scope an event's key holds the sort part of its
    /// id, a ULID whose first characters are the wall-clock millisecond it was made at, so the
    /// old events of a scope are the keys from the scope up to the ULID of `wall_now` − 30 days.
    /// The wall clock in test mode too: an event's `createdAt` is no later than its id's time
    /// plus the test clock's offset, and the offset only grows, so an event 30 days old by its
    /// id is also 30 days old by its mode's clock. (One the test clock aged sooner is hidden by
    /// `GET /v1/events` and waits here for the wall clock.)
    fn sweep_events(
        &self,
        wall_now: Ts,
        known: impl Fn(&str, Mode) -> bool,
        max: usize,
    ) -> Result<u64, HistoryError> {
        let Ok(cutoff_ms) = u64::try_from(wall_now.0 - EVENTS_KEEP_MS) else {
            return Ok(0);
        };
        let cutoff = ulid::Ulid::from_parts(cutoff_ms, 0).to_string();
        let mut dropped = 0;
        let mut left = max;
        // One seek per scope: from the first key of the next scope on disk.
        let mut from: Vec<u8> = Vec::new();
        while left > 0 {
            let Some(first) = self.events.range_from(&from).next() else {
                break;
            };
            let (key, _) = first?;
            let Some(scope) = scope_len(&key).map(|len| key[..len].to_vec()) else {
                // Not an event key: step over it.
                from = key.to_vec();
                from.push(0);
                left -= 1;
                continue;
            };
            from = prefix_end(&scope);
            if !scope_of(&scope).is_some_and(|(app, mode)| known(&app, mode)) {
                continue;
            }
            let mut end = scope.clone();
            end.extend_from_slice(cutoff.as_bytes());
            let mut old = Vec::new();
            for item in self.events.range(&scope, &end).take(left) {
                let (key, _) = item?;
                left -= 1;
                // Not taken by delivery yet (its records are not durable): kept until it is.
                if self.undelivered.get(&key)?.is_none() {
                    old.push((key.to_vec(), None));
                }
            }
            dropped += old.len() as u64;
            self.events.write(old)?;
        }
        Ok(dropped)
    }
}

/// The length of the scope (app, zero, mode byte, zero) a key starts with.
fn scope_len(key: &[u8]) -> Option<usize> {
    let app_end = key.iter().position(|&b| b == 0)?;
    (key.get(app_end + 2) == Some(&0)).then_some(app_end + 3)
}

/// The app and mode a key starts with.
fn scope_of(key: &[u8]) -> Option<(String, Mode)> {
    let app_end = key.iter().position(|&b| b == 0)?;
    let app = std::str::from_utf8(&key[..app_end]).ok()?;
    let mode = match key.get(app_end + 1)? {
        b'l' => Mode::Live,
        b't' => Mode::Test,
        _ => return None,
    };
    Some((app.to_owned(), mode))
}

/// `now` for the app and mode a key starts with.
fn scope_now(key: &[u8], now: &impl Fn(&str, Mode) -> Option<Ts>) -> Option<Ts> {
    let (app, mode) = scope_of(key)?;
    now(&app, mode)
}

/// A user's ledger lines on disk, newest first, read a page at a time. A read error ends the
/// iteration and is kept in [`Lines::error`].
pub struct Lines {
    pages: std::iter::Rev<KvRange>,
    page: Vec<LedgerLine>,
    pub error: Option<HistoryError>,
}

impl Iterator for Lines {
    type Item = LedgerLine;

    fn next(&mut self) -> Option<LedgerLine> {
        loop {
            if let Some(line) = self.page.pop() {
                return Some(line);
            }
            if self.error.is_some() {
                return None;
            }
            let (_, value) = match self.pages.next()? {
                Ok(pair) => pair,
                Err(e) => {
                    self.error = Some(e.into());
                    return None;
                }
            };
            match decode_value::<Vec<LedgerLine>>(&value) {
                Ok(lines) => self.page = lines,
                Err(e) => {
                    self.error = Some(e.into());
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::notice::{Notice, NoticeData, NoticeType};
    use crate::engine::tests::{World, pack};
    use crate::engine::time::MS_PER_DAY;
    use crate::engine::user::{Subscription, SubscriptionStatus};

    fn user_key(user: &str) -> UserKey {
        UserKey {
            app: "app".into(),
            mode: Mode::Test,
            user: UserId::parse(user).expect("user id"),
        }
    }

    /// A user with 150 reservations open at once, ended newest first (so nearly every end lands
    /// pages after its start), then 40 consumes (whose ends sit beside their starts).
    fn far_and_near_ends() -> World {
        let mut w = World::with(vec![], vec![pack("img", &[("i", "image.*", 1_000)], None)]);
        w.grant_one("img", "r");
        let open: Vec<Name> = (0..150).map(|_| w.reserve_ok("image.flux", 1)).collect();
        for (i, id) in open.iter().rev().enumerate() {
            if i % 3 == 0 {
                w.release(id).expect("release");
            } else {
                w.commit(id, None).expect("commit");
            }
        }
        for _ in 0..40 {
            w.consume("image.flux", 1).expect("consume");
        }
        w
    }

    fn pages(user: &UserKey, w: &World) -> Vec<HistoryWrite> {
        w.past
            .pages
            .iter()
            .map(|lines| HistoryWrite::Page {
                user: user.clone(),
                lines: Arc::new(lines.clone()),
            })
            .collect()
    }

    #[test]
    fn every_reservation_whose_page_left_memory_is_found_again_however_far_its_end_was() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = SledJournal::open(dir.path()).expect("open");
        let history = History::open(&journal).expect("history");
        let (user, other) = (user_key("u_far"), user_key("u_other"));
        let w = far_and_near_ends();
        assert!(w.past.ended.len() >= 150, "most ends left memory");
        history.write(&pages(&user, &w)).expect("write");
        for (id, reservation) in &w.past.ended {
            let found = history.ended(&user, id).expect("readable");
            assert_eq!(found.as_ref(), Some(reservation), "{id}");
            assert_eq!(history.ended(&other, id).expect("readable"), None);
        }
        assert_eq!(history.ended(&user, "res_999999").expect("readable"), None);

        // Recovery writes the same pages again: the same keys, nothing added.
        let keys = || history.ended.scan_prefix(b"").count();
        let before = keys();
        assert!(before > 0 && before <= 150, "{before} index keys");
        history.write(&pages(&user, &w)).expect("write again");
        assert_eq!(keys(), before);
    }

    #[test]
    fn a_far_end_indexed_one_key_per_reservation_by_an_older_build_is_still_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = SledJournal::open(dir.path()).expect("open");
        let history = History::open(&journal).expect("history");
        let user = user_key("u_old");
        let w = far_and_near_ends();
        let prefix = user_prefix(&user);
        let (mut pages, mut index) = (Vec::new(), Vec::new());
        for lines in &w.past.pages {
            let key = keyed(&prefix, sort_part(&lines[0].event.id));
            pages.push((key, Some(encode_value(lines).expect("encode"))));
            for line in lines {
                if let Some(r) = &line.reservation {
                    let key = keyed(&prefix, &r.id);
                    index.push((key, Some(line.event.id.as_bytes().to_vec())));
                }
            }
        }
        history.ledger.write(pages).expect("pages");
        history.ended.write(index).expect("index");
        for (id, reservation) in &w.past.ended {
            let found = history.ended(&user, id).expect("readable");
            assert_eq!(found.as_ref(), Some(reservation), "{id}");
        }
    }

    #[test]
    fn reservations_made_in_the_same_millisecond_share_one_index_group() {
        let prefix = user_prefix(&user_key("u_ms"));
        let a = "res_01JD0000000000000000000000_00000000000000ab";
        let b = "res_01JD00000000ZZZZZZZZZZZZZZ_00000000000000ab";
        let c = "res_01JD0000010000000000000000_00000000000000ab";
        assert_eq!(far_end_group(&prefix, a), far_end_group(&prefix, b));
        assert_ne!(far_end_group(&prefix, a), far_end_group(&prefix, c));
    }

    fn refund(intent: &str, charge: &str, at: Ts) -> HistoryWrite {
        HistoryWrite::RefundBeforeCheckout {
            app: "app".into(),
            mode: Mode::Test,
            intent: intent.into(),
            charge_id: charge.into(),
            at,
        }
    }

    fn found(history: &History, intent: &str, now: Ts) -> Option<String> {
        history
            .refund_before_checkout("app", Mode::Test, intent, now)
            .expect("readable")
    }

    #[test]
    fn early_refunds_are_kept_once_per_intent_for_thirty_days_and_in_their_own_scope() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = SledJournal::open(dir.path()).expect("open");
        let history = History::open(&journal).expect("history");
        let t0 = Ts(1_800_000_000_000);
        history.write(&[refund("pi_1", "ch_1", t0)]).expect("write");
        // A redelivery (or recovery writing it again) keeps the first.
        let later = t0.plus_ms(1000);
        history
            .write(&[refund("pi_1", "ch_2", later)])
            .expect("write");
        assert_eq!(found(&history, "pi_1", later), Some("ch_1".into()));
        assert_eq!(found(&history, "pi_2", later), None);
        let live = history
            .refund_before_checkout("app", Mode::Live, "pi_1", later)
            .expect("readable");
        assert_eq!(live, None, "test and live mode share nothing");
        let last_moment = t0.plus_ms(EARLY_REFUND_KEEP_MS - 1);
        assert_eq!(found(&history, "pi_1", last_moment), Some("ch_1".into()));
        let expired = t0.plus_ms(EARLY_REFUND_KEEP_MS);
        assert_eq!(found(&history, "pi_1", expired), None);

        assert_eq!(history.sweep(|_, _| None, later).expect("sweep"), 0);
        assert_eq!(history.sweep(|_, _| None, expired).expect("sweep"), 1);
        // Gone from disk: remembered again from scratch.
        history
            .write(&[refund("pi_1", "ch_3", expired)])
            .expect("write");
        assert_eq!(found(&history, "pi_1", expired), Some("ch_3".into()));
    }

    #[test]
    fn past_the_bound_the_oldest_early_refund_is_forgotten_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = SledJournal::open(dir.path()).expect("open");
        let history = History::open(&journal).expect("history");
        let scope = answer_key("app", Mode::Test, "");
        let t0 = Ts(1_800_000_000_000);
        let at = |i: i64| t0.plus_ms(i * MS_PER_DAY / 10);
        for (i, intent) in ["pi_a", "pi_b", "pi_c", "pi_d"].iter().enumerate() {
            let at = at(i as i64);
            history
                .remember_refund(&scope, intent, "ch", at, 3)
                .expect("remember");
        }
        let now = at(4);
        assert_eq!(found(&history, "pi_a", now), None, "the oldest went");
        for intent in ["pi_b", "pi_c", "pi_d"] {
            assert!(found(&history, intent, now).is_some(), "{intent} kept");
        }
        // A count read from the disk agrees with the one kept in memory.
        let reopened = History::open(&journal).expect("history");
        reopened
            .remember_refund(&scope, "pi_e", "ch", at(5), 3)
            .expect("remember");
        assert_eq!(found(&reopened, "pi_b", now), None);
        assert!(found(&reopened, "pi_e", now).is_some());
        // And an old one goes by age whatever the count.
        let month_later = at(5).plus_ms(EARLY_REFUND_KEEP_MS);
        reopened
            .remember_refund(&scope, "pi_f", "ch", month_later, 3)
            .expect("remember");
        let left: Vec<_> = ["pi_c", "pi_d", "pi_e", "pi_f"]
            .into_iter()
            .filter(|i| found(&reopened, i, month_later).is_some())
            .collect();
        assert_eq!(left, ["pi_f"]);
        assert_eq!(reopened.early_refunds.scan_prefix(&[]).count(), 2);
    }

    fn notice(id: &str) -> HistoryWrite {
        notice_in("a", Mode::Test, id)
    }

    fn notice_in(app: &str, mode: Mode, id: &str) -> HistoryWrite {
        let subscription = Subscription {
            plan_id: "pro".into(),
            status: SubscriptionStatus::Active,
            current_period_start: Ts(0),
            created_at: Ts(0),
        };
        HistoryWrite::Notice {
            user: UserKey {
                app: app.into(),
                mode,
                user: UserId::parse("u").unwrap(),
            },
            notice: Box::new(SentNotice {
                id: id.into(),
                at: Ts(0),
                notice: Notice {
                    kind: NoticeType::SubscriptionUpdated,
                    data: NoticeData::Subscription(subscription),
                },
            }),
            durable_at: 0,
        }
    }

    #[test]
    fn an_event_goes_out_once_its_own_records_are_durable_and_is_forgotten_if_they_never_were() {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        let history = History::open(&journal).unwrap();
        // Queued with records ending at 7 and 12, written with the first part of a split batch.
        let writes = [
            notice("evt_01A").durable_at(7),
            notice("evt_01B").durable_at(12),
        ];
        history.write(&writes).unwrap();
        assert!(history.undelivered(6, 10).unwrap().is_empty());
        assert_eq!(history.undelivered(7, 10).unwrap().len(), 1);
        assert_eq!(history.undelivered(12, 10).unwrap().len(), 2);
        // A crash left the journal ending at 10: the second event's records are gone.
        assert_eq!(history.forget_undurable(10).unwrap(), 1);
        let left: Vec<_> = history.undelivered(u64::MAX, 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].stored.notice.id, "evt_01A");
        let kept: Vec<_> = history
            .events_newest_first("a", Mode::Test, None)
            .unwrap()
            .collect();
        assert_eq!(kept.len(), 1, "GET /v1/events does not show it either");
    }

    /// An event id as the user actors make them: a ULID of `ms` (wall clock), a user tag.
    fn event_id(ms: i64, n: u128) -> String {
        let ms = u64::try_from(ms).unwrap();
        format!("evt_{}_00000000000000a1", ulid::Ulid::from_parts(ms, n))
    }

    #[test]
    fn the_events_sweep_drops_delivered_events_past_thirty_days_by_key_range_a_bounded_number_a_pass()
     {
        let dir = tempfile::tempdir().unwrap();
        let journal = SledJournal::open(dir.path()).unwrap();
        let history = History::open(&journal).unwrap();
        let now = Ts(1_800_000_000_000);
        let old = now.0 - EVENTS_KEEP_MS - 1;
        let recent = now.0 - EVENTS_KEEP_MS + 60_000;
        let old_test: Vec<String> = (1..=3).map(|n| event_id(old - 10, n)).collect();
        let old_live: Vec<String> = (1..=2).map(|n| event_id(old, n)).collect();
        let undelivered = event_id(old, 9);
        let kept = [
            ("a", Mode::Test, event_id(recent, 1)),
            ("a", Mode::Live, event_id(recent, 2)),
            // An app the sweep is not told about: its events are left alone.
            ("gone", Mode::Test, event_id(old, 3)),
            ("a", Mode::Test, undelivered.clone()),
        ];
        let mut writes: Vec<HistoryWrite> = Vec::new();
        writes.extend(old_test.iter().map(|id| notice_in("a", Mode::Test, id)));
        writes.extend(old_live.iter().map(|id| notice_in("a", Mode::Live, id)));
        writes.extend(kept.iter().map(|(app, mode, id)| notice_in(app, *mode, id)));
        history.write(&writes).unwrap();
        // Delivery took them all but one.
        let taken: Vec<NoticeKey> = history
            .undelivered(u64::MAX, 100)
            .unwrap()
            .into_iter()
            .map(|u| u.key)
            .filter(|k| k != &NoticeKey::of("a", Mode::Test, &undelivered))
            .collect();
        history.taken(taken).unwrap();
        // An old event no decoder can read: the sweep goes by keys, it never reads a value.
        let unreadable = event_id(old, 7);
        let key = notice_key("a", Mode::Live, &unreadable);
        history
            .events
            .write([(key, Some(b"not an event".to_vec()))])
            .unwrap();

        let known = |app: &str, _: Mode| app == "a";
        let old_count = (old_test.len() + old_live.len() + 1) as u64;
        let mut dropped = Vec::new();
        loop {
            let n = history.sweep_events(now, known, 2).unwrap();
            assert!(n <= 2, "at most 2 keys looked at a pass, {n} dropped");
            if n == 0 {
                break;
            }
            dropped.push(n);
        }
        assert_eq!(dropped.iter().sum::<u64>(), old_count, "{dropped:?}");
        assert!(dropped.len() >= 3, "over several passes: {dropped:?}");
        let left: Vec<Vec<u8>> = history
            .events
            .scan_prefix(&[])
            .map(|item| item.unwrap().0.to_vec())
            .collect();
        let expected: Vec<Vec<u8>> = {
            let mut keys: Vec<Vec<u8>> = kept
                .iter()
                .map(|(app, mode, id)| notice_key(app, *mode, id))
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(left, expected);
        // Through `sweep`, with the clocks of the known apps: nothing more to drop.
        let clocks = |app: &str, _: Mode| (app == "a").then_some(now);
        assert_eq!(history.sweep(clocks, now).unwrap(), 0);
    }
}
