//! Replaying the journal into memory at startup, with the checks that keep it exact: every frame
//! verified, sequence numbers continuous, a torn last batch dropped, anything else stops.

use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::mpsc;

use super::codec::{self, BatchHeader, CodecError, OpenBatch};
use super::journal::{Journal, JournalError};

/// What a replay did; `next_seq` is the sequence number the writer must use next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// The sequence replay was asked to start from (the snapshot's `seq`, or 0).
    pub from_seq: u64,
    /// One past the last record in the journal, or `from_seq` if that is higher (an empty
    /// journal, or one that ends below the snapshot). Append the next batch here.
    pub next_seq: u64,
    /// Records handed to the callback (those at or above `from_seq`).
    pub records_replayed: u64,
    /// Batches read and verified, including a first one partly below `from_seq`.
    pub batches_read: u64,
    /// The torn last batch, if one was found and deleted.
    pub dropped_torn_batch: Option<DroppedBatch>,
}

/// A last batch that failed verification the way an interrupted write does, and was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedBatch {
    pub first_seq: u64,
    pub frame_len: usize,
    pub reason: CodecError,
}

/// Why a batch could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchDefect {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(
        "it is stored under sequence {key} but its header says it starts at {header_first_seq}"
    )]
    KeyMismatch { key: u64, header_first_seq: u64 },
    #[error("its record count overflows the sequence numbers")]
    SequenceOverflow,
}

/// Why recovery stopped. Each message says what is wrong and how an operator can proceed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(
        "journal batch starting at sequence {first_seq} cannot be read: {reason}. It holds \
         acknowledged writes (it is not the last batch, or it is well-formed but unreadable by \
         this build), so recovery stopped rather than serve wrong balances. To proceed: restore \
         the data directory from a backup; or run a build that reads it if it was written by a \
         newer one; or, accepting the loss of every write from sequence {first_seq} on, delete \
         the journal batches from sequence {first_seq} on (Journal::truncate_from({first_seq})) \
         and restart"
    )]
    CorruptBatch { first_seq: u64, reason: BatchDefect },
    #[error(
        "journal gap: expected a batch starting at sequence {expected}, but the next one starts \
         at {found}, so records {expected}..{found} are missing (lost batches, or the snapshot \
         that covered them is gone while the journal below it was already removed). Recovery \
         stopped rather than serve wrong balances. To proceed: restore the data directory (or \
         the missing snapshot) from a backup"
    )]
    Gap { expected: u64, found: u64 },
    #[error(
        "journal overlap: the batch at sequence {found} starts before the previous batch ends \
         (at {expected}); the journal is damaged. Recovery stopped rather than serve wrong \
         balances. To proceed: restore the data directory from a backup"
    )]
    Overlap { expected: u64, found: u64 },
}

/// Replays every record with sequence `>= from_seq` in order, calling `apply(seq, record)`.
///
/// Each batch is verified and decoded whole before any of its records reach `apply`, so `apply`
/// never sees part of a bad batch. A last batch that fails the way a torn write does (truncated,
/// bad checksum, bad magic) is logged, deleted and flushed away; the report names it. Any other
/// unreadable batch, a gap or an overlap stops recovery with an error, and records already given
/// to `apply` must then be discarded with the state being built.
pub fn replay<J, R, F>(
    journal: &mut J,
    from_seq: u64,
    apply: F,
) -> Result<ReplayReport, RecoveryError>
where
    J: Journal + Sync,
    R: DeserializeOwned + Send,
    F: FnMut(u64, R),
{
    replay_with(
        journal,
        from_seq,
        Decoding {
            apply,
            records: PhantomData,
        },
    )
}

/// A record as [`replay_stored`] hands it over.
#[derive(Debug)]
pub enum Stored<'a, R> {
    /// Its bytes, to decode with [`codec::decode_record`] or keep as they are.
    Bytes(&'a [u8]),
    /// Decoded: an earlier build's batch, whose records are found only by decoding them.
    Decoded(R),
}

