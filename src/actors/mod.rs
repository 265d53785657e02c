//! The actor layer: it carries requests to the pure engine and answers once they are durable.
//!
//! [`Engine`] is the only type the HTTP layer sees. A request for a user finds that user's actor in
//! a concurrent map; only on a miss does the supervisor start one. The actor applies the command at
//! once and queues its events; the caller waits for the journal writer to make them durable while
//! the actor goes on with its next message (DESIGN.md rule 3).

pub mod clock;
pub mod journal_writer;
pub(crate) mod known;
mod long_lived;
pub mod snapshotter;
pub mod supervisor;
pub mod user_actor;

use crate::engine::bounds::Bounds;
use crate::engine::catalog::{Catalog, CatalogCommand, CatalogRejection, decide_catalog};
use crate::engine::ids::UserId;
use crate::engine::ledger::{LedgerPage, page_of};
use crate::engine::state::StoredAnswer;
use crate::engine::{Mode, Record, Rejection, Ts, UserKey, UserState};
use crate::persistence::image::{Image, Packed};
use crate::persistence::{History, HistoryWrite};
use actix::Addr;
use arc_swap::ArcSwap;
use clock::AppClock;
use dashmap::DashMap;
use journal_writer::JournalQueue;
use known::KnownUsers;
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use supervisor::Supervisor;
use user_actor::{Envelope, Reply, Request, UserActor, View};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Catalog(#[from] CatalogRejection),
    #[error("no app with id '{0}'")]
    UnknownApp(String),
    #[error("the server is overloaded; retry later")]
    Overloaded,
    #[error("the journal is not writing; the change may not be durable")]
    Unavailable,
    /// The user's actor panicked: the process is stopping so that recovery rebuilds the user
    /// from the journal.
    #[error(
        "an internal error stopped this user's actor; the server is restarting to recover the \
         user from its journal: retry later, with the same Idempotency-Key (whether the request \
         was applied is known once the server is back)"
    )]
    Restarting,
}

/// What one app shares between its actors: the catalog, the clock, and the deadlines of its
/// sleeping users.
pub struct AppShared {
    pub catalog: ArcSwap<Catalog>,
    /// Shared with the webhook registry, which stamps endpoints with the same time as events.
    pub clock: Arc<AppClock>,
    /// Serialises catalog and clock changes of the app: they are rare and must not interleave.
    writes: tokio::sync::Mutex<()>,
    /// Sleeping users by the deadline they must be woken for, live mode first: one index for all
    /// of them instead of a timer each. An entry may outlive its reason (the user woke up since);
    /// waking a user early costs one `Tick`. Users are named by [`UserKey::tag`] (resolved through
    /// `Shared::known`): 16 bytes an entry instead of a third copy of every sleeping user's key.
    deadlines: [Mutex<BTreeSet<(Ts, u64)>>; 2],
}

impl AppShared {
    fn deadlines(&self, mode: Mode) -> &Mutex<BTreeSet<(Ts, u64)>> {
        &self.deadlines[mode as usize]
    }
}

/// How the engine runs its actors.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Actor threads (arbiters).
    pub threads: usize,
    /// A user whose actor has had no message this long goes to sleep in its packed form.
    pub idle: Duration,
    /// Awake users beyond which those idle for a second go to sleep at once.
    pub awake_users_max: usize,
    /// Journal records queued and not yet durable beyond which commands are refused (503).
    pub journal_backlog_records_max: u64,
    pub bounds: Bounds,
    /// The testing hook [`user_actor::TEST_PANIC_USER_ENV`]: reserves and consumes of this user
    /// id panic in its actor. `None` outside tests.
    pub test_panic_user: Option<String>,
}

pub struct Shared {
    apps: FxHashMap<String, AppShared>,
    pub journal: Arc<JournalQueue>,
    /// Active subscriptions per (app, plan), both modes, so a plan in use is not deleted.
    subscribers: DashMap<(String, String), i64>,
    /// What has left memory: ledger pages, ended reservations, stored answers, payments. `None`
    /// only in benchmarks that run without a disk.
    pub history: Option<History>,
    /// Awake users: each has an actor.
    users: FxDashMap<UserKey, Addr<UserActor>>,
    /// Every known user by [`UserKey::tag`] (to route requests that name only an id), with the
    /// packed form of those asleep. A user is awake (in `users`) or asleep, except for the
    /// moment it goes to sleep: packed first, then its actor leaves `users` (see
    /// [`Shared::put_to_sleep`]).
    known: KnownUsers,
    idle: Duration,
    awake_users_max: usize,
    /// Records queued for the journal and not yet durable, beyond which a command is refused
    /// before it is applied.
    journal_backlog_max: u64,
    pub bounds: Bounds,
    test_panic_user: Option<String>,
    /// Users whose actor panicked. Their state in memory may be half-changed, so this process
    /// never serves them again (503) and stops; recovery rebuilds them from the journal.
    failed: FxDashMap<UserKey, ()>,
    /// The first user whose actor panicked, once one did: the server stops when it is set.
    failure: tokio::sync::watch::Sender<Option<UserKey>>,
}

