//! The deliverer: one task, apart from the request path, that hands durable events to the
//! endpoints that want them and POSTs them until each is delivered or given up.
//!
//! 1. **Fan-out.** Every [`POLL_EVERY`] (and at once again while more are waiting) it takes the
//!    events the history holds as undelivered (only those whose journal records are durable),
//!    writes one outbox row per matching enabled endpoint of the event's app and mode, syncs, and
//!    only then tells the history they are taken. A crash between the two sends those events
//!    again: at least once, never lost.
//! 2. **Attempts.** Due rows are sent by tasks of their own, at most [`IN_FLIGHT_MAX`] at a time,
//!    each with a [`ATTEMPT_TIMEOUT`]. A 2xx deletes the row; anything else schedules the next
//!    attempt after the app's `webhook_retry_seconds` plus up to 10 % jitter (so endpoints that
//!    failed together do not retry together), and past the last wait the row is given up.
//! 3. **Endpoint health.** An endpoint that has failed for the app's
//!    `webhook_disable_after_seconds` (24 h) without a success is disabled; one whose outbox is
//!    full ([`OUTBOX_ROWS_PER_ENDPOINT_MAX`]) is disabled and further events for it are dropped
//!    and counted (they stay in `GET /v1/events`).
//! 4. **Disabled endpoints** (by the server or by the app) are sent nothing, and lose nothing
//!    more: they keep their outbox, get rows for new events, and a last attempt that fails is
//!    kept rather than given up; all of it is parked until the endpoint is enabled again, up to
//!    the outbox bound.
//!
//! The schedule lives in memory and is rebuilt from the outbox at start, so a restart (or kill -9)
//! resumes where the disk says. The only thing the request path shares with this task is sled.

use super::endpoint::Endpoint;
use super::registry::Registry;
use super::signing;
use crate::actors::journal_writer::JournalQueue;
use crate::engine::notice::NoticeType;
use crate::persistence::History;
use crate::persistence::history::{NoticeKey, Undelivered};
use crate::persistence::webhooks::{WebhookStore, row_key};
use crate::views;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Whether a fan-out left durable events for the next one.
#[derive(PartialEq, Eq)]
enum FanOut {
    Done,
    More,
}

/// How often the history is looked at for new durable events. A change is acknowledged once its
/// event is durable, so this is only how soon the first attempt starts.
pub const POLL_EVERY: Duration = Duration::from_millis(100);
/// Events taken from the history per look (one outbox write and one sync).
const FAN_OUT_EVENTS_MAX: usize = 512;
/// Attempts under way at once, across endpoints: a slow receiver holds a slot for at most
/// [`ATTEMPT_TIMEOUT`], never the request path.
pub const IN_FLIGHT_MAX: usize = 32;
/// API.md: a 2xx within 10 s delivers.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pending deliveries per endpoint; at the bound new events for it are dropped (and counted) and
/// the endpoint is disabled with the reason "outbox full".
pub const OUTBOX_ROWS_PER_ENDPOINT_MAX: usize = 10_000;
/// Finished attempts kept per endpoint, for the dashboard.
pub const RECENT_ATTEMPTS_MAX: usize = 100;

/// One pending delivery of one event to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub event_id: String,
    pub kind: NoticeType,
    /// The event's JSON: the same bytes on every attempt, so the same `webhook-id` always comes
    /// with the same body.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Wall-clock milliseconds of the next attempt.
    pub next_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Delivered,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Failed, and it was the last attempt.
    GivenUp,
    /// Not queued: the endpoint's outbox was full.
    Dropped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retrying => "failed, will retry",
            Outcome::GivenUp => "failed, given up",
            Outcome::Dropped => "dropped (outbox full)",
        }
    }
}

/// One finished attempt, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub event_id: String,
    pub kind: NoticeType,
    pub at_ms: i64,
    pub outcome: Outcome,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why there was no answer (timeout, refused connection), if none came.
    pub error: Option<String>,
    /// Attempts made for this event so far, this one included.
    pub attempts: u32,
    pub next_at_ms: Option<i64>,
}

