//! Snapshots without stopping the world: the newest snapshot plus the durable journal after it are
//! folded into a new snapshot on a thread of its own, through the same `apply` as live operation.
//! Live actors are never paused or read.

use super::journal_writer::JournalQueue;
use crate::engine::Record;
use crate::persistence::image::Image;
use crate::persistence::{Journal, SledJournal, SnapshotStore, decode_batch_into, encode_snapshot};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// Snapshots kept; the journal is kept back to the oldest, so a damaged newest one can be skipped.
const SNAPSHOTS_KEPT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] crate::persistence::SnapshotError),
    #[error(transparent)]
    Journal(#[from] crate::persistence::JournalError),
    #[error(transparent)]
    Codec(#[from] crate::persistence::CodecError),
    #[error("journal batch at {0} is missing or damaged; snapshot not taken")]
    Damaged(u64),
}

/// Folds the newest snapshot and the journal below `up_to` into a snapshot at `up_to`, then drops
/// what the kept snapshots cover. Returns the sequence of the snapshot now newest.
pub fn take(
    store: &SnapshotStore,
    journal: &mut SledJournal,
    up_to: u64,
) -> Result<u64, SnapshotError> {
    let loaded = store.load_newest::<Image>()?;
    let (from, mut image) = match loaded.snapshot {
        Some(s) => (s.seq, s.state),
        None => (0, Image::default()),
    };
    if from >= up_to {
        return Ok(from);
    }
    let mut records: Vec<Record> = Vec::new();
    let mut expected = from;
    let mut replay = image.replay();
    'batches: for batch in journal.batches_from(from) {
        let (first_seq, frame) = batch?;
        records.clear();
        let header = decode_batch_into(frame.as_ref(), &mut records)?;
        if header.first_seq != first_seq {
            return Err(SnapshotError::Damaged(first_seq));
        }
        for (i, record) in records.drain(..).enumerate() {
            let seq = first_seq + i as u64;
            if seq < from {
                continue;
            }
            if seq >= up_to {
                break 'batches;
            }
            if seq != expected {
                return Err(SnapshotError::Damaged(expected));
            }
            replay.apply_owned(record)?;
            expected += 1;
        }
    }
    if expected != up_to {
        return Err(SnapshotError::Damaged(expected));
    }
    replay.finish()?;
    let frame = encode_snapshot(up_to, &image)?;
    drop(image);
    store.write_bytes(up_to, &frame)?;
    store.prune(SNAPSHOTS_KEPT)?;
    if let Some((oldest, _)) = store.list()?.first() {
        journal.remove_before(*oldest)?;
    }
    Ok(up_to)
}

/// Takes a snapshot every `every_records` durable records or `every` interval (when anything was
/// written), until `stop` is set.
pub fn spawn(
    store: SnapshotStore,
    mut journal: SledJournal,
    queue: Arc<JournalQueue>,
    every_records: u64,
    every: Duration,
    last_snapshot_s: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("snapshotter".into())
        .spawn(move || {
            let mut last_seq = store
                .list()
                .ok()
                .and_then(|l| l.last().map(|(s, _)| *s))
                .unwrap_or(0);
            let mut last_at = Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(500));
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let durable = queue.durable_seq();
                let due = durable >= last_seq + every_records
                    || (durable > last_seq && last_at.elapsed() >= every);
                if !due {
                    continue;
                }
                let started = Instant::now();
                match take(&store, &mut journal, durable) {
                    Ok(seq) => {
                        tracing::info!(
                            seq,
                            ms = started.elapsed().as_millis() as u64,
                            "snapshot written"
                        );
                        last_seq = seq;
                        last_snapshot_s.store(super::clock::real_now().0 / 1000, Ordering::Relaxed);
                    }
                    Err(error) => tracing::error!(%error, "snapshot failed; will retry"),
                }
                last_at = Instant::now();
            }
        })
        .expect("spawn the snapshotter thread")
}