/// Threads that put the recovered users to sleep at the start, at most: each user costs a
/// lookup in a table of a million (a cache miss) and a copy into fresh pages (the kernel zeroing
/// them is most of it), so the work scales with the cores.
const START_THREADS_MAX: usize = 8;

impl Shared {
    /// Puts every recovered user to sleep, spread over the cores (a million users took about
    /// 0.8 s on one thread), then frees the recovered map on a thread of its own, after the start.
    fn put_all_to_sleep(&self, users: FxHashMap<UserKey, Packed>) {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, START_THREADS_MAX);
        let sleep_share = |share: usize| {
            for (key, packed) in users.iter().skip(share).step_by(threads) {
                let Some(app) = self.apps.get(key.app.as_str()) else {
                    tracing::warn!(app = %key.app, "journal holds an app that is not configured; its users stay on disk");
                    continue;
                };
                if let Some(deadline) = packed.deadline {
                    app.deadlines(key.mode)
                        .lock()
                        .expect("deadline index poisoned")
                        .insert((deadline, key.tag()));
                }
                self.known.sleep(key, Some(packed));
            }
        };
        std::thread::scope(|scope| {
            for share in 0..threads {
                let spawned = std::thread::Builder::new()
                    .name("start-users".into())
                    .spawn_scoped(scope, move || sleep_share(share));
                if spawned.is_err() {
                    sleep_share(share);
                }
            }
        });
        // A million keys, the table and the mapped snapshot take a while to free; nothing waits.
        if users.len() > 10_000 {
            let _ = std::thread::Builder::new()
                .name("recovered-drop".into())
                .spawn(move || drop(users));
        }
    }

    pub fn app(&self, app: &str) -> &AppShared {
        self.apps
            .get(app)
            .expect("actors exist only for configured apps")
    }

    fn count_subscriber(&self, app: &str, plan: Option<&str>, delta: i64) {
        if let Some(plan) = plan {
            *self
                .subscribers
                .entry((app.to_owned(), plan.to_owned()))
                .or_default() += delta;
        }
    }

    /// Called by a user's actor that has been idle: the user goes back to its packed form (or
    /// away entirely if it holds nothing), and only then does the actor leave the map, so that a
    /// request arriving meanwhile finds either the actor (which answers "moved", and the request
    /// is sent again) or the packed user (from which a new actor starts).
    pub(crate) fn put_to_sleep(&self, key: &UserKey, state: &UserState, me: &Addr<UserActor>) {
        let packed = (*state != UserState::default())
            .then(|| Packed::pack(state).expect("a user state always encodes"));
        if let Some(deadline) = packed.as_ref().and_then(|p| p.deadline) {
            self.app(&key.app)
                .deadlines(key.mode)
                .lock()
                .expect("deadline index poisoned")
                .insert((deadline, key.tag()));
        }
        // A user that holds nothing is forgotten.
        self.known.sleep(key, packed.as_ref());
        self.users.remove_if(key, |_, addr| addr == me);
        // After a burst of users has gone to sleep, the map of awake ones would keep the
        // buckets of its peak (about 150 bytes a user at a million): give them back once it is
        // a quarter full. Shrinking to fit leaves it about full, so it happens again only after
        // as many users again have slept: O(1) per sleep, amortized.
        let capacity = self.users.capacity();
        if capacity > USERS_MAP_SHRINK_ABOVE && self.users.len() < capacity / 4 {
            self.users.shrink_to_fit();
        }
    }

    /// Called by a user's actor that caught a panic, before it drops its caller's reply and
    /// stops. Why the process stops rather than restarting the actor: the actor applies a command
    /// to its memory and then queues the records, so a panic can leave the state half-changed and
    /// ahead of the journal; the user's packed form left the known users when it woke, so the only
    /// sound copy is the last snapshot plus every journal record of the user after it, which
    /// recovery reads anyway and which this process has no cheap way to read for one user. So the
    /// user is refused from now on (503 with `Retry-After`, never a wait on a dead mailbox), the
    /// server stops taking connections, finishes what is in flight (the journal keeps writing:
    /// every other user's state is sound), and exits non-zero for its supervisor to start it
    /// again.
    pub(crate) fn actor_panicked(&self, key: &UserKey, panic: &str) {
        tracing::error!(
            app = %key.app,
            mode = key.mode.as_str(),
            user = %key.user.as_str(),
            panic,
            "a user's actor panicked; stopping the server so that recovery rebuilds the user \
             from the journal"
        );
        self.failed.insert(key.clone(), ());
        self.failure.send_if_modified(|first| {
            let unset = first.is_none();
            if unset {
                *first = Some(key.clone());
            }
            unset
        });
    }
}