/// Endpoints' last attempts, newest first: written by the deliverer, read by the dashboard.
#[derive(Default)]
pub struct Activity {
    recent: Mutex<HashMap<String, VecDeque<Attempt>>>,
}

impl Activity {
    pub fn recent(&self, endpoint: &str) -> Vec<Attempt> {
        self.lock()
            .get(endpoint)
            .map(|list| list.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Attempt>>> {
        self.recent.lock().expect("webhook activity poisoned")
    }

    fn record(&self, endpoint: &str, attempt: Attempt) -> Vec<Attempt> {
        let mut map = self.lock();
        let list = map.entry(endpoint.to_owned()).or_default();
        list.push_front(attempt);
        list.truncate(RECENT_ATTEMPTS_MAX);
        list.iter().cloned().collect()
    }
}

/// Why a resend was not queued.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("event '{0}' is no longer kept (events are kept 30 days)")]
    EventGone(String),
    #[error("the endpoint is disabled; enable it first")]
    Disabled,
    #[error("the endpoint's outbox is full")]
    OutboxFull,
    #[error("the deliverer is not running")]
    Stopped,
    #[error("the webhook store failed: {0}")]
    Store(String),
}

pub(super) enum Command {
    Resend {
        endpoint: Endpoint,
        event: NoticeKey,
        done: oneshot::Sender<Result<(), ResendError>>,
    },
}

/// What an attempt's answer says about its endpoint.
enum Health {
    /// It answered 2xx after failures.
    Answered,
    /// Its first failure since its last success, at this wall-clock millisecond.
    FailingSince(i64),
    /// It has failed for this many milliseconds, the app's limit: it is disabled.
    FailedTooLong(i64),
    Unchanged,
}

/// The answer of one attempt: the status, or why there was none.
struct Sent {
    row_key: Vec<u8>,
    endpoint: String,
    result: Result<u16, String>,
}

pub(super) struct Deliverer {
    pub registry: Arc<Registry>,
    pub store: WebhookStore,
    pub history: History,
    pub journal: Arc<JournalQueue>,
    pub activity: Arc<Activity>,
    /// Each app's retries and patience.
    pub policies: HashMap<String, Policy>,
}

/// How one app's deliveries are retried and when its endpoints are given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `webhook_retry_seconds`: the waits before each retry.
    pub retry_seconds: Vec<u64>,
    /// `webhook_disable_after_seconds`, in milliseconds: failing this long disables an endpoint.
    pub disable_after_ms: i64,
}

impl Policy {
    pub fn of(app: &crate::config::AppConfig) -> Policy {
        let seconds = i64::try_from(app.webhook_disable_after_seconds).unwrap_or(i64::MAX / 1000);
        Policy {
            retry_seconds: app.webhook_retry_seconds.clone(),
            disable_after_ms: seconds.saturating_mul(1000),
        }
    }
}

