//! The actor layer: it carries requests to the pure engine and answers once they are durable.
//!
//! [`Engine`] is the only type the HTTP layer sees. A request for a user finds that user's actor in
//! a concurrent map; only on a miss does the supervisor start one. The actor applies the command at
//! once and queues its events; the caller waits for the journal writer to make them durable while
//! the actor goes on with its next message (DESIGN.md rule 3).

pub mod clock;
pub mod journal_writer;
pub mod snapshotter;
pub mod supervisor;
pub mod user_actor;

use crate::engine::catalog::{Catalog, CatalogCommand, CatalogRejection, decide_catalog};
use crate::engine::ids::UserId;
use crate::engine::state::StoredAnswer;
use crate::engine::{EngineState, Mode, Record, Rejection, Ts, UserKey, UserState};
use actix::Addr;
use arc_swap::ArcSwap;
use clock::AppClock;
use dashmap::DashMap;
use journal_writer::JournalQueue;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;
use supervisor::Supervisor;
use user_actor::{BatchEnvelope, Envelope, Request, UserActor, View};

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
}

/// What one app shares between its actors: the catalog and the clock.
pub struct AppShared {
    pub catalog: ArcSwap<Catalog>,
    pub clock: AppClock,
    /// Serialises catalog and clock changes of the app: they are rare and must not interleave.
    writes: tokio::sync::Mutex<()>,
}

pub struct Shared {
    apps: FxHashMap<String, AppShared>,
    pub journal: Arc<JournalQueue>,
    /// Active subscriptions per (app, plan), both modes, so a plan in use is not deleted.
    subscribers: DashMap<(String, String), i64>,
    /// (app, mode, payment intent) → the balances it paid for, so a refund can find them.
    payments: DashMap<(String, Mode, String), Vec<(UserId, String)>>,
    answers: DashMap<(String, Mode, String), StoredAnswer>,
}

impl Shared {
    pub fn app(&self, app: &str) -> &AppShared {
        self.apps
            .get(app)
            .expect("actors exist only for configured apps")
    }

    fn index_payment(&self, key: &UserKey, intent: &str, balance_id: &str) {
        self.payments
            .entry((key.app.clone(), key.mode, intent.to_owned()))
            .or_default()
            .push((key.user.clone(), balance_id.to_owned()));
    }

    fn count_subscriber(&self, app: &str, plan: Option<&str>, delta: i64) {
        if let Some(plan) = plan {
            *self
                .subscribers
                .entry((app.to_owned(), plan.to_owned()))
                .or_default() += delta;
        }
    }
}

/// The maps on the request path hash with Fx: SipHash's protection against chosen keys costs more
/// than it buys for keys that are authenticated apps' own user ids.
type FxDashMap<K, V> = DashMap<K, V, rustc_hash::FxBuildHasher>;

/// How long a request may wait for a user's mailbox before it is refused as overload.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The handle to the running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    users: Arc<FxDashMap<UserKey, Addr<UserActor>>>,
    /// Users recovered from disk whose actor has not started yet.
    dormant: Arc<FxDashMap<UserKey, UserState>>,
    /// Every known user by [`UserKey::tag`], to route requests that name only an id.
    tags: Arc<FxDashMap<u64, UserKey>>,
    supervisor: Arc<Supervisor>,
}

