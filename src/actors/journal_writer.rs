//! The journal writer: one thread that turns everything queued since its last append into one
//! batch and one sled value, and beside it a flusher and a syncer that make what was appended
//! durable (group commit) and publish the durable sequence.

use crate::engine::Record;
use crate::persistence::{DiskSync, History, HistoryWrite, Journal, JournalError, encode_batch};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// Records not yet handed to the writer. The lock is held only to push or to swap the vector out, a
/// few nanoseconds: it is what makes the journal order the apply order.
struct Queue {
    next_seq: u64,
    records: Vec<Record>,
    /// What the queued records move to the history store, each with the end of the push that
    /// caused it (nondecreasing): written right after the frame that holds those records.
    history: Vec<(u64, HistoryWrite)>,
    /// The end of each push still queued: a batch is cut only there, so a step's records are
    /// durable together and a snapshot, which is taken at a batch's end, never holds half a step.
    /// At most one per queued record, so bounded as `records` is (`journal_backlog_records_max`).
    ends: VecDeque<u64>,
    closed: bool,
}

/// What runs once the records below a sequence are durable: typically sending a caller its reply.
type OnDurable = Box<dyn FnOnce() + Send>;

/// Work waiting for records to be durable, by the sequence it waits for. Each runs once, when the
/// sync that covers it is published (a broadcast would wake every caller on every batch).
struct Waiters {
    durable: u64,
    by_seq: BTreeMap<u64, Vec<OnDurable>>,
}

pub struct JournalQueue {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Every record below this sequence is on disk; read without the lock on the fast path.
    durable: AtomicU64,
    /// `Queue::next_seq`, readable without the lock, for the backlog.
    queued: AtomicU64,
    waiters: Mutex<Waiters>,
}

/// The journal writer stopped before the record was durable.
#[derive(Debug, thiserror::Error)]
#[error("the journal writer stopped")]
pub struct WriterStopped;

/// Batches past this many records are split between pushes, to bound the size of one sled value;
/// a push larger than this (none is near it) goes whole.
const BATCH_RECORDS_MAX: usize = 16_384;