/// The reason shown for an endpoint disabled after `ms` of failures: "24 hours", "2 seconds".
fn failing_reason(ms: i64) -> String {
    let seconds = ms / 1000;
    let (n, unit) = match seconds {
        s if s % 3600 == 0 => (s / 3600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    let plural = if n == 1 { "" } else { "s" };
    format!("every delivery failed for {n} {unit}{plural}")
}

/// What the task keeps in memory: the schedule of pending rows and counts per endpoint.
struct Schedule {
    due: BTreeSet<(i64, Vec<u8>)>,
    /// Row key → its place in `due`.
    at: HashMap<Vec<u8>, i64>,
    in_flight: HashSet<Vec<u8>>,
    /// Rows on disk per endpoint (the outbox depth).
    depth: HashMap<String, usize>,
}

impl Schedule {
    fn put(&mut self, key: Vec<u8>, at_ms: i64) {
        if let Some(old) = self.at.insert(key.clone(), at_ms) {
            self.due.remove(&(old, key.clone()));
        }
        self.due.insert((at_ms, key));
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.at.remove(key) {
            self.due.remove(&(old, key.to_vec()));
        }
    }
}

fn now_ms() -> i64 {
    crate::actors::clock::real_now().0
}

/// The endpoint id a row key starts with.
fn endpoint_of(row_key: &[u8]) -> String {
    let end = row_key
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(row_key.len());
    String::from_utf8_lossy(&row_key[..end]).into_owned()
}

/// `seconds` plus 0–10 % jitter, in milliseconds.
fn with_jitter(seconds: u64) -> i64 {
    let base = i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    let mut bytes = [0u8; 4];
    let roll = match getrandom::fill(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => 0,
    };
    base + (base / 10) * i64::from(roll % 1001) / 1000
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        // A redirect is not a delivery: the app should register the final URL.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vevee-webhooks/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(4)
        .build()
        .expect("the webhook HTTP client builds with rustls")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

impl Deliverer {
    pub(super) async fn run(self, mut commands: mpsc::Receiver<Command>) {
        let client = client();
        let (sent_tx, mut sent_rx) = mpsc::channel::<Sent>(IN_FLIGHT_MAX * 2);
        let mut schedule = Schedule {
            due: BTreeSet::new(),
            at: HashMap::new(),
            in_flight: HashSet::new(),
            depth: HashMap::new(),
        };
        self.load(&mut schedule).await;
        let mut enabled: HashSet<String> = self.enabled_ids();
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.dispatch(&mut schedule, &client, &sent_tx).await;
            let next_due = schedule
                .due
                .first()
                .map(|(at, _)| Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)))
                .filter(|_| schedule.in_flight.len() < IN_FLIGHT_MAX)
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = poll.tick() => {
                    if self.fan_out(&mut schedule).await == FanOut::More {
                        // A backlog (a burst of events, or a restart) drains at the speed of
                        // the disk rather than one batch per tick; the other arms still get
                        // their turn in between.
                        poll.reset_immediately();
                    }
                }
                Some(sent) = sent_rx.recv() => self.finish(&mut schedule, sent).await,
                Some(command) = commands.recv() => self.command(&mut schedule, command).await,
                () = self.registry.changed.notified() => {
                    enabled = self.endpoints_changed(&mut schedule, enabled).await;
                }
                () = tokio::time::sleep(next_due) => {}
            }
        }
    }

    fn enabled_ids(&self) -> HashSet<String> {
        self.registry
            .all()
            .into_iter()
            .filter(|e| e.enabled)
            .map(|e| e.id)
            .collect()
    }

    /// Rebuilds the schedule from the outbox and the recent attempts from their store.
    async fn load(&self, schedule: &mut Schedule) {
        let store = self.store.clone();
        let ids: Vec<String> = self.registry.all().into_iter().map(|e| e.id).collect();
        let loaded = blocking(move || {
            let rows = store.rows::<Row>()?;
            let mut recent = Vec::new();
            for id in ids {
                if let Some(list) = store.recent::<Vec<Attempt>>(&id)? {
                    recent.push((id, list));
                }
            }
            Ok::<_, crate::persistence::webhooks::WebhookStoreError>((rows, recent))
        })
        .await;
        let (rows, recent) = match loaded {
            Some(Ok(loaded)) => loaded,
            Some(Err(error)) => {
                tracing::error!(%error, "reading the webhook outbox failed; pending deliveries wait for a restart");
                return;
            }
            None => return,
        };
        {
            let mut map = self.activity.lock();
            for (id, list) in recent {
                map.insert(id, list.into());
            }
        }
        for (key, row) in rows {
            *schedule.depth.entry(endpoint_of(&key)).or_default() += 1;
            schedule.put(key, row.next_at_ms);
        }
        self.report_depths(schedule);
    }

    fn report_depths(&self, schedule: &Schedule) {
        for endpoint in self.registry.all() {
            let depth = schedule.depth.get(&endpoint.id).copied().unwrap_or(0);
            metrics::gauge!("vevee_webhook_outbox_depth",
                "app" => endpoint.app.clone(), "mode" => endpoint.mode.as_str(),
                "endpoint" => endpoint.id.clone())
            .set(depth as f64);
        }
    }

    /// New durable events become outbox rows for the endpoints that want them.
    async fn fan_out(&self, schedule: &mut Schedule) -> FanOut {
        let durable = self.journal.durable_seq();
        let history = self.history.clone();
        let events = match blocking(move || history.undelivered(durable, FAN_OUT_EVENTS_MAX)).await
        {
            Some(Ok(events)) if !events.is_empty() => events,
            Some(Ok(_)) | None => return FanOut::Done,
            Some(Err(error)) => {
                tracing::error!(%error, "reading undelivered events failed");
                return FanOut::Done;
            }
        };
        let read_all = events.len() < FAN_OUT_EVENTS_MAX;
        let endpoints = self.registry.settled().await;
        let now = now_ms();
        let mut rows: Vec<(Vec<u8>, Row)> = Vec::new();
        let mut full: Vec<(Endpoint, Attempt)> = Vec::new();
        let mut added: HashMap<String, usize> = HashMap::new();
        for event in &events {
            let kind = event.stored.notice.notice.kind;
            let mut body = None;
            for endpoint in endpoints.iter().filter(|e| wants(e, event, kind)) {
                let depth = schedule.depth.get(&endpoint.id).copied().unwrap_or(0)
                    + added.get(&endpoint.id).copied().unwrap_or(0);
                let id = &event.stored.notice.id;
                if depth >= OUTBOX_ROWS_PER_ENDPOINT_MAX {
                    metrics::counter!("vevee_webhook_dropped_total",
                        "app" => endpoint.app.clone(), "mode" => endpoint.mode.as_str(),
                        "endpoint" => endpoint.id.clone())
                    .increment(1);
                    full.push((
                        endpoint.clone(),
                        Attempt {
                            event_id: id.to_string(),
                            kind,
                            at_ms: now,
                            outcome: Outcome::Dropped,
                            status: None,
                            error: None,
                            attempts: 0,
                            next_at_ms: None,
                        },
                    ));
                    continue;
                }
                let body = body.get_or_insert_with(|| {
                    views::event(event.mode, &event.stored.user, &event.stored.notice).to_string()
                });
                *added.entry(endpoint.id.clone()).or_default() += 1;
                rows.push((
                    row_key(&endpoint.id, event.key.as_bytes()),
                    Row {
                        event_id: id.to_string(),
                        kind,
                        body: body.clone(),
                        attempts: 0,
                        next_at_ms: now,
                    },
                ));
            }
        }
        let store = self.store.clone();
        let history = self.history.clone();
        let keys: Vec<NoticeKey> = events.into_iter().map(|e| e.key).collect();
        let written = blocking(move || {
            store.add_rows(&rows).map_err(|e| e.to_string())?;
            // Only once the rows are durable: a crash before this sends the events again.
            history.taken(keys).map_err(|e| e.to_string())?;
            Ok::<_, String>(rows)
        })
        .await;
        let rows = match written {
            Some(Ok(rows)) => rows,
            Some(Err(error)) => {
                tracing::error!(%error, "writing the webhook outbox failed; retrying");
                return FanOut::Done;
            }
            None => return FanOut::Done,
        };
        let enabled: HashSet<&str> = endpoints
            .iter()
            .filter(|e| e.enabled)
            .map(|e| e.id.as_str())
            .collect();
        for (key, row) in rows {
            let endpoint = endpoint_of(&key);
            // A disabled endpoint's rows are parked: enabling it schedules them.
            if enabled.contains(endpoint.as_str()) {
                schedule.put(key, row.next_at_ms);
            }
            *schedule.depth.entry(endpoint).or_default() += 1;
        }
        for (endpoint, attempt) in full {
            self.activity.record(&endpoint.id, attempt);
            if let Err(error) = self.registry.disable(&endpoint.id, "outbox full").await {
                tracing::error!(%error, "disabling a webhook endpoint failed");
            }
        }
        self.report_depths(schedule);
        if read_all { FanOut::Done } else { FanOut::More }
    }

    /// Starts the attempts that are due, up to [`IN_FLIGHT_MAX`] under way.
    async fn dispatch(
        &self,
        schedule: &mut Schedule,
        client: &reqwest::Client,
        sent: &mpsc::Sender<Sent>,
    ) {
        let now = now_ms();
        let mut due = Vec::new();
        while schedule.in_flight.len() + due.len() < IN_FLIGHT_MAX {
            let Some((at, key)) = schedule.due.first().cloned() else {
                break;
            };
            if at > now {
                break;
            }
            schedule.remove(&key);
            due.push(key);
        }
        if due.is_empty() {
            return;
        }
        let store = self.store.clone();
        let keys = due.clone();
        let rows = blocking(move || {
            keys.iter()
                .map(|k| store.row::<Row>(k).ok().flatten())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (key, row) in due.into_iter().zip(rows) {
            let endpoint_id = endpoint_of(&key);
            let Some(row) = row else { continue };
            let Some(endpoint) = self
                .registry
                .all()
                .into_iter()
                .find(|e| e.id == endpoint_id)
            else {
                continue;
            };
            if !endpoint.enabled {
                // Parked on disk; enabling the endpoint schedules it again.
                continue;
            }
            schedule.in_flight.insert(key.clone());
            let client = client.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                let result = attempt(&client, &endpoint, &row).await;
                let _ = sent
                    .send(Sent {
                        row_key: key,
                        endpoint: endpoint.id,
                        result,
                    })
                    .await;
            });
        }
    }

    /// Records an attempt's answer: delete the row, schedule the next attempt, or give up.
    async fn finish(&self, schedule: &mut Schedule, sent: Sent) {
        schedule.in_flight.remove(&sent.row_key);
        let Some(endpoint) = self
            .registry
            .all()
            .into_iter()
            .find(|e| e.id == sent.endpoint)
        else {
            schedule.depth.remove(&sent.endpoint);
            return;
        };
        let store = self.store.clone();
        let key = sent.row_key.clone();
        let Some(Ok(Some(mut row))) = blocking(move || store.row::<Row>(&key)).await else {
            return;
        };
        let now = now_ms();
        row.attempts += 1;
        let delivered = matches!(sent.result, Ok(status) if (200..300).contains(&status));
        let policy = self.policies.get(&endpoint.app);
        let waits = policy.map_or(&[][..], |p| p.retry_seconds.as_slice());
        let disable_after_ms = policy.map_or(i64::MAX, |p| p.disable_after_ms);
        let disables = !delivered
            && endpoint
                .failing_since_ms
                .is_some_and(|since| now - since >= disable_after_ms);
        let next = match waits.get(row.attempts as usize - 1) {
            _ if delivered => None,
            Some(&seconds) => Some(now + with_jitter(seconds)),
            // The last attempt, but the endpoint is (or is now being) disabled: the row is kept,
            // parked, so that a disabled endpoint loses nothing more until it is enabled again.
            None if disables || !endpoint.enabled => Some(now),
            None => None,
        };
        let outcome = match (delivered, next) {
            (true, _) => Outcome::Delivered,
            (false, Some(_)) => Outcome::Retrying,
            (false, None) => Outcome::GivenUp,
        };
        let labels = [
            ("app", endpoint.app.clone()),
            ("mode", endpoint.mode.as_str().to_owned()),
            (
                "outcome",
                if delivered { "delivered" } else { "failed" }.to_owned(),
            ),
        ];
        metrics::counter!("vevee_webhook_attempts_total", &labels).increment(1);
        let change = match next {
            Some(at) => {
                row.next_at_ms = at;
                Some(row.clone())
            }
            None => None,
        };
        let attempt = Attempt {
            event_id: row.event_id.clone(),
            kind: row.kind,
            at_ms: now,
            outcome,
            status: sent.result.as_ref().ok().copied(),
            error: sent.result.as_ref().err().cloned(),
            attempts: row.attempts,
            next_at_ms: next,
        };
        let list = self.activity.record(&endpoint.id, attempt);
        let store = self.store.clone();
        let key = sent.row_key.clone();
        let id = endpoint.id.clone();
        let written = blocking(move || {
            store.update_rows(&[(key, change)])?;
            store.put_recent(&[(id.as_str(), &list)])
        })
        .await;
        if let Some(Err(error)) = written {
            tracing::error!(%error, "recording a webhook attempt failed");
        }
        match next {
            Some(at) => schedule.put(sent.row_key, at),
            None => {
                if let Some(depth) = schedule.depth.get_mut(&endpoint.id) {
                    *depth = depth.saturating_sub(1);
                }
                self.report_depths(schedule);
            }
        }
        let health = match (delivered, endpoint.failing_since_ms) {
            (true, Some(_)) => Health::Answered,
            (false, None) => Health::FailingSince(now),
            _ if disables => Health::FailedTooLong(disable_after_ms),
            _ => Health::Unchanged,
        };
        self.health(&endpoint, health).await;
    }

    /// Notes an endpoint's failures since its last success, and disables it once they have
    /// lasted the app's `webhook_disable_after_seconds`.
    async fn health(&self, endpoint: &Endpoint, health: Health) {
        let result = match health {
            Health::Answered => self.registry.set_failing_since(&endpoint.id, None).await,
            Health::FailingSince(now) => {
                self.registry
                    .set_failing_since(&endpoint.id, Some(now))
                    .await
            }
            Health::FailedTooLong(window_ms) => {
                let reason = failing_reason(window_ms);
                self.registry.disable(&endpoint.id, &reason).await
            }
            Health::Unchanged => Ok(()),
        };
        if let Err(error) = result {
            tracing::error!(%error, "recording a webhook endpoint's health failed");
        }
    }

    async fn command(&self, schedule: &mut Schedule, command: Command) {
        match command {
            Command::Resend {
                endpoint,
                event,
                done,
            } => {
                let _ = done.send(self.resend(schedule, &endpoint, event).await);
            }
        }
    }

    /// Sends one event to one endpoint again now, with the same `webhook-id`.
    async fn resend(
        &self,
        schedule: &mut Schedule,
        endpoint: &Endpoint,
        event: NoticeKey,
    ) -> Result<(), ResendError> {
        if !endpoint.enabled {
            return Err(ResendError::Disabled);
        }
        let key = row_key(&endpoint.id, event.as_bytes());
        if schedule.in_flight.contains(&key) {
            return Ok(());
        }
        let now = now_ms();
        let store = self.store.clone();
        let history = self.history.clone();
        let row_at = key.clone();
        let found = blocking(move || {
            let pending = store
                .row::<Row>(&row_at)
                .map_err(|e| ResendError::Store(e.to_string()))?;
            let stored = history
                .event(&event)
                .map_err(|e| ResendError::Store(e.to_string()))?;
            Ok::<_, ResendError>((pending, stored, event))
        })
        .await
        .ok_or(ResendError::Stopped)??;
        let (pending, stored, event) = found;
        let row = match pending {
            Some(mut row) => {
                row.next_at_ms = now;
                row
            }
            None => {
                let stored = stored.ok_or_else(|| {
                    ResendError::EventGone(String::from_utf8_lossy(event.as_bytes()).into_owned())
                })?;
                if schedule.depth.get(&endpoint.id).copied().unwrap_or(0)
                    >= OUTBOX_ROWS_PER_ENDPOINT_MAX
                {
                    return Err(ResendError::OutboxFull);
                }
                *schedule.depth.entry(endpoint.id.clone()).or_default() += 1;
                Row {
                    event_id: stored.notice.id.to_string(),
                    kind: stored.notice.notice.kind,
                    body: views::event(endpoint.mode, &stored.user, &stored.notice).to_string(),
                    attempts: 0,
                    next_at_ms: now,
                }
            }
        };
        let store = self.store.clone();
        let write = vec![(key.clone(), row)];
        blocking(move || store.add_rows(&write))
            .await
            .ok_or(ResendError::Stopped)?
            .map_err(|e| ResendError::Store(e.to_string()))?;
        schedule.put(key, now);
        self.report_depths(schedule);
        Ok(())
    }

    /// An endpoint enabled again gets its parked rows back; a deleted one loses its schedule.
    async fn endpoints_changed(
        &self,
        schedule: &mut Schedule,
        was_enabled: HashSet<String>,
    ) -> HashSet<String> {
        let all = self.registry.all();
        let ids: HashSet<&str> = all.iter().map(|e| e.id.as_str()).collect();
        let gone: Vec<Vec<u8>> = schedule
            .at
            .keys()
            .filter(|k| !ids.contains(endpoint_of(k).as_str()))
            .cloned()
            .collect();
        for key in gone {
            schedule.remove(&key);
        }
        schedule.depth.retain(|id, _| ids.contains(id.as_str()));
        let now_enabled = self.enabled_ids();
        for id in now_enabled.difference(&was_enabled) {
            let store = self.store.clone();
            let endpoint = id.clone();
            if let Some(Ok(rows)) = blocking(move || store.rows_of::<Row>(&endpoint)).await {
                let now = now_ms();
                for (key, _) in rows {
                    if !schedule.in_flight.contains(&key) {
                        schedule.put(key, now);
                    }
                }
            }
        }
        self.report_depths(schedule);
        now_enabled
    }
}

