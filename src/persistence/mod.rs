//! Durable storage: the journal of records and the snapshots of state.
//!
//! On disk, under the data directory: a sled database (the journal) whose `journal` tree maps
//! each group-commit batch's first sequence number (big-endian u64, so byte order is sequence
//! order) to one frame holding that batch's records; and `snapshots/snapshot-<seq>.bin` files
//! (sequence zero-padded to 20 digits). Every journal frame and snapshot carries a magic, a format
//! version and a CRC32 (see [`codec`]), so damage is detected rather than decoded into wrong values.
//!
//! Durability contract: a batch is durable once [`Journal::flush`] returns `Ok`; answer callers
//! only after that. Sequence numbers start at 0 and are continuous across batches. A snapshot at
//! `seq` holds the effect of every record below `seq` and must only cover flushed records. On
//! startup: [`SnapshotStore::load_newest`], then [`replay`] from its `seq` (or 0), then append the
//! next batch at [`ReplayReport::next_seq`]. Recovery drops a torn last batch (never
//! acknowledged) and stops with a clear error on any other damage, a gap or an overlap.
//! [`Journal::remove_before`] with the oldest kept snapshot's `seq` frees journal space.

pub mod codec;
pub mod history;
pub mod image;
pub mod journal;
pub mod recovery;
pub mod snapshot;
pub mod webhooks;

pub use codec::{
    BatchHeader, CodecError, DecodedBatch, FORMAT_VERSION, FrameKind, OpenBatch, decode_batch,
    decode_batch_into, decode_record, decode_snapshot, encode_batch, encode_snapshot, verify_batch,
};
pub use history::{History, HistoryError, HistoryWrite};
pub use journal::{Batches, DiskSync, Journal, JournalError, SledJournal};
pub use recovery::{
    BatchDefect, DroppedBatch, RecoveryError, ReplayReport, Stored, journal_end, read_records,
    replay, replay_stored,
};
pub use snapshot::{
    LoadedSnapshot, RefusalReason, RefusedSnapshot, SnapshotError, SnapshotLoad, SnapshotStore,
};
