//! The journal store: an ordered map from a batch's first sequence number to its frame bytes.
//!
//! This is the only module that knows sled. Everything above it sees the [`Journal`] trait, so a
//! second implementation (NATS JetStream, see DESIGN.md "Scaling past one machine") can be added
//! without touching recovery or the writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Storage for group-commit batches. One writer: mutating methods take `&mut self`.
///
/// Each batch is stored whole under its first sequence number; the store never looks inside a
/// frame (the codec and recovery do). Keys must strictly increase from one `append` to the next,
/// and an empty batch must not be appended (it would share its key with the batch after it).
pub trait Journal: Send + 'static {
    /// The bytes of one stored frame, handed out without copying where the store allows.
    type Frame: AsRef<[u8]>;

    /// Stores one batch frame. It is durable only after the next successful [`Journal::flush`].
    fn append(&mut self, first_seq: u64, frame: &[u8]) -> Result<(), JournalError>;

    /// Makes every appended batch durable (fsync). Answer callers only after this returns `Ok`.
    fn flush(&mut self) -> Result<(), JournalError> {
        self.disk_sync().sync()
    }

    /// What makes appended batches durable, usable from another thread while appends go on: a
    /// sync covers every batch whose `append` returned before it began.
    fn disk_sync(&self) -> DiskSync;

    /// The batch with the highest first sequence number, if any.
    fn last_batch(&self) -> Result<Option<(u64, Self::Frame)>, JournalError>;

    /// Batches in sequence order, starting with the one that may hold `seq` (the last batch whose
    /// first sequence is at or below `seq`, or the first batch if every batch starts above it).
    fn batches_from(&self, seq: u64) -> Batches<'_, Self::Frame>;

    /// Removes every batch whose first sequence is at or above `first_seq`, returning how many
    /// were removed. Used to drop a torn last batch, or by an operator to cut a damaged journal.
    fn truncate_from(&mut self, first_seq: u64) -> Result<u64, JournalError>;

    /// Removes batches that hold only records below `seq` (covered by a snapshot at `seq`),
    /// returning how many were removed. The batch that may hold `seq - 1` is always kept, so the
    /// journal is never emptied by this call and its end stays discoverable.
    fn remove_before(&mut self, seq: u64) -> Result<u64, JournalError>;

    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> Result<u64, JournalError>;
}

/// An iterator over `(first_seq, frame)` pairs in sequence order.
pub type Batches<'a, F> = Box<dyn Iterator<Item = Result<(u64, F), JournalError>> + 'a>;

/// Why the journal store failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the journal at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("journal storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error(
        "journal append out of order: batch {first_seq} does not come after the last stored \
         batch {last_first_seq} (sequence numbers must strictly increase)"
    )]
    OutOfOrder { first_seq: u64, last_first_seq: u64 },
    #[error("journal key of {len} bytes is not an 8-byte sequence number; the journal is damaged")]
    BadKey { len: usize },
    #[error("cannot open sled's data file {path}: {source}")]
    DataFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fdatasync of the journal failed: {0}")]
    Sync(#[source] std::io::Error),
}

/// How many keys [`SledJournal::remove_before`] deletes per sled batch, to bound memory when a
/// large journal prefix is dropped.
const REMOVE_CHUNK: usize = 4096;

/// sled's page cache size. sled's default (1 GiB) suits read-heavy databases; the journal is
/// written once and read once at startup, so a small cache keeps the process lean.
const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// [`Journal`] on a sled tree keyed by the big-endian first sequence number (so sled's byte order
/// is sequence order).
pub struct SledJournal {
    db: sled::Db,
    tree: sled::Tree,
    /// First sequence of the newest stored batch, cached so `append` can refuse out-of-order
    /// writes without a lookup.
    last_first_seq: Option<u64>,
    /// sled's data file, for the fdatasync that sled 0.34 leaves out (see `flush`).
    data_file: Arc<std::fs::File>,
}

/// The file in which sled 0.34 keeps its log and pages.
const SLED_DATA_FILE: &str = "db";

/// sled's segment size for a new database. sled 0.34 writes any log item larger than a quarter of
/// a segment as a blob: a file of its own, created (and later deleted) on the path every
/// acknowledgement waits for. A leaf node holds up to 17 values and is rewritten whole when it
/// splits or is consolidated, so with sled's default of 512 KiB a leaf of ledger pages or journal
/// frames (tens of KiB each) crossed the 128 KiB line on most flushes: a profile of
/// `POST /v1/batch` spent 17 % of its CPU writing blobs, 13 % creating their inodes. At 16 MiB the
/// line is 4 MiB.
const SEGMENT_BYTES: usize = 16 * 1024 * 1024;

