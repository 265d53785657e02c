//! Snapshot files: `snapshot-<seq, 20 digits>.bin` in one directory, each a checksummed frame
//! (see the codec). Written to a temporary file, fsynced, renamed, and the directory fsynced, so
//! a crash leaves either the old set of snapshots or the new one, never a half-written file under
//! a final name. Loading tries the newest first and falls back past any that fail verification.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::{self, CodecError};
use super::image::borrowing_from;
use bytes::Bytes;

const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".bin";
const TMP_SUFFIX: &str = ".tmp";

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing snapshot {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("removing snapshot file {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Encode(#[from] CodecError),
}

/// Why one snapshot file was not used.
#[derive(Debug, thiserror::Error)]
pub enum RefusalReason {
    #[error("cannot read it: {0}")]
    Read(#[source] io::Error),
    #[error(transparent)]
    Invalid(#[from] CodecError),
    #[error("its name says sequence {named} but its header says {header}")]
    SeqMismatch { named: u64, header: u64 },
}

/// A snapshot file that failed to load and was skipped.
#[derive(Debug)]
pub struct RefusedSnapshot {
    pub path: PathBuf,
    pub reason: RefusalReason,
}

/// A loaded snapshot: `state` holds the effect of every journal record with sequence below `seq`;
/// replay the journal from `seq`.
#[derive(Debug)]
pub struct LoadedSnapshot<S> {
    pub seq: u64,
    pub state: S,
    pub path: PathBuf,
}

/// The result of [`SnapshotStore::load_newest`]: the newest usable snapshot (if any), and every
/// newer file that was refused. Refusals are also logged as warnings.
#[derive(Debug)]
pub struct SnapshotLoad<S> {
    pub snapshot: Option<LoadedSnapshot<S>>,
    pub refused: Vec<RefusedSnapshot>,
}

/// The snapshot directory. Not meant for concurrent writers: one snapshotter owns it.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Opens (creating if needed) the snapshot directory and removes temporary files left by a
    /// crash mid-write: they were never renamed, so nothing refers to them.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, SnapshotError> {
        let store = Self { dir: dir.into() };
        fs::create_dir_all(&store.dir).map_err(|e| store.dir_error(e))?;
        store.remove_stale_temp_files()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The final path of the snapshot at `seq`.
    pub fn path_for(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{seq:020}{SUFFIX}"))
    }

    /// Encodes and durably writes `state` as the snapshot at `seq`.
    pub fn write<S: Serialize>(&self, seq: u64, state: &S) -> Result<PathBuf, SnapshotError> {
        let bytes = codec::encode_snapshot(seq, state)?;
        self.write_bytes(seq, &bytes)
    }

    /// Durably writes a frame made by [`codec::encode_snapshot`] (for encoding on another
    /// thread): temporary file, fsync, rename, fsync of the directory so the rename itself
    /// survives a crash. An existing snapshot at the same `seq` is replaced atomically.
    pub fn write_bytes(&self, seq: u64, frame: &[u8]) -> Result<PathBuf, SnapshotError> {
        let path = self.path_for(seq);
        let tmp = tmp_path(&path);
        let write_error = |source| SnapshotError::Write {
            path: path.clone(),
            source,
        };
        write_synced(&tmp, frame).map_err(write_error)?;
        fs::rename(&tmp, &path).map_err(write_error)?;
        sync_dir(&self.dir).map_err(write_error)?;
        Ok(path)
    }

    /// Snapshot files by sequence, oldest first. Files with other names are ignored.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| self.dir_error(e))? {
            let path = entry.map_err(|e| self.dir_error(e))?.path();
            if let Some(seq) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_name)
            {
                found.push((seq, path));
            }
        }
        found.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(found)
    }

    /// Loads the newest snapshot that verifies, refusing (with a warning each) newer ones that
    /// are corrupt, truncated or unreadable. `snapshot` is `None` when there is no usable one:
    /// then replay the journal from 0 (which fails with a gap if the journal was pruned).
    pub fn load_newest<S: DeserializeOwned>(&self) -> Result<SnapshotLoad<S>, SnapshotError> {
        let mut refused = Vec::new();
        for (seq, path) in self.list()?.into_iter().rev() {
            match load_one(seq, &path) {
                Ok(state) => {
                    let snapshot = Some(LoadedSnapshot { seq, state, path });
                    return Ok(SnapshotLoad { snapshot, refused });
                }
                Err(reason) => {
                    tracing::warn!(
                        file = %path.display(),
                        %reason,
                        "refusing snapshot; falling back to the previous one"
                    );
                    refused.push(RefusedSnapshot { path, reason });
                }
            }
        }
        Ok(SnapshotLoad {
            snapshot: None,
            refused,
        })
    }

    /// Removes all but the newest `keep` snapshots (at least one is always kept) and any stale
    /// temporary files; returns how many snapshots were removed. Keep two or more: if the newest
    /// turns out corrupt, loading falls back to the one before, which needs the journal from its
    /// sequence on (so call `Journal::remove_before` with the oldest kept snapshot's sequence).
    /// Must not run while a `write_bytes` is in progress.
    pub fn prune(&self, keep: usize) -> Result<usize, SnapshotError> {
        self.remove_stale_temp_files()?;
        let all = self.list()?;
        let excess = all.len().saturating_sub(keep.max(1));
        for (_, path) in &all[..excess] {
            remove(path)?;
        }
        Ok(excess)
    }

    fn remove_stale_temp_files(&self) -> Result<(), SnapshotError> {
        for entry in fs::read_dir(&self.dir).map_err(|e| self.dir_error(e))? {
            let path = entry.map_err(|e| self.dir_error(e))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with(PREFIX) && name.ends_with(TMP_SUFFIX) {
                tracing::info!(file = %path.display(), "removing a snapshot left unfinished by a crash");
                remove(&path)?;
            }
        }
        Ok(())
    }

    fn dir_error(&self, source: io::Error) -> SnapshotError {
        SnapshotError::Dir {
            path: self.dir.clone(),
            source,
        }
    }
}

