//! Replaying the journal into memory at startup, with the checks that keep it exact: every frame
//! verified, sequence numbers continuous, a torn last batch dropped, anything else stops.

use serde::de::DeserializeOwned;

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
    J: Journal,
    R: DeserializeOwned,
    F: FnMut(u64, R),
{
    replay_with(
        journal,
        from_seq,
        Decoding {
            records: Vec::new(),
            apply,
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
    J: Journal,
    R: DeserializeOwned,
    F: FnMut(u64, Stored<'_, R>),
{
    replay_with(
        journal,
        from_seq,
        Opening {
            buf: Vec::new(),
            open: OpenBatch::Bare,
            records: Vec::new(),
            apply,
        },
    )
}

/// How [`replay_with`] reads a batch and hands its records over.
trait Reader {
    /// Reads a verified frame into the reader's buffers.
    fn read(&mut self, frame: &[u8]) -> Result<BatchHeader, CodecError>;
    /// Hands over the records of the batch just read whose sequence is at least `from_seq`;
    /// returns how many.
    fn hand(&mut self, first_seq: u64, from_seq: u64) -> u64;
}

struct Decoding<R, F> {
    records: Vec<R>,
    apply: F,
}

impl<R: DeserializeOwned, F: FnMut(u64, R)> Reader for Decoding<R, F> {
    fn read(&mut self, frame: &[u8]) -> Result<BatchHeader, CodecError> {
        self.records.clear();
        codec::decode_batch_into(frame, &mut self.records)
    }

    fn hand(&mut self, first_seq: u64, from_seq: u64) -> u64 {
        let mut handed = 0;
        for (seq, record) in (first_seq..).zip(self.records.drain(..)) {
            if seq >= from_seq {
                (self.apply)(seq, record);
                handed += 1;
            }
        }
        handed
    }
}

struct Opening<R, F> {
    buf: Vec<u8>,
    open: OpenBatch,
    records: Vec<R>,
    apply: F,
}

impl<R, F> Reader for Opening<R, F>
where
    R: DeserializeOwned,
    F: FnMut(u64, Stored<'_, R>),
{
    fn read(&mut self, frame: &[u8]) -> Result<BatchHeader, CodecError> {
        self.records.clear();
        let (header, open) = codec::open_batch(frame, &mut self.buf)?;
        if open == OpenBatch::Bare {
            codec::decode_batch_into(frame, &mut self.records)?;
        }
        self.open = open;
        Ok(header)
    }

    fn hand(&mut self, first_seq: u64, from_seq: u64) -> u64 {
        let mut handed = 0;
        match std::mem::replace(&mut self.open, OpenBatch::Bare) {
            OpenBatch::Framed(ranges) => {
                for (seq, range) in (first_seq..).zip(ranges) {
                    if seq >= from_seq {
                        (self.apply)(seq, Stored::Bytes(&self.buf[range]));
                        handed += 1;
                    }
                }
            }
            OpenBatch::Bare => {
                for (seq, record) in (first_seq..).zip(self.records.drain(..)) {
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

fn replay_with<J: Journal>(
    journal: &mut J,
    from_seq: u64,
    mut reader: impl Reader,
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
    {
        let mut batches = journal.batches_from(from_seq).peekable();
        while let Some(item) = batches.next() {
            let (key, frame) = item?;
            let frame = frame.as_ref();
            let header = match reader.read(frame) {
                Ok(header) => header,
                Err(reason) => {
                    if is_last(&mut batches)? && reason.looks_torn() {
                        torn = Some(DroppedBatch {
                            first_seq: key,
                            frame_len: frame.len(),
                            reason,
                        });
                        break;
                    }
                    return Err(RecoveryError::CorruptBatch {
                        first_seq: key,
                        reason: reason.into(),
                    });
                }
            };
            let end = check_continuity(
                key,
                header,
                expected.unwrap_or(from_seq),
                expected.is_none(),
            )?;
            expected = Some(end);
            report.batches_read += 1;
            report.records_replayed += reader.hand(key, from_seq);
        }
    }
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
    J: Journal,
    R: DeserializeOwned,
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