/// Whether `endpoint` gets an outbox row for `event`: the same app and mode (test-mode events
/// never reach a live endpoint), subscribed to its type, and made after the endpoint was created.
/// Both times are the mode's clock (the test clock in test mode), so an endpoint never gets an
/// event from before it existed, however late the deliverer looks (see [`Registry::settled`]).
/// Enabled or not: a disabled endpoint's rows are parked until it is enabled again, so that the
/// app that repairs its receiver and enables it gets what happened meanwhile (up to the outbox
/// bound).
fn wants(endpoint: &Endpoint, event: &Undelivered, kind: NoticeType) -> bool {
    endpoint.in_scope(&event.app, event.mode)
        && endpoint.events.matches(kind)
        && event.stored.notice.at > endpoint.created_at
}

/// One POST, signed as the Standard Webhooks spec says. The status if the receiver answered.
async fn attempt(client: &reqwest::Client, endpoint: &Endpoint, row: &Row) -> Result<u16, String> {
    let now = now_ms();
    let timestamp = now / 1000;
    let signature = signing::signature_header(
        &endpoint.signing_secrets(now),
        &row.event_id,
        timestamp,
        row.body.as_bytes(),
    );
    let response = client
        .post(&endpoint.url)
        .header("content-type", "application/json")
        .header("webhook-id", &row.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(row.body.clone())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "no answer within 10 s".to_owned()
            } else if e.is_connect() {
                "could not connect".to_owned()
            } else {
                "the request failed".to_owned()
            }
        })?;
    // The body is not read: only the status counts, and a receiver's page must not cost memory.
    Ok(response.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        for _ in 0..100 {
            let ms = with_jitter(10);
            assert!((10_000..=11_000).contains(&ms), "{ms}");
        }
    }

    #[test]
    fn the_disabled_reason_names_the_app_s_window() {
        assert_eq!(
            failing_reason(24 * 3600 * 1000),
            "every delivery failed for 24 hours"
        );
        assert_eq!(failing_reason(60_000), "every delivery failed for 1 minute");
        assert_eq!(failing_reason(2_000), "every delivery failed for 2 seconds");
    }

    #[test]
    fn a_row_key_names_its_endpoint() {
        let key = row_key("we_1", b"app\0t\0evt");
        assert_eq!(endpoint_of(&key), "we_1");
    }
}