/// The file where sled records a database's storage parameters; sled refuses to open a database
/// with another segment size than the one it was made with.
const SLED_CONF_FILE: &str = "conf";

/// The sled database in `dir`, as the journal and tools that look at its trees offline open it
/// (a plain `sled::open` would refuse the segment size).
///
/// `Mode::HighThroughput`: the journal is append-only with increasing keys and drops whole
/// prefixes when a snapshot covers them, so there is little fragmentation for `LowSpace` to
/// fight, and its extra segment rewriting would cost write bandwidth on the path every
/// acknowledgement waits for. Durability does not depend on the mode: `flush` fsyncs.
pub fn open_db(dir: &Path) -> Result<sled::Db, JournalError> {
    sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(CACHE_CAPACITY_BYTES)
        .segment_size(segment_bytes(dir))
        .open()
        .map_err(|source| JournalError::Open {
            path: dir.to_path_buf(),
            source,
        })
}

/// Opens a database a test has just dropped a handle of. sled lets go of its file lock when its
/// last I/O thread drops the file, which can come just after the drop returns (sled's own tests
/// block on the lock for that reason, under its `testing` feature); a busy machine widens the
/// window. Retries while the lock is held, up to 10 s.
#[cfg(test)]
pub fn reopen_after_drop<T>(open: impl Fn() -> Result<T, JournalError>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Ok(opened) => return opened,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

/// The segment size to open `dir` with: the one it was made with, or [`SEGMENT_BYTES`] for a new
/// database.
fn segment_bytes(dir: &Path) -> usize {
    let Ok(conf) = std::fs::read(dir.join(SLED_CONF_FILE)) else {
        return SEGMENT_BYTES;
    };
    // Lines of `name: value`, then a CRC that sled checks itself.
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|line| line.strip_prefix("segment_size: "))
        .and_then(|size| size.trim().parse().ok())
        .unwrap_or(SEGMENT_BYTES)
}

impl SledJournal {
    /// Opens (or creates) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let db = open_db(dir)?;
        let tree = db
            .open_tree("journal")
            .map_err(|source| JournalError::Open {
                path: dir.to_path_buf(),
                source,
            })?;
        let last_first_seq = match tree.last()? {
            Some((key, _)) => Some(seq_of(&key)?),
            None => None,
        };
        let data_file = std::fs::File::open(dir.join(SLED_DATA_FILE))
            .map(Arc::new)
            .map_err(|source| JournalError::DataFile {
                path: dir.join(SLED_DATA_FILE),
                source,
            })?;
        Ok(Self {
            db,
            tree,
            last_first_seq,
            data_file,
        })
    }

    /// A second handle on the same journal, for a reader beside the writer (the snapshotter): sled
    /// trees are safe to share, and a reader neither appends nor truncates the tail.
    pub fn reader(&self) -> SledJournal {
        SledJournal {
            db: self.db.clone(),
            tree: self.tree.clone(),
            last_first_seq: self.last_first_seq,
            data_file: self.data_file.clone(),
        }
    }

    fn refresh_last(&mut self) -> Result<(), JournalError> {
        self.last_first_seq = match self.tree.last()? {
            Some((key, _)) => Some(seq_of(&key)?),
            None => None,
        };
        Ok(())
    }

    /// Removes `keys` in chunks; oldest first, so a crash midway leaves a valid journal.
    fn remove_keys(
        &self,
        keys: impl Iterator<Item = sled::Result<sled::IVec>>,
    ) -> Result<u64, JournalError> {
        let mut removed = 0u64;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0usize;
        for key in keys {
            batch.remove(key?);
            in_batch += 1;
            if in_batch == REMOVE_CHUNK {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
                removed += in_batch as u64;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            self.tree.apply_batch(batch)?;
            removed += in_batch as u64;
        }
        Ok(removed)
    }
}

impl Journal for SledJournal {
    type Frame = sled::IVec;

    fn append(&mut self, first_seq: u64, frame: &[u8]) -> Result<(), JournalError> {
        if let Some(last_first_seq) = self.last_first_seq.filter(|&last| first_seq <= last) {
            return Err(JournalError::OutOfOrder {
                first_seq,
                last_first_seq,
            });
        }
        self.tree.insert(first_seq.to_be_bytes(), frame)?;
        self.last_first_seq = Some(first_seq);
        Ok(())
    }

    fn disk_sync(&self) -> DiskSync {
        DiskSync {
            db: self.db.clone(),
            data_file: self.data_file.clone(),
        }
    }

    fn last_batch(&self) -> Result<Option<(u64, sled::IVec)>, JournalError> {
        match self.tree.last()? {
            Some((key, frame)) => Ok(Some((seq_of(&key)?, frame))),
            None => Ok(None),
        }
    }