fn load_one<S: DeserializeOwned>(named: u64, path: &Path) -> Result<S, RefusalReason> {
    // Mapped rather than read: a copy would take as many fresh pages as the file is long (a
    // million users: 374 MB, an eighth of a start spent having the kernel zero them).
    let file = fs::File::open(path).map_err(RefusalReason::Read)?;
    // SAFETY: a snapshot is written whole under a temporary name and renamed into place, and
    // nothing writes it after that; `prune` only unlinks files, which leaves a mapping valid.
    let mapped = unsafe { memmap2::MmapOptions::new().populate().map(&file) }
        .map_err(RefusalReason::Read)?;
    // The users' packed forms are slices of the mapping: a snapshot's state lives only until the
    // start or the snapshotter has copied what it keeps.
    let bytes = Bytes::from_owner(mapped);
    let (header, state) = borrowing_from(&bytes, || codec::decode_snapshot(&bytes))?;
    if header != named {
        return Err(RefusalReason::SeqMismatch { named, header });
    }
    Ok(state)
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Fsyncs a directory so a rename inside it is durable (POSIX requires this separately).
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn remove(path: &Path) -> Result<(), SnapshotError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        // Already gone is the outcome we wanted.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SnapshotError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct State {
        balances: BTreeMap<String, i64>,
        seq: u64,
    }

    fn state(seq: u64) -> State {
        let balances = (0..seq.min(5))
            .map(|i| (format!("user-{i}"), i as i64 * 10))
            .collect();
        State { balances, seq }
    }

    fn store() -> (tempfile::TempDir, SnapshotStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::new(dir.path().join("snapshots")).expect("store");
        (dir, store)
    }

    #[test]
    fn a_written_snapshot_loads_back() {
        let (_dir, store) = store();
        let path = store.write(12, &state(12)).expect("write");
        assert!(
            path.ends_with("snapshot-00000000000000000012.bin"),
            "{}",
            path.display()
        );
        let load = store.load_newest::<State>().expect("load");
        let snapshot = load.snapshot.expect("one snapshot");
        assert_eq!(
            (snapshot.seq, snapshot.state, snapshot.path),
            (12, state(12), path)
        );
        assert!(load.refused.is_empty());
    }

    #[test]
    fn an_empty_directory_has_no_snapshot() {
        let (_dir, store) = store();
        let load = store.load_newest::<State>().expect("load");
        assert!(load.snapshot.is_none() && load.refused.is_empty());
    }

    #[test]
    fn the_newest_snapshot_is_loaded_by_sequence_not_by_name_length() {
        let (_dir, store) = store();
        store.write(9, &state(9)).expect("write");
        store.write(100, &state(100)).expect("write");
        store.write(20, &state(20)).expect("write");
        let snapshot = store
            .load_newest::<State>()
            .expect("load")
            .snapshot
            .expect("some");
        assert_eq!(snapshot.seq, 100);
    }

    #[test]
    fn a_corrupt_newest_snapshot_falls_back_to_the_previous_one() {
        let (_dir, store) = store();
        store.write(10, &state(10)).expect("write");
        let newest = store.write(20, &state(20)).expect("write");
        let mut bytes = fs::read(&newest).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&newest, bytes).expect("corrupt");

        let load = store.load_newest::<State>().expect("load");
        let snapshot = load.snapshot.expect("fallback");
        assert_eq!((snapshot.seq, snapshot.state), (10, state(10)));
        assert_eq!(load.refused.len(), 1);
        assert_eq!(load.refused[0].path, newest);
        assert!(matches!(
            load.refused[0].reason,
            RefusalReason::Invalid(CodecError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn a_truncated_snapshot_is_refused() {
        let (_dir, store) = store();
        let path = store.write(5, &state(5)).expect("write");
        let bytes = fs::read(&path).expect("read");
        fs::write(&path, &bytes[..bytes.len() - 1]).expect("truncate");

        let load = store.load_newest::<State>().expect("load");
        assert!(load.snapshot.is_none());
        let reason = &load.refused[0].reason;
        assert!(
            matches!(reason, RefusalReason::Invalid(CodecError::Truncated { .. })),
            "{reason}"
        );
    }

    #[test]
    fn a_snapshot_renamed_to_another_sequence_is_refused() {
        let (_dir, store) = store();
        let path = store.write(5, &state(5)).expect("write");
        fs::rename(&path, store.path_for(6)).expect("rename");
        let load = store.load_newest::<State>().expect("load");
        assert!(load.snapshot.is_none());
        assert!(matches!(
            load.refused[0].reason,
            RefusalReason::SeqMismatch {
                named: 6,
                header: 5
            }
        ));
    }

    #[test]
    fn bytes_encoded_elsewhere_can_be_written_later() {
        let (_dir, store) = store();
        let frame = codec::encode_snapshot(7, &state(7)).expect("encode");
        let path = std::thread::spawn({
            let store = store.clone();
            move || store.write_bytes(7, &frame).expect("write")
        })
        .join()
        .expect("writer thread");
        assert_eq!(path, store.path_for(7));
        let snapshot = store
            .load_newest::<State>()
            .expect("load")
            .snapshot
            .expect("some");
        assert_eq!(snapshot.state, state(7));
    }

    #[test]
    fn prune_keeps_the_newest_ones_and_cleans_temporary_files() {
        let (_dir, store) = store();
        for seq in [1, 2, 3, 4] {
            store.write(seq, &state(seq)).expect("write");
        }
        let stale = tmp_path(&store.path_for(5));
        fs::write(&stale, b"half written").expect("stale tmp");
        fs::write(store.dir().join("notes.txt"), b"not ours").expect("other file");

        assert_eq!(store.prune(2).expect("prune"), 2);
        let left: Vec<u64> = store
            .list()
            .expect("list")
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(left, vec![3, 4]);
        assert!(!stale.exists());
        assert!(
            store.dir().join("notes.txt").exists(),
            "unrelated files are left alone"
        );
        assert_eq!(
            store.prune(0).expect("prune"),
            1,
            "the newest is always kept"
        );
    }

    #[test]
    fn opening_the_store_removes_a_temporary_file_left_by_a_crash() {
        let (_dir, store) = store();
        let stale = tmp_path(&store.path_for(8));
        fs::write(&stale, b"half written").expect("stale tmp");
        let reopened = SnapshotStore::new(store.dir()).expect("reopen");
        assert!(!stale.exists());
        assert!(
            reopened
                .load_newest::<State>()
                .expect("load")
                .snapshot
                .is_none()
        );
    }
}