impl JournalQueue {
    /// `next_seq` is the sequence of the first record this process writes; everything below it is
    /// on disk already.
    pub fn new(next_seq: u64) -> Arc<JournalQueue> {
        Arc::new(JournalQueue {
            queue: Mutex::new(Queue {
                next_seq,
                records: Vec::new(),
                history: Vec::new(),
                ends: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            durable: AtomicU64::new(next_seq),
            queued: AtomicU64::new(next_seq),
            waiters: Mutex::new(Waiters {
                durable: next_seq,
                by_seq: BTreeMap::new(),
            }),
        })
    }

    /// Queues records in order and returns the sequence just past the last one: the caller may
    /// answer once the durable end reaches it.
    pub fn push(&self, records: impl IntoIterator<Item = Record>) -> u64 {
        self.push_with_history(records, std::iter::empty())
    }

    /// [`JournalQueue::push`] with the history writes those records cause, made durable with them.
    pub fn push_with_history(
        &self,
        records: impl IntoIterator<Item = Record>,
        history: impl IntoIterator<Item = HistoryWrite>,
    ) -> u64 {
        let mut q = self.queue.lock().expect("journal queue poisoned");
        let was_empty = q.records.is_empty();
        let before = q.records.len();
        q.records.extend(records);
        q.next_seq += (q.records.len() - before) as u64;
        let end = q.next_seq;
        if q.records.len() > before {
            q.ends.push_back(end);
        }
        // An event may go out once its own records are durable, also where a batch is split.
        q.history
            .extend(history.into_iter().map(|w| (end, w.durable_at(end))));
        self.queued.store(end, Ordering::Release);
        drop(q);
        if was_empty {
            self.wake.notify_one();
        }
        end
    }

    /// Runs `then` once every record below `end` is durable: at once on this thread if they are
    /// already, else on the syncer's thread when it publishes the sync that covers them. An actor
    /// hands its caller's reply over this way, so the caller is woken once, with an answer it may
    /// give, instead of once for the reply and again for the durable end.
    pub fn when_durable(&self, end: u64, then: impl FnOnce() + Send + 'static) {
        if self.durable_seq() >= end {
            return then();
        }
        let mut waiters = self.waiters.lock().expect("journal waiters poisoned");
        if waiters.durable >= end {
            drop(waiters);
            return then();
        }
        waiters.by_seq.entry(end).or_default().push(Box::new(then));
    }

    /// Resolves once every record below `end` is durable.
    pub async fn wait_durable(&self, end: u64) -> Result<(), WriterStopped> {
        if self.durable_seq() >= end {
            return Ok(());
        }
        let (sender, receiver) = oneshot::channel();
        self.when_durable(end, move || {
            let _ = sender.send(());
        });
        receiver.await.map_err(|_| WriterStopped)
    }

    /// Publishes a new durable end and wakes the callers it covers.
    fn publish(&self, end: u64) {
        let ready = {
            let mut waiters = self.waiters.lock().expect("journal waiters poisoned");
            waiters.durable = end;
            self.durable.store(end, Ordering::Release);
            let later = waiters.by_seq.split_off(&(end + 1));
            std::mem::replace(&mut waiters.by_seq, later)
        };
        for then in ready.into_values().flatten() {
            then();
        }
    }

    /// Records queued or being written, not yet durable.
    pub fn backlog(&self) -> u64 {
        self.queued
            .load(Ordering::Acquire)
            .saturating_sub(self.durable_seq())
    }

    /// Every record below this sequence is on disk.
    pub fn durable_seq(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// The sequence the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.queue.lock().expect("journal queue poisoned").next_seq
    }

    /// Lets the writer finish what is queued and stop.
    pub fn close(&self) {
        self.queue.lock().expect("journal queue poisoned").closed = true;
        self.wake.notify_one();
    }

    /// Takes the queued records and history writes, leaving `spare` (empty, with its capacity) in
    /// place of the records so the queue does not grow a new vector for every batch. A split batch
    /// takes only the history writes of the pushes it ends: the rest goes with the part that holds
    /// their records, since history must never reach the disk before its frame.
    fn take(&self, mut spare: Vec<Record>) -> Option<(u64, Vec<Record>, Vec<HistoryWrite>)> {
        let mut q = self.queue.lock().expect("journal queue poisoned");
        while q.records.is_empty() {
            if q.closed {
                return None;
            }
            q = self.wake.wait(q).expect("journal queue poisoned");
        }
        let first_seq = q.next_seq - q.records.len() as u64;
        let take = if q.records.len() <= BATCH_RECORDS_MAX {
            q.records.len()
        } else {
            // The last push that ends within the limit, or the first one whole.
            let limit = first_seq + BATCH_RECORDS_MAX as u64;
            let within = q.ends.partition_point(|&end| end <= limit);
            let end = q.ends[within.saturating_sub(1)];
            (end - first_seq) as usize
        };
        let batch: Vec<Record> = if take == q.records.len() {
            spare.clear();
            std::mem::replace(&mut q.records, spare)
        } else {
            q.records.drain(..take).collect()
        };
        let end = first_seq + take as u64;
        let pushes = q.ends.partition_point(|&pushed| pushed <= end);
        q.ends.drain(..pushes);
        let ended = q
            .history
            .partition_point(|(pushed_end, _)| *pushed_end <= end);
        let history = q.history.drain(..ended).map(|(_, write)| write).collect();
        Some((first_seq, batch, history))
    }
}

/// The end of what the writer has appended, waiting for the syncer.
struct Appended {
    state: Mutex<(u64, bool)>,
    more: Condvar,
}

impl Appended {
    fn new(end: u64) -> Arc<Appended> {
        Arc::new(Appended {
            state: Mutex::new((end, false)),
            more: Condvar::new(),
        })
    }

    fn advance(&self, end: u64) {
        self.state.lock().expect("appended end poisoned").0 = end;
        self.more.notify_one();
    }

    fn close(&self) {
        self.state.lock().expect("appended end poisoned").1 = true;
        self.more.notify_one();
    }

    /// Waits for an end past `synced`; `None` once closed with nothing left to sync.
    fn next_after(&self, synced: u64) -> Option<u64> {
        let mut state = self.state.lock().expect("appended end poisoned");
        while state.0 <= synced {
            if state.1 {
                return None;
            }
            state = self.more.wait(state).expect("appended end poisoned");
        }
        Some(state.0)
    }
}

/// Nothing can be acknowledged once the journal fails, and memory is ahead of the disk: stopping
/// is the only safe answer. Recovery starts from the disk.
fn stop_on_failure(error: impl std::fmt::Display, first_seq: u64) -> ! {
    tracing::error!(%error, first_seq, "journal write failed; stopping");
    std::process::abort();
}

/// Runs the writer on its own thread until the queue is closed and drained. Without a journal it
/// only publishes sequences: the ceiling of a benchmark, never a way to run a server.
///
/// With a journal, a group commit is three steps on three threads: the writer appends the batch
/// (its frame, then its history) to sled's buffers and goes on to the next batch; the flusher has
/// sled write out everything appended before it began (a wait for the disk); the syncer
/// fdatasyncs what was written out (a second wait) and publishes that end. The disk's waits and
/// the next batches' appends overlap, and the batches appended during one step share the next;
/// no caller is answered before the fdatasync that covers its records has returned.
pub fn spawn<J: Journal>(
    queue: Arc<JournalQueue>,
    mut journal: Option<(J, History)>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || {
            let appended = Appended::new(queue.durable_seq());
            let syncer = journal
                .as_ref()
                .map(|(j, _)| spawn_syncer(queue.clone(), j.disk_sync(), appended.clone()));
            let batch_records = metrics::histogram!("vevee_journal_batch_records");
            let flush_seconds = metrics::histogram!("vevee_journal_flush_seconds");
            let mut spare = Vec::new();
            while let Some((first_seq, records, history_writes)) = queue.take(spare) {
                let started = Instant::now();
                let end = first_seq + records.len() as u64;
                if let Some((journal, history)) = &mut journal {
                    // The journal frame first, then the history its records cause. sled can put
                    // either on disk before the sync (its own flusher writes its buffers every
                    // half second; a kill -9 keeps whatever reached the file), and its log comes
                    // back as a prefix. In this order a crash can only keep the frame without
                    // its history, which replay writes again; history without its frame (a page
                    // of lines that are still in the recovered tail, or of lines never made) is
                    // what the other order allowed.
                    let frame = encode_batch(first_seq, &records)
                        .unwrap_or_else(|e| stop_on_failure(e, first_seq));
                    if let Err(e) = journal.append(first_seq, &frame) {
                        stop_on_failure(e, first_seq);
                    }
                    if let Err(e) = history.write_batch(end, &history_writes) {
                        stop_on_failure(e, first_seq);
                    }
                    appended.advance(end);
                } else {
                    queue.publish(end);
                }
                batch_records.record(records.len() as f64);
                flush_seconds.record(started.elapsed().as_secs_f64());
                spare = records;
            }
            appended.close();
            if let Some(syncer) = syncer {
                syncer.join().expect("the journal syncer thread panicked");
            }
        })
        .expect("spawn the journal writer thread")
}

/// The syncer: two stages on two threads, each one step at a time. The flusher has sled write out
/// every batch appended before it began (a wait for the disk); the syncer fdatasyncs what the
/// flusher wrote (a second wait) and publishes that end. While one group is in fdatasync, the
/// next is written out, so a group's two waits overlap the neighbours' instead of adding up.
fn spawn_syncer(
    queue: Arc<JournalQueue>,
    sync: DiskSync,
    appended: Arc<Appended>,
) -> std::thread::JoinHandle<()> {
    let start = queue.durable_seq();
    let written = Appended::new(start);
    let flusher = {
        let (sync, advance, close) = (sync.clone(), written.clone(), written.clone());
        spawn_stage(
            "journal-flusher",
            metrics::histogram!("vevee_journal_write_out_seconds"),
            appended,
            start,
            move || sync.write_out(),
            move |end| advance.advance(end),
            move || close.close(),
        )
    };
    spawn_stage(
        "journal-syncer",
        metrics::histogram!("vevee_journal_sync_seconds"),
        written,
        start,
        move || sync.sync_data(),
        move |end| queue.publish(end),
        move || flusher.join().expect("the journal flusher thread panicked"),
    )
}

/// One stage of the group commit on a thread of its own: waits for an end past the one it
/// covered, runs `step` once for everything up to it, then hands that end to `done`. Once `input`
/// is closed and covered, runs `finish`.
fn spawn_stage(
    name: &str,
    seconds: metrics::Histogram,
    input: Arc<Appended>,
    start: u64,
    step: impl Fn() -> Result<(), JournalError> + Send + 'static,
    done: impl Fn(u64) + Send + 'static,
    finish: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut covered = start;
            while let Some(end) = input.next_after(covered) {
                let started = Instant::now();
                if let Err(e) = step() {
                    stop_on_failure(e, covered);
                }
                seconds.record(started.elapsed().as_secs_f64());
                done(end);
                covered = end;
            }
            finish();
        })
        .unwrap_or_else(|e| panic!("spawn the {name} thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::{Event, EventKind};
    use crate::engine::ids::UserId;
    use crate::engine::ledger::LedgerLine;
    use crate::engine::time::Ts;
    use crate::engine::{Mode, UserKey};
    use crate::persistence::{Batches, JournalError, SledJournal};

    /// The sled journal, checking at every append that the batch's history is not on the store
    /// yet: a crash can then keep a frame without its history, never history without its frame.
    struct FrameFirst {
        inner: SledJournal,
        history: History,
        user: UserKey,
        appends: Arc<AtomicU64>,
    }

    impl Journal for FrameFirst {
        type Frame = <SledJournal as Journal>::Frame;

        fn append(&mut self, first_seq: u64, frame: &[u8]) -> Result<(), JournalError> {
            let lines = self.history.lines_newest_first(&self.user, None).count();
            assert_eq!(
                lines, 0,
                "batch {first_seq}'s history was written before its frame"
            );
            self.appends.fetch_add(1, Ordering::SeqCst);
            self.inner.append(first_seq, frame)
        }
        fn disk_sync(&self) -> DiskSync {
            self.inner.disk_sync()
        }
        fn last_batch(&self) -> Result<Option<(u64, Self::Frame)>, JournalError> {
            self.inner.last_batch()
        }
        fn batches_from(&self, seq: u64) -> Batches<'_, Self::Frame> {
            self.inner.batches_from(seq)
        }
        fn truncate_from(&mut self, first_seq: u64) -> Result<u64, JournalError> {
            self.inner.truncate_from(first_seq)
        }
        fn remove_before(&mut self, seq: u64) -> Result<u64, JournalError> {
            self.inner.remove_before(seq)
        }
        fn size_on_disk(&self) -> Result<u64, JournalError> {
            self.inner.size_on_disk()
        }
    }

    /// Queues `records` records in one push whose last one pages a line out, and checks every
    /// append of the writer (see [`FrameFirst`]) until they are durable.
    async fn frame_before_history(records: usize) {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = SledJournal::open(dir.path()).expect("open");
        let history = History::open(&journal).expect("history");
        let user = UserKey {
            app: "a".into(),
            mode: Mode::Live,
            user: UserId::parse("ana").expect("user id"),
        };
        let appends = Arc::new(AtomicU64::new(0));
        let checked = FrameFirst {
            inner: journal,
            history: history.clone(),
            user: user.clone(),
            appends: appends.clone(),
        };
        let queue = JournalQueue::new(0);
        let line = LedgerLine {
            event: Arc::new(Event {
                id: "evt_01M85J543XM195EGYG1A595XY4_715dfd2b8dd727ce".into(),
                at: Ts(0),
                kind: EventKind::UsageExpired {
                    reservation_id: "res_x".into(),
                },
            }),
            reservation: None,
            pack_id: None,
        };
        let page = HistoryWrite::Page {
            user: user.clone(),
            lines: Arc::new(vec![line]),
        };
        // Queued before the writer starts, so it finds them all at once: one record per push, the
        // last with the page.
        for _ in 1..records {
            queue.push([Record::FlushLedger { key: user.clone() }]);
        }
        let end = queue.push_with_history([Record::FlushLedger { key: user.clone() }], [page]);
        let writer = spawn(queue.clone(), Some((checked, history.clone())));
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(20), queue.wait_durable(end)).await;
        if waited.is_err() {
            // The writer stopped on the check in `append`: show its panic.
            let stopped = writer
                .join()
                .expect_err("a writer that publishes nothing has stopped");
            std::panic::resume_unwind(stopped);
        }
        let frames = records.div_ceil(BATCH_RECORDS_MAX) as u64;
        assert_eq!(appends.load(Ordering::SeqCst), frames);
        assert_eq!(history.lines_newest_first(&user, None).count(), 1);
        queue.close();
        writer.join().expect("the writer stops cleanly");
    }

    #[tokio::test]
    async fn a_batch_frame_is_appended_before_the_history_it_causes_and_both_are_durable_at_its_answer()
     {
        frame_before_history(1).await;
    }

    #[tokio::test]
    async fn a_split_batch_writes_each_history_write_with_the_part_that_holds_its_records() {
        frame_before_history(BATCH_RECORDS_MAX + 10).await;
    }

    #[test]
    fn a_long_queue_is_cut_between_pushes_and_a_push_past_the_limit_goes_whole() {
        let user = UserKey {
            app: "a".into(),
            mode: Mode::Live,
            user: UserId::parse("ana").expect("user id"),
        };
        let flush = || Record::FlushLedger { key: user.clone() };
        let queue = JournalQueue::new(0);
        for _ in 0..6 {
            queue.push((0..3_000).map(|_| flush()));
        }
        let sizes: Vec<(u64, usize)> = (0..2)
            .map(|_| {
                let (first, batch, _) = queue.take(Vec::new()).expect("queued");
                (first, batch.len())
            })
            .collect();
        assert_eq!(
            sizes,
            [(0, 15_000), (15_000, 3_000)],
            "five pushes, then the sixth"
        );

        let queue = JournalQueue::new(0);
        queue.push((0..BATCH_RECORDS_MAX + 10).map(|_| flush()));
        queue.push([flush()]);
        let (first, batch, _) = queue.take(Vec::new()).expect("queued");
        assert_eq!(
            (first, batch.len()),
            (0, BATCH_RECORDS_MAX + 10),
            "one push, whole"
        );
        let (first, batch, _) = queue.take(Vec::new()).expect("queued");
        assert_eq!((first, batch.len()), (BATCH_RECORDS_MAX as u64 + 10, 1));
    }
}