/// [`replay`], handing over the records of this build's batches as bytes, for a caller that
/// decodes only some of them. Each batch is verified and its framing checked whole before any
/// of its records reach `apply`; a record's own bytes are the caller's to decode.
pub fn replay_stored<J, R, F>(
    journal: &mut J,
    from_seq: u64,
    apply: F,
) -> Result<ReplayReport, RecoveryError>
where
    J: Journal + Sync,
    R: DeserializeOwned + Send,
    F: FnMut(u64, Stored<'_, R>),
{
    replay_with(
        journal,
        from_seq,
        Opening {
            apply,
            records: PhantomData,
        },
    )
}

/// How [`replay_with`] reads a batch and hands its records over. Batches are read, verified
/// and decompressed ([`Reader::open`]) on a thread of their own, a few ahead of the caller's
/// thread, which hands their records over ([`Reader::hand`]): at startup the reading was a
/// third of replay's time, on a core that was idle.
trait Reader {
    /// A batch as [`Reader::open`] leaves it; its buffers go back to be used again.
    type Opened: Default + Send;
    fn open(frame: &[u8], opened: &mut Self::Opened) -> Result<BatchHeader, CodecError>;
    /// Hands over the records of `opened` whose sequence is at least `from_seq`; returns how
    /// many.
    fn hand(&mut self, opened: &mut Self::Opened, first_seq: u64, from_seq: u64) -> u64;
}

/// `R` is the record type `apply` takes.
struct Decoding<R, F> {
    apply: F,
    records: PhantomData<fn(R)>,
}

impl<R: DeserializeOwned + Send, F: FnMut(u64, R)> Reader for Decoding<R, F> {
    type Opened = Vec<R>;

    fn open(frame: &[u8], records: &mut Vec<R>) -> Result<BatchHeader, CodecError> {
        records.clear();
        codec::decode_batch_into(frame, records)
    }

    fn hand(&mut self, records: &mut Vec<R>, first_seq: u64, from_seq: u64) -> u64 {
        let mut handed = 0;
        for (seq, record) in (first_seq..).zip(records.drain(..)) {
            if seq >= from_seq {
                (self.apply)(seq, record);
                handed += 1;
            }
        }
        handed
    }
}

struct Opening<R, F> {
    apply: F,
    records: PhantomData<fn(R)>,
}

/// A batch of this build (its records' bytes in `buf`) or of an earlier one (`records`).
struct OpenedBatch<R> {
    buf: Vec<u8>,
    open: OpenBatch,
    records: Vec<R>,
}

impl<R> Default for OpenedBatch<R> {
    fn default() -> Self {
        OpenedBatch {
            buf: Vec::new(),
            open: OpenBatch::Bare,
            records: Vec::new(),
        }
    }
}

impl<R, F> Reader for Opening<R, F>
where
    R: DeserializeOwned + Send,
    F: FnMut(u64, Stored<'_, R>),
{
    type Opened = OpenedBatch<R>;

    fn open(frame: &[u8], opened: &mut OpenedBatch<R>) -> Result<BatchHeader, CodecError> {
        opened.records.clear();
        let (header, open) = codec::open_batch(frame, &mut opened.buf)?;
        if open == OpenBatch::Bare {
            codec::decode_batch_into(frame, &mut opened.records)?;
        }
        opened.open = open;
        Ok(header)
    }

    fn hand(&mut self, opened: &mut OpenedBatch<R>, first_seq: u64, from_seq: u64) -> u64 {
        let mut handed = 0;
        match std::mem::replace(&mut opened.open, OpenBatch::Bare) {
            OpenBatch::Framed(ranges) => {
                for (seq, range) in (first_seq..).zip(ranges) {
                    if seq >= from_seq {
                        (self.apply)(seq, Stored::Bytes(&opened.buf[range]));
                        handed += 1;
                    }
                }
            }
            OpenBatch::Bare => {
                for (seq, record) in (first_seq..).zip(opened.records.drain(..)) {
                    if seq >= from_seq {
                        (self.apply)(seq, Stored::Decoded(record));
                        handed += 1;
                    }
                }
            }
        }
        handed
    }
}

/// Batches go from the reading thread to the caller's in chunks of at least this many bytes
/// of frames (or the last ones): one hand-over per batch woke both threads tens of thousands of
/// times a second, which cost more than the reading saved.
const CHUNK_BYTES: usize = 1 << 18;
/// Chunks opened ahead of the one being handed over.
const CHUNKS_AHEAD: usize = 2;

/// Batches the reading thread opened, in order; `end` says why it stopped after them, if it did.
struct Chunk<O> {
    batches: Vec<Opened<O>>,
    end: Option<End>,
}

struct Opened<O> {
    key: u64,
    header: BatchHeader,
    opened: O,
}

enum End {
    /// The last batch, torn: replay ends before it.
    Torn(DroppedBatch),
    Failed(RecoveryError),
}

/// Reads, verifies and opens the batches from `from_seq` on, in order, until the end, the first
/// unreadable batch, or the caller stops listening. Chunks the caller has handed over come back
/// through `spent`, their buffers to be used again.
fn read_ahead<J: Journal, Rd: Reader>(
    journal: &J,
    from_seq: u64,
    out: &mpsc::SyncSender<Chunk<Rd::Opened>>,
    spent: &mpsc::Receiver<Vec<Opened<Rd::Opened>>>,
) {
    let mut batches = journal.batches_from(from_seq).peekable();
    let mut spare: Vec<Rd::Opened> = Vec::new();
    loop {
        let mut chunk = Chunk {
            batches: Vec::new(),
            end: None,
        };
        while let Ok(used) = spent.try_recv() {
            spare.extend(used.into_iter().map(|b| b.opened));
        }
        let mut bytes = 0;
        while bytes < CHUNK_BYTES && chunk.end.is_none() {
            let Some(item) = batches.next() else { break };
            match item {
                Err(error) => chunk.end = Some(End::Failed(error.into())),
                Ok((key, frame)) => {
                    let frame = frame.as_ref();
                    bytes += frame.len();
                    let mut opened = spare.pop().unwrap_or_default();
                    match Rd::open(frame, &mut opened) {
                        Ok(header) => chunk.batches.push(Opened {
                            key,
                            header,
                            opened,
                        }),
                        Err(reason) => {
                            chunk.end = Some(match is_last(&mut batches) {
                                Ok(true) if reason.looks_torn() => End::Torn(DroppedBatch {
                                    first_seq: key,
                                    frame_len: frame.len(),
                                    reason,
                                }),
                                Ok(_) => End::Failed(RecoveryError::CorruptBatch {
                                    first_seq: key,
                                    reason: reason.into(),
                                }),
                                Err(error) => End::Failed(error),
                            })
                        }
                    }
                }
            }
        }
        let last = chunk.end.is_some() || bytes < CHUNK_BYTES;
        if chunk.batches.is_empty() && chunk.end.is_none() {
            return;
        }
        if out.send(chunk).is_err() || last {
            return;
        }
    }
}

fn replay_with<J: Journal + Sync, Rd: Reader>(
    journal: &mut J,
    from_seq: u64,
    mut reader: Rd,
) -> Result<ReplayReport, RecoveryError> {
    let mut report = ReplayReport {
        from_seq,
        next_seq: from_seq,
        records_replayed: 0,
        batches_read: 0,
        dropped_torn_batch: None,
    };
    let mut expected: Option<u64> = None;
    let mut torn = None;
    let reading: &J = journal;
    std::thread::scope(|scope| {
        let (out, chunks) = mpsc::sync_channel(CHUNKS_AHEAD);
        let (spent_out, spent) = mpsc::channel();
        std::thread::Builder::new()
            .name("journal-read".into())
            .spawn_scoped(scope, move || {
                read_ahead::<J, Rd>(reading, from_seq, &out, &spent)
            })
            .expect("spawn the journal's reading thread");
        // Returning early drops `chunks`: the reading thread's next send fails and it stops.
        for mut chunk in chunks {
            for batch in &mut chunk.batches {
                let end = check_continuity(
                    batch.key,
                    batch.header,
                    expected.unwrap_or(from_seq),
                    expected.is_none(),
                )?;
                expected = Some(end);
                report.batches_read += 1;
                report.records_replayed += reader.hand(&mut batch.opened, batch.key, from_seq);
            }
            match chunk.end {
                Some(End::Torn(dropped)) => {
                    torn = Some(dropped);
                    break;
                }
                Some(End::Failed(error)) => return Err(error),
                // The reading thread may have stopped already.
                None => drop(spent_out.send(chunk.batches)),
            }
        }
        Ok(())
    })?;
    if let Some(dropped) = torn {
        drop_torn_batch(journal, &dropped)?;
        report.dropped_torn_batch = Some(dropped);
    }
    let end = expected.unwrap_or(from_seq);
    if end < from_seq {
        tracing::warn!(
            journal_end = end,
            from_seq,
            "the journal ends below the snapshot's sequence; continuing from the snapshot"
        );
    }
    report.next_seq = end.max(from_seq);
    Ok(report)
}

/// Collects every record with sequence `>= from_seq`; [`replay`] avoids holding them all.
pub fn read_records<J, R>(journal: &mut J, from_seq: u64) -> Result<Vec<(u64, R)>, RecoveryError>
where
    J: Journal + Sync,
    R: DeserializeOwned + Send,
{
    let mut out = Vec::new();
    replay(journal, from_seq, |seq, record| out.push((seq, record)))?;
    Ok(out)
}

/// The sequence number after the journal's last record, read from the last batch's verified
/// header alone (no decoding), or `None` for an empty journal. After [`replay`] prefer its
/// `next_seq`, which also accounts for the snapshot.
pub fn journal_end<J: Journal>(journal: &J) -> Result<Option<u64>, RecoveryError> {
    let Some((key, frame)) = journal.last_batch()? else {
        return Ok(None);
    };
    let corrupt = |reason: BatchDefect| RecoveryError::CorruptBatch {
        first_seq: key,
        reason,
    };
    let header = codec::verify_batch(frame.as_ref()).map_err(|e| corrupt(e.into()))?;
    if header.first_seq != key {
        return Err(corrupt(BatchDefect::KeyMismatch {
            key,
            header_first_seq: header.first_seq,
        }));
    }
    header
        .end_seq()
        .map(Some)
        .ok_or_else(|| corrupt(BatchDefect::SequenceOverflow))
}

fn is_last<I, T>(batches: &mut std::iter::Peekable<I>) -> Result<bool, RecoveryError>
where
    I: Iterator<Item = Result<T, JournalError>>,
{
    match batches.peek() {
        None => Ok(true),
        Some(Ok(_)) => Ok(false),
        // A read error on the next batch is a storage failure, not proof this one is last.
        Some(Err(_)) => {
            let error = batches.next().and_then(Result::err);
            Err(error.expect("peek just returned an error").into())
        }
    }
}

/// Checks a batch against the sequence it must start at and returns where it ends. The first
/// batch read may start below `expected` (it may hold the snapshot's sequence in its middle).
fn check_continuity(
    key: u64,
    header: BatchHeader,
    expected: u64,
    first: bool,
) -> Result<u64, RecoveryError> {
    let corrupt = |reason| RecoveryError::CorruptBatch {
        first_seq: key,
        reason,
    };
    if header.first_seq != key {
        return Err(corrupt(BatchDefect::KeyMismatch {
            key,
            header_first_seq: header.first_seq,
        }));
    }
    let end = header
        .end_seq()
        .ok_or_else(|| corrupt(BatchDefect::SequenceOverflow))?;
    if key > expected {
        return Err(RecoveryError::Gap {
            expected,
            found: key,
        });
    }
    if key < expected && !first {
        return Err(RecoveryError::Overlap {
            expected,
            found: key,
        });
    }
    Ok(end)
}

fn drop_torn_batch<J: Journal>(
    journal: &mut J,
    dropped: &DroppedBatch,
) -> Result<(), RecoveryError> {
    tracing::warn!(
        first_seq = dropped.first_seq,
        frame_len = dropped.frame_len,
        reason = %dropped.reason,
        "dropping the torn last journal batch (a write interrupted by a crash; it was never \
         acknowledged)"
    );
    journal.truncate_from(dropped.first_seq)?;
    journal.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::codec::encode_batch;
    use crate::persistence::journal::{SledJournal, reopen_after_drop};
    use serde::{Deserialize, Serialize};
    use std::path::Path;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Event {
        user: String,
        amount: u64,
    }

    fn event(n: u64) -> Event {
        Event {
            user: format!("user-{}", n % 7),
            amount: n,
        }
    }

    /// Appends batches of the given sizes with continuous sequence numbers from `start`.
    fn append_batches(journal: &mut SledJournal, start: u64, sizes: &[u64]) -> u64 {
        let mut seq = start;
        for &size in sizes {
            let records: Vec<Event> = (seq..seq + size).map(event).collect();
            journal
                .append(seq, &encode_batch(seq, &records).expect("encode"))
                .expect("append");
            seq += size;
        }
        journal.flush().expect("flush");
        seq
    }

    fn expected(range: std::ops::Range<u64>) -> Vec<(u64, Event)> {
        range.map(|n| (n, event(n))).collect()
    }

    fn damage(
        dir: &Path,
        journal: SledJournal,
        first_seq: u64,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> SledJournal {
        // Rewrite one stored frame through sled itself, as a damaged disk block would present it.
        drop(journal);
        let db = reopen_after_drop(|| crate::persistence::journal::open_db(dir));
        let tree = db.open_tree("journal").expect("tree");
        let mut frame = tree
            .get(first_seq.to_be_bytes())
            .expect("get")
            .expect("present")
            .to_vec();
        f(&mut frame);
        tree.insert(first_seq.to_be_bytes(), frame).expect("insert");
        db.flush().expect("flush");
        drop((tree, db));
        reopen_after_drop(|| SledJournal::open(dir))
    }

    #[test]
    fn records_round_trip_through_the_journal_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 0, &[3, 1, 5]);
        let records: Vec<(u64, Event)> = read_records(&mut journal, 0).expect("replay");
        assert_eq!(records, expected(0..9));
    }

    #[test]
    fn records_below_the_start_sequence_are_skipped_inside_a_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 0, &[4, 4, 4]);
        let mut seen = Vec::new();
        let report = replay(&mut journal, 6, |seq, e: Event| seen.push((seq, e))).expect("replay");
        assert_eq!(seen, expected(6..12));
        assert_eq!(report.next_seq, 12);
        assert_eq!(report.records_replayed, 6);
        assert_eq!(report.batches_read, 2);
    }

    #[test]
    fn an_empty_journal_replays_nothing_and_continues_from_the_start_sequence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        let report = replay(&mut journal, 40, |_, _: Event| panic!("no records")).expect("replay");
        assert_eq!(report.next_seq, 40);
        assert_eq!(journal_end(&journal).expect("end"), None);
    }

    #[test]
    fn a_journal_ending_below_the_snapshot_continues_from_the_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 0, &[5]);
        let report = replay(&mut journal, 9, |_, _: Event| {
            panic!("nothing at or above 9")
        })
        .expect("replay");
        assert_eq!(report.next_seq, 9);
    }

    #[test]
    fn a_torn_last_batch_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 0, &[2, 3, 4]);
        let mut journal = damage(dir.path(), journal, 5, |frame| {
            frame.truncate(frame.len() - 3)
        });

        let mut seen = Vec::new();
        let report = replay(&mut journal, 0, |seq, e: Event| seen.push((seq, e))).expect("replay");
        assert_eq!(seen, expected(0..5));
        assert_eq!(
            report.next_seq, 5,
            "the writer continues where the torn batch began"
        );
        let dropped = report.dropped_torn_batch.expect("reported");
        assert_eq!(dropped.first_seq, 5);
        assert!(
            matches!(dropped.reason, CodecError::Truncated { .. }),
            "{}",
            dropped.reason
        );

        // The torn batch is gone for good, so the writer can reuse its sequence numbers.
        drop(journal);
        let mut journal = reopen_after_drop(|| SledJournal::open(dir.path()));
        assert_eq!(journal_end(&journal).expect("end"), Some(5));
        append_batches(&mut journal, 5, &[1]);
        assert_eq!(
            read_records::<_, Event>(&mut journal, 0).expect("replay"),
            expected(0..6)
        );
    }

    #[test]
    fn a_corrupt_middle_batch_stops_recovery_with_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 0, &[2, 3, 4]);
        let mut journal = damage(dir.path(), journal, 2, |frame| {
            let last = frame.len() - 1;
            frame[last] ^= 0x01;
        });

        let mut seen = 0;
        let err = replay(&mut journal, 0, |_, _: Event| seen += 1).expect_err("must stop");
        assert!(
            matches!(
                err,
                RecoveryError::CorruptBatch {
                    first_seq: 2,
                    reason: BatchDefect::Codec(CodecError::ChecksumMismatch { .. })
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains("sequence 2"), "{message}");
        assert!(message.contains("backup"), "{message}");
        assert_eq!(seen, 2, "only the batch before the corrupt one was applied");
        assert_eq!(journal.batches_from(0).count(), 3, "nothing was deleted");
    }

    /// Batches reach replay in chunks from a thread of their own: a journal of several chunks
    /// replays whole and in order, a torn last batch in a later chunk is dropped, and a damaged
    /// batch in a later chunk stops replay after exactly the batches before it.
    #[test]
    fn a_journal_of_many_chunks_replays_in_order_and_stops_where_a_batch_is_damaged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        let sizes = vec![50; 4000];
        let end = append_batches(&mut journal, 0, &sizes);
        let bytes: usize = journal
            .batches_from(0)
            .map(|b| b.expect("batch").1.len())
            .sum();
        assert!(bytes > 3 * CHUNK_BYTES, "{bytes} bytes span several chunks");

        let records: Vec<(u64, Event)> = read_records(&mut journal, 0).expect("replay");
        assert_eq!(records, expected(0..end));

        let torn_at = end - 50;
        let mut journal = damage(dir.path(), journal, torn_at, |frame| {
            frame.truncate(frame.len() / 2)
        });
        let mut seen = Vec::new();
        let report = replay(&mut journal, 0, |seq, e: Event| seen.push((seq, e))).expect("replay");
        assert_eq!(seen, expected(0..torn_at));
        assert_eq!(report.next_seq, torn_at);
        assert_eq!(
            report.dropped_torn_batch.expect("reported").first_seq,
            torn_at
        );

        let damaged_at = 3000 * 50;
        let mut journal = damage(dir.path(), journal, damaged_at, |frame| {
            let last = frame.len() - 1;
            frame[last] ^= 0x01;
        });
        let mut seen = 0;
        let err = replay(&mut journal, 0, |_, _: Event| seen += 1).expect_err("must stop");
        assert!(
            matches!(err, RecoveryError::CorruptBatch { first_seq, .. } if first_seq == damaged_at),
            "{err}"
        );
        assert_eq!(
            seen, damaged_at,
            "every batch before the damaged one, no other"
        );
    }

    #[test]
    fn a_last_batch_that_is_well_formed_but_unreadable_is_not_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 0, &[2]);
        let frame = encode_batch(2, &[1u8, 2]).expect("encode");
        journal.append(2, &frame).expect("append");

        let err = read_records::<_, Event>(&mut journal, 0).expect_err("must stop");
        assert!(
            matches!(err, RecoveryError::CorruptBatch { first_seq: 2, .. }),
            "{err}"
        );
        assert_eq!(
            journal_end(&journal).expect("end"),
            Some(4),
            "the batch is still there"
        );
    }

    #[test]
    fn a_gap_in_the_sequence_numbers_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 0, &[3]);
        append_batches(&mut journal, 5, &[2]);
        let err = read_records::<_, Event>(&mut journal, 0).expect_err("gap");
        assert!(
            matches!(
                err,
                RecoveryError::Gap {
                    expected: 3,
                    found: 5
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("3..5"), "{err}");
    }

    #[test]
    fn a_journal_starting_after_the_start_sequence_is_a_gap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 10, &[3, 3]);
        journal.remove_before(13).expect("remove");
        let err = read_records::<_, Event>(&mut journal, 0).expect_err("records 0..13 are gone");
        assert!(
            matches!(
                err,
                RecoveryError::Gap {
                    expected: 0,
                    found: 13
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn overlapping_batches_are_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 0, &[5]);
        append_batches(&mut journal, 3, &[5]);
        let err = read_records::<_, Event>(&mut journal, 0).expect_err("overlap");
        assert!(
            matches!(
                err,
                RecoveryError::Overlap {
                    expected: 5,
                    found: 3
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_frame_stored_under_the_wrong_key_is_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        journal
            .append(0, &encode_batch(7, &[event(0)]).expect("encode"))
            .expect("append");
        journal
            .append(1, &encode_batch(1, &[event(1)]).expect("encode"))
            .expect("append");
        let err = read_records::<_, Event>(&mut journal, 0).expect_err("mismatch");
        assert!(
            matches!(
                err,
                RecoveryError::CorruptBatch {
                    first_seq: 0,
                    reason: BatchDefect::KeyMismatch { .. }
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn after_remove_before_a_replay_from_the_snapshot_still_sees_every_needed_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 0, &[4, 4, 4, 4]);
        for snapshot_seq in [0, 3, 4, 9, 12, 16] {
            journal.remove_before(snapshot_seq).expect("remove");
            let records = read_records::<_, Event>(&mut journal, snapshot_seq).expect("replay");
            assert_eq!(
                records,
                expected(snapshot_seq..16),
                "snapshot at {snapshot_seq}"
            );
        }
    }

    /// Set in the child process of the crash test: the journal directory to write to.
    const CRASH_CHILD_DIR: &str = "VEVEE_PERSISTENCE_CRASH_CHILD_DIR";
    const CRASH_TEST_NAME: &str = "persistence::recovery::tests::\
        flushed_batches_survive_a_process_abort_and_are_read_back_after_reopening";

    #[test]
    fn flushed_batches_survive_a_process_abort_and_are_read_back_after_reopening() {
        if let Ok(dir) = std::env::var(CRASH_CHILD_DIR) {
            // Child: flush two batches, leave a third unflushed, and die without any cleanup
            // (abort skips destructors, so sled gets no chance to flush on drop).
            let mut journal = SledJournal::open(Path::new(&dir)).expect("open");
            append_batches(&mut journal, 0, &[3, 2]);
            let records: Vec<Event> = (5..8).map(event).collect();
            journal
                .append(5, &encode_batch(5, &records).expect("encode"))
                .expect("append");
            std::process::abort();
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", CRASH_TEST_NAME, "--test-threads=1"])
            .env(CRASH_CHILD_DIR, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("spawn child");
        // Killed by a signal (SIGABRT) rather than exiting: the child ran and aborted.
        assert_eq!(status.code(), None, "the child must have aborted: {status}");

        let mut journal = SledJournal::open(dir.path()).expect("reopen after crash");
        let records = read_records::<_, Event>(&mut journal, 0).expect("replay");
        // The unflushed batch may or may not have reached the disk, but never in part.
        assert!(
            records == expected(0..5) || records == expected(0..8),
            "{records:?}"
        );
    }

    #[test]
    fn batches_are_read_back_after_dropping_the_journal_without_a_clean_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 0, &[3, 2, 6]);
        drop(journal);
        let mut journal = reopen_after_drop(|| SledJournal::open(dir.path()));
        assert_eq!(
            read_records::<_, Event>(&mut journal, 0).expect("replay"),
            expected(0..11)
        );
        assert_eq!(journal_end(&journal).expect("end"), Some(11));
    }

    #[test]
    #[ignore = "timing check; run with --release -- --ignored --nocapture"]
    fn a_million_events_replay_quickly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        append_batches(&mut journal, 0, &[100; 10_000]);
        drop(journal);
        let mut journal = reopen_after_drop(|| SledJournal::open(dir.path()));
        let started = std::time::Instant::now();
        let mut total = 0u64;
        let report = replay(&mut journal, 0, |_, e: Event| total += e.amount).expect("replay");
        eprintln!(
            "replayed {} events in {:?}",
            report.records_replayed,
            started.elapsed()
        );
        assert_eq!(report.next_seq, 1_000_000);
    }
}