/// Below this many buckets the map of awake users is not worth shrinking.
const USERS_MAP_SHRINK_ABOVE: usize = 1 << 16;

/// The maps on the request path hash with Fx: SipHash's protection against chosen keys costs more
/// than it buys for keys that are authenticated apps' own user ids.
type FxDashMap<K, V> = DashMap<K, V, rustc_hash::FxBuildHasher>;

/// How often the deadlines of sleeping users are looked at (live mode; test mode also on every
/// move of its clock).
const DEADLINE_TICK: Duration = Duration::from_secs(1);

/// How long a user must have been idle to be put to sleep early, past `awake_users_max`.
const PRESSED_IDLE: Duration = Duration::from_secs(1);

/// Sends to an actor that went to sleep meanwhile are tried again this many times.
const MOVED_RETRIES_MAX: usize = 64;

/// The answers to one user's share of a batch, in order, or why its message did not run.
pub type GroupAnswer = Result<Vec<Result<View, Rejection>>, EngineError>;

/// The handle to the running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    supervisor: Arc<Supervisor>,
}

impl Engine {
    /// Starts the engine over a recovered image: every user starts asleep, and the users whose
    /// deadlines come due are woken by the deadline index. `apps` are the configured app ids;
    /// `journal` is the queue whose writer is already running. Call from within a tokio runtime
    /// (the deadline ticker is a task).
    pub fn start(
        image: Image,
        apps: &[String],
        journal: Arc<JournalQueue>,
        history: Option<History>,
        options: EngineOptions,
    ) -> Engine {
        let Image {
            mut catalogs,
            test_clock_offsets_ms,
            subscribers,
            users,
        } = image;
        let apps = apps
            .iter()
            .map(|id| {
                let shared = AppShared {
                    catalog: ArcSwap::from_pointee(catalogs.remove(id).unwrap_or_default()),
                    clock: Arc::new(AppClock::new(
                        test_clock_offsets_ms.get(id).copied().unwrap_or(0),
                    )),
                    writes: tokio::sync::Mutex::new(()),
                    deadlines: Default::default(),
                };
                (id.clone(), shared)
            })
            .collect();
        let shared = Arc::new(Shared {
            apps,
            journal,
            subscribers: subscribers
                .into_iter()
                .map(|(k, n)| (k, i64::try_from(n).unwrap_or(i64::MAX)))
                .collect(),
            history,
            users: FxDashMap::default(),
            known: KnownUsers::with_capacity(users.len()),
            idle: options.idle,
            awake_users_max: options.awake_users_max,
            journal_backlog_max: options.journal_backlog_records_max,
            bounds: options.bounds,
            test_panic_user: options.test_panic_user,
            failed: FxDashMap::default(),
            failure: tokio::sync::watch::Sender::new(None),
        });
        shared.put_all_to_sleep(users);
        let engine = Engine {
            shared,
            supervisor: Arc::new(Supervisor::start(options.threads)),
        };
        let ticker = engine.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(DEADLINE_TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                ticker.wake_due_all().await;
                ticker.relieve_awake_users();
            }
        });
        engine
    }

    /// Past `awake_users_max` awake users, asks every awake one to sleep if it has been idle for
    /// [`PRESSED_IDLE`]: a burst of distinct users (a million consumes of a million users took
    /// 8.8 GB awake, BENCHMARKS.md) then costs memory for seconds, not for `idle_seconds`. Users
    /// in use stay awake, so the bound can be passed while they are; nothing is refused for it.
    fn relieve_awake_users(&self) {
        if self.shared.users.len() <= self.shared.awake_users_max {
            return;
        }
        tracing::info!(
            awake = self.shared.users.len(),
            max = self.shared.awake_users_max,
            "more users awake than awake_users_max: idle ones go to sleep now"
        );
        let awake: Vec<Addr<UserActor>> = self
            .shared
            .users
            .iter()
            .map(|u| u.value().clone())
            .collect();
        for addr in awake {
            // A full mailbox is a busy user: it stays awake.
            let _ = addr.try_send(user_actor::SleepIfIdle(PRESSED_IDLE));
        }
    }

    /// Wakes every sleeping user whose deadline has come, in every app and mode.
    async fn wake_due_all(&self) {
        let scopes: Vec<String> = self.shared.apps.keys().cloned().collect();
        for app in scopes {
            for mode in [Mode::Live, Mode::Test] {
                self.wake_due(&app, mode).await;
            }
        }
    }

    /// Sends a `Tick` to every sleeping user of `app` and `mode` whose deadline has come, so that
    /// what expired is applied without a request.
    async fn wake_due(&self, app: &str, mode: Mode) {
        let Ok(shared) = self.app(app) else { return };
        let now = shared.clock.now(mode);
        let due: Vec<u64> = {
            let mut index = shared
                .deadlines(mode)
                .lock()
                .expect("deadline index poisoned");
            std::iter::from_fn(|| {
                index
                    .first()
                    .is_some_and(|(deadline, _)| *deadline <= now)
                    .then(|| index.pop_first().map(|(_, tag)| tag))
                    .flatten()
            })
            .collect()
        };
        // A user that holds nothing any more is forgotten: nothing to wake.
        for key in due
            .into_iter()
            .flat_map(|tag| self.shared.known.keys_of(tag))
        {
            if let Err(error) = self.user(key.clone(), Request::Tick).await {
                tracing::warn!(%error, user = %key.user.as_str(), "waking a user for its deadline failed");
            }
        }
    }

    fn app(&self, app: &str) -> Result<&AppShared, EngineError> {
        self.shared
            .apps
            .get(app)
            .ok_or_else(|| EngineError::UnknownApp(app.to_owned()))
    }

    pub fn now(&self, app: &str, mode: Mode) -> Result<Ts, EngineError> {
        Ok(self.app(app)?.clock.now(mode))
    }

    /// The app's clock itself, for what must be stamped by the same time as its users' events
    /// and read it more than once (a webhook endpoint's `createdAt`).
    pub fn clock(&self, app: &str) -> Result<Arc<AppClock>, EngineError> {
        Ok(self.app(app)?.clock.clone())
    }

    /// The test clock as a caller may be told it: once the advance that set it is durable.
    pub async fn durable_test_now(&self, app: &str) -> Result<Ts, EngineError> {
        let shared = self.app(app)?;
        let offset = shared.clock.test_offset_ms();
        self.flush().await?;
        Ok(crate::actors::clock::real_now().plus_ms(offset))
    }

    pub fn catalog(&self, app: &str) -> Result<Arc<Catalog>, EngineError> {
        Ok(self.app(app)?.catalog.load_full())
    }

    /// Resolves once a user's actor has panicked, with that user: the server must stop (see
    /// [`Shared::actor_panicked`]).
    pub async fn failure(&self) -> UserKey {
        let mut first = self.shared.failure.subscribe();
        let key = first
            .wait_for(Option::is_some)
            .await
            .expect("the engine holds the sender");
        key.clone().expect("waited for a user")
    }

    /// The first user whose actor panicked, if one did.
    pub fn failed_user(&self) -> Option<UserKey> {
        self.shared.failure.borrow().clone()
    }

    /// Users with an awake actor.
    pub fn users_in_memory(&self) -> usize {
        self.shared.users.len()
    }

    /// Sleeping users, packed.
    pub fn users_asleep(&self) -> usize {
        self.shared.known.asleep()
    }

    /// The actor of an awake user, or a new one started from its packed form.
    fn actor(&self, key: &UserKey) -> Addr<UserActor> {
        if let Some(addr) = self.shared.users.get(key) {
            return addr.clone();
        }
        self.shared
            .users
            .entry(key.clone())
            .or_insert_with(|| {
                let state = match self.shared.known.wake(key) {
                    Some(asleep) => asleep.unpack().expect("a packed user always decodes"),
                    None => UserState::default(),
                };
                let actor = UserActor::new(key.clone(), state, self.shared.clone());
                self.supervisor.spawn(actor)
            })
            .clone()
    }

    /// The user whose actor issued `id`, if it belongs to this app and mode.
    pub fn owner_of(&self, app: &str, mode: Mode, id: &str) -> Option<UserKey> {
        let tag = crate::engine::state::tag_of_id(id)?;
        // After a tag collision, the user of this app and mode.
        self.shared
            .known
            .keys_of(tag)
            .into_iter()
            .find(|key| key.app == app && key.mode == mode)
    }

    /// Sends a request to a user's actor and answers once what it saw is durable. A read of a
    /// user the engine does not know is answered from an empty user, and stores nothing.
    pub async fn user(&self, key: UserKey, request: Request) -> Result<View, EngineError> {
        let app = self.app(&key.app)?;
        // Commands (most requests) skip the two lookups: they make the user known anyway.
        let read = !matches!(request, Request::Command(_));
        if read && !self.shared.users.contains_key(&key) && !self.shared.known.contains(&key) {
            let now = app.clock.now(key.mode);
            let catalog = app.catalog.load();
            return Ok(user_actor::read(
                &UserState::default(),
                &catalog,
                now,
                request,
            )?);
        }
        let mut results = self.send(&key, vec![request]).await?;
        Ok(results.pop().expect("one answer per request")?)
    }

    /// Hands `requests` to the user's actor, run in order, and returns their answers once every
    /// change they made is durable (the actor's reply waits for that). Refused at the door
    /// (nothing applied) when the journal backlog or the user's mailbox is full.
    async fn send(
        &self,
        key: &UserKey,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<View, Rejection>>, EngineError> {
        let writes = requests.iter().any(|r| matches!(r, Request::Command(_)));
        for _ in 0..MOVED_RETRIES_MAX {
            if self.shared.failed.contains_key(key) {
                return Err(EngineError::Restarting);
            }
            if writes && self.shared.journal.backlog() >= self.shared.journal_backlog_max {
                return Err(EngineError::Overloaded);
            }
            let addr = self.actor(key);
            let (reply, replied) = tokio::sync::oneshot::channel();
            let envelope = Envelope {
                requests: requests.clone(),
                reply,
            };
            match addr.try_send(envelope) {
                Ok(()) => {}
                // Refused at the door: nothing was applied.
                Err(actix::prelude::SendError::Full(_)) => return Err(EngineError::Overloaded),
                Err(actix::prelude::SendError::Closed(_)) => {
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            match replied.await {
                Ok(Reply::Done { results }) => return Ok(results),
                // The user went to sleep before reading the message, which applied nothing:
                // send it again, to the actor that starts from the packed user.
                Ok(Reply::Moved) => tokio::task::yield_now().await,
                // The actor stopped with the message unread. If it went to sleep (it is no longer
                // the user's actor), nothing was applied; otherwise it died, and nobody can say.
                Err(_) => {
                    if self.shared.failed.contains_key(key) {
                        return Err(EngineError::Restarting);
                    }
                    if self.shared.users.get(key).is_some_and(|a| *a == addr) {
                        tracing::error!(user = %key.user.as_str(), "a user's actor stopped");
                        return Err(EngineError::Unavailable);
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
        tracing::error!(user = %key.user.as_str(), "a user's actor kept moving; giving up");
        Err(EngineError::Unavailable)
    }

    /// Runs a batch: one message per user carrying that user's requests in order, every user's
    /// message in flight at once. Each group gets its answers in order once its changes are
    /// durable, or the error that kept its message from running.
    pub async fn batch(&self, groups: Vec<(UserKey, Vec<Request>)>) -> Vec<GroupAnswer> {
        // Every message goes out on the first poll; the replies arrive as each user's changes
        // become durable, so once all are in, the whole batch is.
        let sends = groups.into_iter().map(|(key, requests)| async move {
            self.app(&key.app)?;
            self.send(&key, requests).await
        });
        futures_util::future::join_all(sends).await
    }

    async fn durable(&self, seq: u64) -> Result<(), EngineError> {
        self.shared
            .journal
            .wait_durable(seq)
            .await
            .map_err(|_| EngineError::Unavailable)
    }

    /// Changes an app's catalog and answers once the change is durable.
    pub async fn change_catalog(
        &self,
        app: &str,
        command: CatalogCommand,
    ) -> Result<Arc<Catalog>, EngineError> {
        let shared = self.app(app)?;
        let _serial = shared.writes.lock().await;
        let now = shared.clock.now(Mode::Live);
        let current = shared.catalog.load_full();
        let in_use = |plan: &str| {
            self.shared
                .subscribers
                .get(&(app.to_owned(), plan.to_owned()))
                .is_some_and(|n| *n > 0)
        };
        let change = decide_catalog(&current, command, now, in_use)?;
        let mut next = Catalog::clone(&current);
        next.apply(&change);
        let seq = self.shared.journal.push([Record::Catalog {
            app: app.to_owned(),
            change,
        }]);
        let next = Arc::new(next);
        shared.catalog.store(next.clone());
        drop(_serial);
        self.durable(seq).await?;
        Ok(next)
    }

    /// Active subscriptions of a plan, both modes.
    pub fn subscribers(&self, app: &str, plan: &str) -> i64 {
        self.shared
            .subscribers
            .get(&(app.to_owned(), plan.to_owned()))
            .map_or(0, |n| *n)
    }

    /// Moves the app's test clock forward and lets every test-mode user catch up.
    pub async fn advance_test_clock(&self, app: &str, seconds: u64) -> Result<Ts, EngineError> {
        let shared = self.app(app)?;
        let _serial = shared.writes.lock().await;
        let real = crate::actors::clock::real_now();
        let offset =
            crate::engine::time::advanced_offset_ms(real, shared.clock.test_offset_ms(), seconds)
                .ok_or(EngineError::Rejected(Rejection::ClockOverflow))?;
        let seq = self.shared.journal.push([Record::TestClock {
            app: app.to_owned(),
            offset_ms: offset,
        }]);
        shared.clock.set_test_offset_ms(offset);
        drop(_serial);
        self.durable(seq).await?;
        self.tick_test_users(app).await;
        self.wake_due(app, Mode::Test).await;
        // Our own offset, not the clock's current one: a later advance may not be durable yet.
        Ok(crate::actors::clock::real_now().plus_ms(offset))
    }

    /// Awake test-mode users catch up with the clock; sleeping ones are woken by the deadline
    /// index.
    async fn tick_test_users(&self, app: &str) {
        let keys: Vec<UserKey> = self
            .shared
            .users
            .iter()
            .filter(|u| u.key().app == app && u.key().mode == Mode::Test)
            .map(|u| u.key().clone())
            .collect();
        for key in keys {
            let _ = self.user(key, Request::Tick).await;
        }
    }

    /// The balances a Stripe payment intent paid for, with their users.
    pub fn paid_balances(
        &self,
        app: &str,
        mode: Mode,
        intent: &str,
    ) -> Result<Vec<(UserId, String)>, EngineError> {
        let Some(history) = &self.shared.history else {
            return Ok(Vec::new());
        };
        let paid = history.paid_balances(app, mode, intent).map_err(|error| {
            tracing::error!(%error, "reading the payments index failed");
            EngineError::Unavailable
        })?;
        Ok(paid
            .into_iter()
            .filter_map(|(user, balance)| UserId::parse(&user).ok().map(|u| (u, balance)))
            .collect())
    }

    /// Remembers, durably, that Stripe fully refunded `intent` before any checkout granted from
    /// it, so that a later checkout of it is revoked at once. `false` when there is no history
    /// store to remember it in (benchmarks without a disk).
    pub async fn remember_refund_before_checkout(
        &self,
        app: &str,
        mode: Mode,
        intent: &str,
        charge_id: &str,
    ) -> Result<bool, EngineError> {
        if self.shared.history.is_none() {
            return Ok(false);
        }
        let at = crate::actors::clock::real_now();
        let write = HistoryWrite::RefundBeforeCheckout {
            app: app.to_owned(),
            mode,
            intent: intent.to_owned(),
            charge_id: charge_id.to_owned(),
            at,
        };
        // The record makes recovery write it again, as for stored answers.
        let record = Record::RefundBeforeCheckout {
            app: app.to_owned(),
            mode,
            intent: intent.to_owned(),
            charge_id: charge_id.to_owned(),
            at,
        };
        let seq = self.shared.journal.push_with_history([record], [write]);
        self.durable(seq).await?;
        Ok(true)
    }

    /// The charge that fully refunded `intent` before its checkout, if one is remembered.
    pub fn refund_before_checkout(
        &self,
        app: &str,
        mode: Mode,
        intent: &str,
    ) -> Result<Option<String>, EngineError> {
        let Some(history) = &self.shared.history else {
            return Ok(None);
        };
        let now = crate::actors::clock::real_now();
        history
            .refund_before_checkout(app, mode, intent, now)
            .map_err(|error| {
                tracing::error!(%error, "reading the early refunds failed");
                EngineError::Unavailable
            })
    }

    /// The answer stored for an `Idempotency-Key`, if any (of any age: the caller checks it).
    pub fn stored_answer(
        &self,
        app: &str,
        mode: Mode,
        key: &str,
    ) -> Result<Option<StoredAnswer>, EngineError> {
        let Some(history) = &self.shared.history else {
            return Ok(None);
        };
        history.answer(app, mode, key).map_err(|error| {
            tracing::error!(%error, "reading a stored answer failed");
            EngineError::Unavailable
        })
    }

    /// Keeps an answer for its idempotency key, durably.
    pub async fn store_answer(
        &self,
        app: &str,
        mode: Mode,
        key: &str,
        answer: StoredAnswer,
    ) -> Result<(), EngineError> {
        let write = HistoryWrite::Answer {
            app: app.to_owned(),
            mode,
            key: key.to_owned(),
            answer: answer.clone(),
        };
        let record = Record::Answer {
            app: app.to_owned(),
            mode,
            key: key.to_owned(),
            answer,
        };
        let seq = self.shared.journal.push_with_history([record], [write]);
        self.durable(seq).await
    }

    /// A page of a user's ledger, newest first: the lines still in the user's memory, then the
    /// pages on disk. Answers once every line it shows is durable.
    pub async fn ledger(
        &self,
        key: UserKey,
        limit: usize,
        starting_after: Option<String>,
    ) -> Result<LedgerPage, EngineError> {
        let View::LedgerTail(tail) = self.user(key.clone(), Request::LedgerTail).await? else {
            unreachable!("a ledger tail request answers with the tail");
        };
        // Every page older than the tail was queued before the tail's answer, and `user` waited
        // for that to be durable: the disk has it.
        let cursor_in_tail = starting_after
            .as_deref()
            .is_none_or(|c| tail.iter().any(|l| l.event.id == c));
        let history = self.shared.history.clone();
        let cursor = starting_after.clone();
        let page = tokio::task::spawn_blocking(move || {
            let cursor = cursor.as_deref();
            let Some(history) = history else {
                return Ok(page_of(tail, limit, cursor));
            };
            let mut disk;
            let page = if cursor_in_tail {
                disk = history.lines_newest_first(&key, None);
                page_of(tail.into_iter().chain(&mut disk), limit, cursor)
            } else {
                disk = history.lines_newest_first(&key, cursor);
                page_of(&mut disk, limit, cursor)
            };
            match disk.error.take() {
                Some(error) => Err(error),
                None => Ok(page),
            }
        })
        .await
        .map_err(|_| EngineError::Unavailable)?
        .map_err(|error| {
            tracing::error!(%error, "reading the ledger failed");
            EngineError::Unavailable
        })?;
        page.ok_or_else(|| Rejection::UnknownCursor(starting_after.unwrap_or_default()).into())
    }

    /// Drops stored answers and request keys past their 24 hours, by each app's and mode's clock,
    /// and delivered events past their 30 days (a bounded number a pass, see
    /// `History::sweep`). Reads check the age themselves; this frees the disk.
    pub async fn sweep_history(&self) {
        let Some(history) = self.shared.history.clone() else {
            return;
        };
        let engine = self.clone();
        let swept = tokio::task::spawn_blocking(move || {
            history.sweep(
                |app, mode| engine.now(app, mode).ok(),
                crate::actors::clock::real_now(),
            )
        })
        .await;
        match swept {
            Ok(Ok(dropped)) => tracing::debug!(dropped, "history swept"),
            Ok(Err(error)) => tracing::error!(%error, "history sweep failed"),
            Err(error) => tracing::error!(%error, "history sweep panicked"),
        }
    }

    /// Waits until everything queued so far is durable.
    pub async fn flush(&self) -> Result<(), EngineError> {
        self.durable(self.shared.journal.next_seq()).await
    }
}