    fn batches_from(&self, seq: u64) -> Batches<'_, sled::IVec> {
        let start = match self.tree.range(..=seq.to_be_bytes()).next_back() {
            Some(Ok((key, _))) => key,
            Some(Err(e)) => return Box::new(std::iter::once(Err(e.into()))),
            None => sled::IVec::from(&seq.to_be_bytes()),
        };
        Box::new(self.tree.range(start..).map(|item| {
            let (key, frame) = item?;
            Ok((seq_of(&key)?, frame))
        }))
    }

    fn truncate_from(&mut self, first_seq: u64) -> Result<u64, JournalError> {
        let keys = self.tree.range(first_seq.to_be_bytes()..).keys();
        let removed = self.remove_keys(keys)?;
        self.refresh_last()?;
        Ok(removed)
    }

    fn remove_before(&mut self, seq: u64) -> Result<u64, JournalError> {
        // Without decoding frames we know a batch ends where the next one starts. So every batch
        // before the last one starting at or below `seq` ends at or below `seq` and can go; that
        // one itself may still hold records at or above `seq`, and is kept.
        let keep_from = match self.tree.range(..=seq.to_be_bytes()).next_back() {
            Some(item) => item?.0,
            None => return Ok(0),
        };
        self.remove_keys(self.tree.range(..keep_from).keys())
    }

    fn size_on_disk(&self) -> Result<u64, JournalError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// A sorted key-value tree in the journal's database, for the history store: written by the
/// journal writer before the batch it comes from, so one flush makes both durable. Keys and values
/// are bytes; this module stays the only one that knows sled.
#[derive(Clone)]
pub struct KvTree(sled::Tree);

/// A value read from a [`KvTree`], without a copy.
pub type KvValue = sled::IVec;

/// `(key, value)` pairs of a [`KvTree`] range.
pub type KvRange = Box<dyn DoubleEndedIterator<Item = Result<(KvValue, KvValue), JournalError>>>;

impl KvTree {
    pub fn get(&self, key: &[u8]) -> Result<Option<KvValue>, JournalError> {
        Ok(self.0.get(key)?)
    }

    /// Keys from `from` (inclusive) to `to` (exclusive), in order; iterate with `.rev()` for
    /// newest first.
    pub fn range(&self, from: &[u8], to: &[u8]) -> KvRange {
        Box::new(
            self.0
                .range(from.to_vec()..to.to_vec())
                .map(|item| item.map_err(JournalError::from)),
        )
    }

    /// Keys from `from` (inclusive) to the end, in order.
    pub fn range_from(&self, from: &[u8]) -> KvRange {
        Box::new(
            self.0
                .range(from.to_vec()..)
                .map(|item| item.map_err(JournalError::from)),
        )
    }

    /// Every pair whose key starts with `prefix`.
    pub fn scan_prefix(&self, prefix: &[u8]) -> KvRange {
        Box::new(
            self.0
                .scan_prefix(prefix)
                .map(|item| item.map_err(JournalError::from)),
        )
    }

    /// Puts one entry. Unlike [`KvTree::write`], it does not hold sled's lock that stops every
    /// other reader and writer of the database.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), JournalError> {
        self.0.insert(key, value)?;
        Ok(())
    }

    /// Puts (`Some`) and removes (`None`) in one sled batch: one write for many entries.
    pub fn write(
        &self,
        changes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), JournalError> {
        let mut batch = sled::Batch::default();
        for (key, value) in changes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        Ok(self.0.apply_batch(batch)?)
    }
}

impl SledJournal {
    /// The history tree `name` beside the journal.
    pub fn tree(&self, name: &str) -> Result<KvTree, JournalError> {
        Ok(KvTree(self.db.open_tree(name)?))
    }
}

/// Makes every write to the database (every tree) durable: sled's flush writes its buffers out,
/// but on Linux it only calls `sync_file_range`, which neither flushes the drive's cache nor the
/// file's metadata, so a power cut could lose what it wrote; the fdatasync after it makes it
/// durable. Shared by the journal writer and the stores that must answer only once their own
/// write is on disk.
#[derive(Clone)]
pub struct DiskSync {
    db: sled::Db,
    data_file: Arc<std::fs::File>,
}

impl DiskSync {
    pub fn sync(&self) -> Result<(), JournalError> {
        self.write_out()?;
        self.sync_data()
    }

    /// The first half of [`DiskSync::sync`]: sled writes its buffers to the file (and waits for
    /// the disk to take them).
    pub fn write_out(&self) -> Result<(), JournalError> {
        self.db.flush()?;
        Ok(())
    }