impl Engine {
    /// Starts the actors over a recovered state. `apps` are the configured app ids; `journal` is
    /// the queue whose writer is already running.
    pub fn start(
        state: EngineState,
        apps: &[String],
        journal: Arc<JournalQueue>,
        threads: usize,
    ) -> Engine {
        let EngineState {
            mut catalogs,
            test_clock_offsets_ms,
            users,
            answers,
        } = state;
        let apps = apps
            .iter()
            .map(|id| {
                let shared = AppShared {
                    catalog: ArcSwap::from_pointee(catalogs.remove(id).unwrap_or_default()),
                    clock: AppClock::new(test_clock_offsets_ms.get(id).copied().unwrap_or(0)),
                    writes: tokio::sync::Mutex::new(()),
                };
                (id.clone(), shared)
            })
            .collect();
        let shared = Arc::new(Shared {
            apps,
            journal,
            subscribers: DashMap::new(),
            payments: DashMap::new(),
            answers: answers.into_iter().collect(),
        });
        let dormant = FxDashMap::default();
        let tags = FxDashMap::default();
        for (key, user) in users {
            tags.insert(key.tag(), key.clone());
            if !shared.apps.contains_key(&key.app) {
                tracing::warn!(app = %key.app, "journal holds an app that is not configured; its users stay on disk");
                continue;
            }
            for balance in &user.balances {
                if let Some(intent) = &balance.payment_intent {
                    shared.index_payment(&key, intent, &balance.id);
                }
            }
            let plan = user.subscription.as_ref().and_then(|s| s.active_plan());
            shared.count_subscriber(&key.app, plan, 1);
            dormant.insert(key, user);
        }
        let engine = Engine {
            shared,
            users: Arc::new(FxDashMap::default()),
            dormant: Arc::new(dormant),
            tags: Arc::new(tags),
            supervisor: Arc::new(Supervisor::start(threads)),
        };
        // Users with a deadline get their actor now, so that their timer runs without a request.
        let due: Vec<UserKey> = engine
            .dormant
            .iter()
            .filter(|u| crate::engine::next_deadline(u.value()).is_some())
            .map(|u| u.key().clone())
            .collect();
        for key in due {
            engine.actor(&key);
        }
        engine
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

    /// Users with a live actor.
    pub fn users_in_memory(&self) -> usize {
        self.users.len()
    }

    fn actor(&self, key: &UserKey) -> Addr<UserActor> {
        if let Some(addr) = self.users.get(key) {
            return addr.clone();
        }
        self.users
            .entry(key.clone())
            .or_insert_with(|| {
                self.tags.insert(key.tag(), key.clone());
                let state = self.dormant.remove(key).map(|(_, s)| s).unwrap_or_default();
                let actor = UserActor::new(key.clone(), state, self.shared.clone());
                self.supervisor.spawn(actor)
            })
            .clone()
    }

    /// The user whose actor issued `id`, if it belongs to this app and mode.
    pub fn owner_of(&self, app: &str, mode: Mode, id: &str) -> Option<UserKey> {
        let key = self
            .tags
            .get(&crate::engine::state::tag_of_id(id)?)?
            .clone();
        (key.app == app && key.mode == mode).then_some(key)
    }

    /// Sends a request to a user's actor and answers once what it saw is durable.
    pub async fn user(&self, key: UserKey, request: Request) -> Result<View, EngineError> {
        self.app(&key.app)?;
        let addr = self.actor(&key);
        let reply = tokio::time::timeout(SEND_TIMEOUT, addr.send(Envelope(request)))
            .await
            .map_err(|_| EngineError::Overloaded)?
            .map_err(|_| EngineError::Unavailable)?;
        self.durable(reply.seq).await?;
        Ok(reply.result?)
    }

    /// Runs a batch: one message per user carrying that user's requests in order, every user's
    /// message in flight at once, then one wait until the last change of all of them is durable.
    /// Each group gets its answers in order, or the error that kept its message from running; the
    /// outer error means nothing can be said to be durable.
    pub async fn batch(
        &self,
        groups: Vec<(UserKey, Vec<Request>)>,
    ) -> Result<Vec<Result<Vec<Result<View, Rejection>>, EngineError>>, EngineError> {
        let deadline = tokio::time::Instant::now() + SEND_TIMEOUT;
        // `send` queues the message at once; the loop below only collects the answers.
        let sent: Vec<_> = groups
            .into_iter()
            .map(|(key, requests)| {
                self.app(&key.app)?;
                Ok(self.actor(&key).send(BatchEnvelope(requests)))
            })
            .collect();
        let mut seq = 0;
        let mut answers = Vec::with_capacity(sent.len());
        for request in sent {
            let answer = match request {
                Err(error) => Err(error),
                Ok(request) => match tokio::time::timeout_at(deadline, request).await {
                    Err(_) => Err(EngineError::Overloaded),
                    Ok(Err(_)) => Err(EngineError::Unavailable),
                    Ok(Ok(reply)) => {
                        seq = seq.max(reply.seq);
                        Ok(reply.results)
                    }
                },
            };
            answers.push(answer);
        }
        self.durable(seq).await?;
        Ok(answers)
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
        let step_ms = i64::try_from(seconds)
            .ok()
            .and_then(|s| s.checked_mul(1000));
        let offset = step_ms
            .and_then(|ms| shared.clock.test_offset_ms().checked_add(ms))
            .ok_or(EngineError::Rejected(Rejection::ClockOverflow))?;
        let seq = self.shared.journal.push([Record::TestClock {
            app: app.to_owned(),
            offset_ms: offset,
        }]);
        shared.clock.set_test_offset_ms(offset);
        drop(_serial);
        self.durable(seq).await?;
        self.tick_test_users(app).await;
        // Our own offset, not the clock's current one: a later advance may not be durable yet.
        Ok(crate::actors::clock::real_now().plus_ms(offset))
    }

    /// Dormant users have no deadline (those with one got their actor at start), so only live
    /// actors need the tick.
    async fn tick_test_users(&self, app: &str) {
        let keys: Vec<UserKey> = self
            .users
            .iter()
            .filter(|u| u.key().app == app && u.key().mode == Mode::Test)
            .map(|u| u.key().clone())
            .collect();
        for key in keys {
            let _ = self.user(key, Request::Tick).await;
        }
    }

    /// The balances a Stripe payment intent paid for.
    pub fn paid_balances(&self, app: &str, mode: Mode, intent: &str) -> Vec<(UserId, String)> {
        self.shared
            .payments
            .get(&(app.to_owned(), mode, intent.to_owned()))
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    pub fn stored_answer(&self, app: &str, mode: Mode, key: &str) -> Option<StoredAnswer> {
        self.shared
            .answers
            .get(&(app.to_owned(), mode, key.to_owned()))
            .map(|a| a.clone())
    }

    /// Keeps an answer for its idempotency key, durably.
    pub async fn store_answer(
        &self,
        app: &str,
        mode: Mode,
        key: &str,
        answer: StoredAnswer,
    ) -> Result<(), EngineError> {
        self.shared
            .answers
            .insert((app.to_owned(), mode, key.to_owned()), answer.clone());
        let record = Record::Answer {
            app: app.to_owned(),
            mode,
            key: key.to_owned(),
            answer,
        };
        let seq = self.shared.journal.push([record]);
        self.durable(seq).await
    }

    /// Waits until everything queued so far is durable.
    pub async fn flush(&self) -> Result<(), EngineError> {
        self.durable(self.shared.journal.next_seq()).await
    }
}