    /// The second half: fdatasync, covering what every [`DiskSync::write_out`] that returned
    /// before it began wrote.
    pub fn sync_data(&self) -> Result<(), JournalError> {
        self.data_file.sync_data().map_err(JournalError::Sync)
    }
}

fn seq_of(key: &[u8]) -> Result<u64, JournalError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| JournalError::BadKey { len: key.len() })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(journal: &SledJournal, from: u64) -> Vec<u64> {
        journal
            .batches_from(from)
            .map(|b| b.expect("readable").0)
            .collect()
    }

    fn journal_with(dir: &Path, first_seqs: &[u64]) -> SledJournal {
        let mut journal = SledJournal::open(dir).expect("open");
        for &seq in first_seqs {
            journal
                .append(seq, format!("frame {seq}").as_bytes())
                .expect("append");
        }
        journal.flush().expect("flush");
        journal
    }

    #[test]
    fn a_reopen_in_a_test_waits_for_the_lock_of_a_handle_being_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = SledJournal::open(dir.path()).expect("open");
        let refused = SledJournal::open(dir.path()).err().map(|e| e.to_string());
        assert!(
            refused.is_some_and(|e| e.contains("could not acquire lock")),
            "sled locks its database against a second handle"
        );
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(journal);
        });
        let reopened = reopen_after_drop(|| SledJournal::open(dir.path()));
        dropper.join().expect("dropper");
        assert!(reopened.last_batch().expect("read").is_none());
    }

    #[test]
    fn batches_are_listed_in_sequence_order_even_past_byte_boundaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = journal_with(dir.path(), &[0, 10, 255, 256, 70_000]);
        assert_eq!(keys(&journal, 0), vec![0, 10, 255, 256, 70_000]);
        let frame = journal
            .batches_from(256)
            .next()
            .expect("one")
            .expect("ok")
            .1;
        assert_eq!(frame.as_ref(), b"frame 256");
    }

    #[test]
    fn batches_from_starts_at_the_batch_that_may_hold_the_sequence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = journal_with(dir.path(), &[5, 10, 20]);
        assert_eq!(keys(&journal, 12), vec![10, 20]);
        assert_eq!(keys(&journal, 10), vec![10, 20]);
        assert_eq!(keys(&journal, 0), vec![5, 10, 20]);
        assert_eq!(keys(&journal, 99), vec![20]);
    }

    #[test]
    fn an_out_of_order_or_repeated_append_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = journal_with(dir.path(), &[10]);
        assert!(matches!(
            journal.append(10, b"x"),
            Err(JournalError::OutOfOrder { .. })
        ));
        assert!(matches!(
            journal.append(3, b"x"),
            Err(JournalError::OutOfOrder { .. })
        ));
        drop(journal);
        let mut reopened = reopen_after_drop(|| SledJournal::open(dir.path()));
        assert!(matches!(
            reopened.append(10, b"x"),
            Err(JournalError::OutOfOrder { .. })
        ));
        reopened.append(11, b"x").expect("in order");
    }

    #[test]
    fn remove_before_keeps_every_batch_that_may_hold_a_needed_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = journal_with(dir.path(), &[0, 10, 20, 30]);
        assert_eq!(journal.remove_before(5).expect("remove"), 0);
        assert_eq!(journal.remove_before(20).expect("remove"), 2);
        assert_eq!(keys(&journal, 0), vec![20, 30]);
        assert_eq!(journal.remove_before(25).expect("remove"), 0);
        assert_eq!(journal.remove_before(1_000).expect("remove"), 1);
        assert_eq!(
            keys(&journal, 0),
            vec![30],
            "the last batch is kept to find the journal end"
        );
    }

    #[test]
    fn remove_before_on_an_empty_journal_does_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = SledJournal::open(dir.path()).expect("open");
        assert_eq!(journal.remove_before(100).expect("remove"), 0);
    }

    #[test]
    fn truncate_from_removes_the_tail_and_allows_appending_there_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = journal_with(dir.path(), &[0, 10, 20]);
        assert_eq!(journal.truncate_from(10).expect("truncate"), 2);
        assert_eq!(keys(&journal, 0), vec![0]);
        assert_eq!(journal.last_batch().expect("read").map(|b| b.0), Some(0));
        journal.append(10, b"again").expect("key 10 is free again");
    }

    #[test]
    fn a_batch_survives_a_reopen_after_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(journal_with(dir.path(), &[1, 2]));
        let journal = reopen_after_drop(|| SledJournal::open(dir.path()));
        assert_eq!(keys(&journal, 0), vec![1, 2]);
        assert!(journal.size_on_disk().expect("size") > 0);
    }
}
