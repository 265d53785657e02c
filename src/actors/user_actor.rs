//! The actor that owns one user's state: it runs the pure engine on each message, queues the
//! events for the journal and goes on; its reply to the caller leaves once those events are
//! durable (see [`super::journal_writer::JournalQueue::when_durable`]).

use super::Shared;
use crate::engine::bounds::admit;
use crate::engine::catalog::Catalog;
use crate::engine::ids::{IdSource, ModelKey, Pattern};
use crate::engine::ledger::LedgerLine;
use crate::engine::matcher::{self, Match};
use crate::engine::read::{self, Usage};
use crate::engine::user::{Applied, Balance, Reservation, Subscription};
use crate::engine::{
    Changes, Command, Name, Outcome, Past, Record, Rejection, Settled, Ts, UserKey, UserState,
    catch_up, next_deadline, step_admitted,
};
use crate::persistence::{History, HistoryWrite};
use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message, SpawnHandle};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a caller asks of a user.
#[derive(Debug, Clone)]
pub enum Request {
    Command(Command),
    Check {
        model: ModelKey,
        amount: u64,
    },
    Reservation(String),
    Balance(String),
    Subscription,
    Usage(Option<Pattern>),
    /// The ledger lines still in memory, newest first.
    LedgerTail,
    /// The pending reservations, newest first.
    Pending,
    /// Apply the deadlines that have passed; sent by the timer and after a test-clock move.
    Tick,
}

/// The answer to a [`Request`], read from the state right after the command.
#[derive(Debug, Clone)]
pub enum View {
    Reservation(Reservation),
    Denied(Match),
    Granted {
        created: bool,
        balances: Vec<Balance>,
    },
    Balance(Balance),
    Subscription(Subscription),
    Usage(Usage),
    LedgerTail(Vec<LedgerLine>),
    Pending(Vec<Reservation>),
    Check(Match),
    Ticked,
}

// `Moved` is rare and small; boxing `Done` would cost an allocation on every message.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    /// A view per request, sent once the changes they made are durable.
    Done {
        results: Vec<Result<View, Rejection>>,
    },
    /// The user went to sleep before this message was read, and nothing was applied: send it
    /// again.
    Moved,
}

/// A request and where its reply goes. The reply travels in a channel of its own rather than as
/// actix's message result, so that the sender can use `try_send` and refuse at the door when the
/// mailbox is full, before anything is applied.
pub struct Envelope {
    /// Run in order, one after the other: one request, or one user's share of a batch.
    pub requests: Vec<Request>,
    pub reply: tokio::sync::oneshot::Sender<Reply>,
}

impl Message for Envelope {
    type Result = ();
}

/// A request that only reads, answered from `state` (a reservation that has ended is looked up by
/// the actor, which knows the user's past).
pub(crate) fn read(
    state: &UserState,
    catalog: &Catalog,
    now: Ts,
    request: Request,
) -> Result<View, Rejection> {
    match request {
        Request::Command(_) => unreachable!("a command is not a read"),
        Request::Tick => Ok(View::Ticked),
        Request::Check { model, amount } => Ok(View::Check(matcher::find(
            state, catalog, &model, amount, now,
        ))),
        Request::Reservation(id) => state
            .reservation(&id)
            .map(|r| View::Reservation(r.clone()))
            .ok_or(Rejection::ReservationNotFound(id)),
        Request::Balance(id) => state
            .balance(&id)
            .map(|b| View::Balance(b.clone()))
            .ok_or(Rejection::BalanceNotFound(id)),
        Request::Subscription => state
            .subscription
            .clone()
            .map(View::Subscription)
            .ok_or(Rejection::NoSubscription),
        Request::Usage(filter) => Ok(View::Usage(read::usage(
            state,
            catalog,
            filter.as_ref(),
            now,
        ))),
        Request::LedgerTail => Ok(View::LedgerTail(
            state.ledger_tail.iter().rev().cloned().collect(),
        )),
        Request::Pending => {
            let mut pending: Vec<Reservation> = state.reservations.values().cloned().collect();
            pending.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
            Ok(View::Pending(pending))
        }
    }
}

/// Fresh ids from ULIDs followed by the user's tag. The generator is monotonic, so a user's ids
/// sort in the order they were made, also within one millisecond.
pub struct UlidIds {
    tag: u64,
    generator: ulid::Generator,
}

impl IdSource for UlidIds {
    /// `{prefix}_{ulid}_{tag as 16 hex digits}`, written on the stack and then into one
    /// allocation (a `format!` costs a tenth of a consume's step on the actor).
    fn next_id(&mut self, prefix: &'static str) -> Name {
        // The random part only overflows after 2^80 ids in one millisecond.
        let ulid = self
            .generator
            .generate()
            .unwrap_or_else(|_| ulid::Ulid::new());
        let mut text = [0u8; ulid::ULID_LEN];
        let mut id = [0u8; ID_LEN_MAX];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            id[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        put(prefix.as_bytes());
        put(b"_");
        put(ulid.array_to_str(&mut text).as_bytes());
        put(b"_");
        for byte in self.tag.to_be_bytes() {
            put(&[HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]);
        }
        Name::from(std::str::from_utf8(&id[..len]).expect("ids are ASCII"))
    }
}

const HEX: [u8; 16] = *b"0123456789abcdef";

/// Room for a prefix of up to 8 bytes (those in use, `res`, `bal`, `evt` and `le`, are 2 or 3),
/// then `_`, the ULID, `_` and the tag.
const ID_LEN_MAX: usize = 8 + 2 + ulid::ULID_LEN + 16;

pub struct UserActor {
    key: UserKey,
    state: UserState,
    shared: Arc<Shared>,
    /// End of the last records this user queued: every answer waits until it is durable.
    last_seq: u64,
    /// [`next_deadline`] of `state`: the state changes only where [`UserActor::record`] journals
    /// it, which sets this from the step's [`Settled`], so the timer does not scan again.
    deadline: Option<Ts>,
    timer: Option<(Ts, SpawnHandle)>,
    ids: UlidIds,
    /// What this user handed to the history and is not durable yet, by the sequence that makes it
    /// durable: until then a decision finds it here rather than on disk. Bounded by what one
    /// user queues during one flush.
    recent: VecDeque<(u64, Applied)>,
    last_message: Instant,
    /// Set once the state was handed back to the packed form; every later message is `Moved`.
    asleep: bool,
    /// Set once this actor caught a panic: its state is not to be read again (see
    /// [`Shared::actor_panicked`]), and it stops.
    failed: bool,
}

/// The past of one user as a decision sees it: what is on its way to disk, then the disk.
struct UserPast<'a> {
    key: &'a UserKey,
    recent: &'a VecDeque<(u64, Applied)>,
    history: Option<&'a History>,
}

impl UserPast<'_> {
    fn read<T>(
        &self,
        what: &str,
        read: impl FnOnce(&History) -> Result<Option<T>, crate::persistence::HistoryError>,
    ) -> Option<T> {
        let history = self.history?;
        read(history).unwrap_or_else(|error| {
            tracing::error!(%error, user = %self.key.user.as_str(), what, "history read failed");
            None
        })
    }
}

impl Past for UserPast<'_> {
    fn ended(&self, id: &str) -> Option<Reservation> {
        match self.recent.iter().rev().find_map(|(_, a)| a.ended(id)) {
            Some(r) => Some(r.clone()),
            None => self.read("ended reservation", |h| h.ended(self.key, id)),
        }
    }

    fn by_request_key(&self, key: &str, since: Ts) -> Option<Name> {
        match self
            .recent
            .iter()
            .rev()
            .find_map(|(_, a)| a.reserved_with_key(key, since))
        {
            Some(id) => Some(id.clone()),
            None => self.read("request key", |h| h.by_request_key(self.key, key, since)),
        }
    }
}

/// A testing hook, read once at startup by debug builds only (release builds refuse to start with
/// it): `VEVEE_TEST_PANIC_USER=<user id>` makes every reserve and consume of that user panic in
/// its actor, after the command changed the state in memory and before its records are queued,
/// the worst moment for a panic. `tests/it/actor_panic.rs` uses it.
pub const TEST_PANIC_USER_ENV: &str = "VEVEE_TEST_PANIC_USER";

/// Messages waiting for a user beyond this are refused as overload rather than queued.
pub const MAILBOX_MAX: usize = 1024;

/// How often an actor looks whether it has been idle long enough to sleep: half the idle time,
/// within these bounds.
const IDLE_CHECK_MIN: Duration = Duration::from_millis(100);
const IDLE_CHECK_MAX: Duration = Duration::from_secs(60);

/// A timer never sleeps longer than this, so a deadline is met even if the clock jumps.
const TIMER_MAX: Duration = Duration::from_secs(3600);

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_MAX);
        self.schedule(ctx);
        let every = (self.shared.idle / 2).clamp(IDLE_CHECK_MIN, IDLE_CHECK_MAX);
        ctx.run_interval(every, |actor, ctx| {
            let idle = actor.shared.idle;
            actor.guarded(ctx, |actor, ctx| actor.sleep_if_idle(idle, ctx));
        });
    }
}

impl UserActor {
    pub fn new(key: UserKey, state: UserState, shared: Arc<Shared>) -> UserActor {
        let tag = key.tag();
        UserActor {
            key,
            deadline: next_deadline(&state),
            state,
            shared,
            last_seq: 0,
            timer: None,
            ids: UlidIds {
                tag,
                generator: ulid::Generator::new(),
            },
            recent: VecDeque::new(),
            last_message: Instant::now(),
            asleep: false,
            failed: false,
        }
    }

    /// Runs `work` on the actor, catching a panic: actix would drop the actor silently (its
    /// arbiter's runtime catches the panic of the task), leaving its user's mailbox closed and
    /// its callers with no answer. A caught panic marks the user failed and stops the actor and
    /// the server (see [`Shared::actor_panicked`]); the state is never used again, which is what
    /// makes `AssertUnwindSafe` sound here.
    fn guarded<R>(
        &mut self,
        ctx: &mut Context<Self>,
        work: impl FnOnce(&mut Self, &mut Context<Self>) -> R,
    ) -> Option<R> {
        if self.failed {
            return None;
        }
        let payload =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(self, ctx))) {
                Ok(done) => return Some(done),
                Err(payload) => payload,
            };
        let panic = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        self.failed = true;
        self.shared.actor_panicked(&self.key, &panic);
        ctx.stop();
        None
    }

    /// Goes to sleep once idle for `idle` and with nothing on its way to disk, so that what the
    /// packed user lacks (the history it handed over) is all on disk.
    fn sleep_if_idle(&mut self, idle: Duration, ctx: &mut Context<Self>) {
        if self.asleep || self.last_message.elapsed() < idle {
            return;
        }
        let durable = self.shared.journal.durable_seq();
        if self.last_seq > durable {
            return;
        }
        // The lines still in memory go to disk first, through the journal so that replay does
        // the same; the user sleeps at a later check, once that is durable.
        if !self.state.ledger_tail.is_empty() {
            let applied = self.state.flush_ledger();
            let mut writes = Vec::new();
            HistoryWrite::from_applied(&self.key, applied.clone(), &mut writes);
            let record = Record::FlushLedger {
                key: self.key.clone(),
            };
            self.last_seq = self.shared.journal.push_with_history([record], writes);
            // Until it is durable, a decision finds the page here (a message may still come).
            self.recent.push_back((self.last_seq, applied));
            return;
        }
        self.shared
            .put_to_sleep(&self.key, &self.state, &ctx.address());
        self.asleep = true;
        self.state = UserState::default();
        self.deadline = None;
        self.recent.clear();
        ctx.stop();
    }

    fn now(&self) -> Ts {
        self.shared.app(&self.key.app).clock.now(self.key.mode)
    }

    fn catalog(&self) -> Arc<Catalog> {
        self.shared.app(&self.key.app).catalog.load_full()
    }

    fn handle_request(&mut self, request: Request) -> Result<View, Rejection> {
        let now = self.now();
        let catalog = self.catalog();
        let durable = self.shared.journal.durable_seq();
        while self.recent.front().is_some_and(|(seq, _)| *seq <= durable) {
            self.recent.pop_front();
        }
        if let Request::Command(command) = request {
            let new_balances = match &command {
                Command::Grant { pack_id, .. } => catalog
                    .packs
                    .get(pack_id.as_str())
                    .map_or(0, |p| p.items.len()),
                _ => 0,
            };
            let past = UserPast {
                key: &self.key,
                recent: &self.recent,
                history: self.shared.history.as_ref(),
            };
            let bounds = &self.shared.bounds;
            let plan_before = self.active_plan();
            let reserves = matches!(command, Command::Reserve { .. });
            let done = step_admitted(
                &mut self.state,
                &past,
                &catalog,
                command,
                now,
                &mut self.ids,
                |state, command| admit(state, command, new_balances, bounds),
            );
            let changes = Changes::new(done.events, done.applied);
            if reserves && self.shared.test_panic_user.as_deref() == Some(self.key.user.as_str()) {
                panic!(
                    "{TEST_PANIC_USER_ENV}: a panic injected into a reserve of user {}",
                    self.key.user.as_str()
                );
            }
            self.record(changes, plan_before);
            return done.result.map(|outcome| self.view(outcome));
        }
        let plan_before = self.active_plan();
        let changes = catch_up(&mut self.state, now, &mut self.ids);
        self.record(changes, plan_before);
        match request {
            Request::Reservation(id) => self
                .reservation(&id)
                .map(View::Reservation)
                .ok_or(Rejection::ReservationNotFound(id)),
            other => read(&self.state, &catalog, now, other),
        }
    }

    /// A reservation from memory, from what is on its way to disk, or from disk.
    fn reservation(&self, id: &str) -> Option<Reservation> {
        if let Some(r) = self.state.reservation(id) {
            return Some(r.clone());
        }
        let past = UserPast {
            key: &self.key,
            recent: &self.recent,
            history: self.shared.history.as_ref(),
        };
        past.ended(id)
    }

    fn view(&self, outcome: Outcome) -> View {
        let state = &self.state;
        match outcome {
            Outcome::Reservation(id) => View::Reservation(
                self.reservation(&id)
                    .expect("a reservation just made or found is in memory or in the past"),
            ),
            Outcome::Denied { reasons, available } => View::Denied(Match {
                result: Err(reasons),
                available,
            }),
            Outcome::Granted {
                created,
                balance_ids,
            } => View::Granted {
                created,
                balances: balance_ids
                    .iter()
                    .filter_map(|id| state.balance(id))
                    .cloned()
                    .collect(),
            },
            Outcome::Balance(id) => View::Balance(state.balance(&id).cloned().expect("balance")),
            Outcome::Subscription => {
                View::Subscription(state.subscription.clone().expect("subscription"))
            }
        }
    }

    fn active_plan(&self) -> Option<Name> {
        self.state.active_plan().cloned()
    }

    /// Queues applied events for the journal, with what they move to the history, and keeps the
    /// shared indexes in step with them.
    fn record(&mut self, changes: Changes, plan_before: Option<Name>) {
        if changes.events.is_empty() {
            return;
        }
        let settled = Settled::of(&self.state, plan_before);
        self.deadline = settled.deadline;
        if let Some(plan) = &settled.plan {
            let (before, after) = &**plan;
            self.shared
                .count_subscriber(&self.key.app, before.as_deref(), -1);
            self.shared
                .count_subscriber(&self.key.app, after.as_deref(), 1);
        }
        let key = &self.key;
        let mut writes = Vec::new();
        for applied in &changes.applied {
            HistoryWrite::from_applied(key, applied.clone(), &mut writes);
        }
        let records = Record::events(key, changes.events, settled);
        self.last_seq = self.shared.journal.push_with_history(records, writes);
        let seq = self.last_seq;
        self.recent
            .extend(changes.applied.into_iter().map(|applied| (seq, applied)));
    }

    /// Arms a timer for the next deadline, so expiry happens without a request.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        debug_assert_eq!(
            self.deadline,
            next_deadline(&self.state),
            "a change not recorded"
        );
        let Some(deadline) = self.deadline else {
            if let Some((_, handle)) = self.timer.take() {
                ctx.cancel_future(handle);
            }
            return;
        };
        if self.timer.as_ref().is_some_and(|(at, _)| *at == deadline) {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let wait_ms = u64::try_from(deadline.0.saturating_sub(self.now().0)).unwrap_or(0);
        let wait = Duration::from_millis(wait_ms).min(TIMER_MAX);
        let handle = ctx.run_later(wait, |actor, ctx| {
            actor.timer = None;
            if actor.asleep {
                return;
            }
            actor.guarded(ctx, |actor, ctx| {
                let _ = actor.handle_request(Request::Tick);
                actor.schedule(ctx);
            });
        });
        self.timer = Some((deadline, handle));
    }
}

/// Asks the actor to sleep if it has been idle this long (the engine's `awake_users_max`).
pub struct SleepIfIdle(pub Duration);

impl Message for SleepIfIdle {
    type Result = ();
}

/// After the ledger lines in memory went to disk, how soon a user asked to sleep looks again.
const SLEEP_RECHECK: Duration = Duration::from_millis(100);

impl Handler<SleepIfIdle> for UserActor {
    type Result = ();

    fn handle(&mut self, SleepIfIdle(idle): SleepIfIdle, ctx: &mut Context<Self>) {
        self.guarded(ctx, |actor, ctx| actor.sleep_if_idle(idle, ctx));
        // The first step may only have sent the ledger lines to disk: look again once they are.
        if !self.asleep && !self.failed && self.last_message.elapsed() >= idle {
            ctx.run_later(SLEEP_RECHECK, move |actor, ctx| {
                actor.guarded(ctx, |actor, ctx| actor.sleep_if_idle(idle, ctx));
            });
        }
    }
}

impl Handler<Envelope> for UserActor {
    type Result = ();

    fn handle(&mut self, envelope: Envelope, ctx: &mut Context<Self>) {
        let Envelope { requests, reply } = envelope;
        if self.asleep {
            let _ = reply.send(Reply::Moved);
            return;
        }
        self.last_message = Instant::now();
        let done = self.guarded(ctx, |actor, ctx| {
            let results = requests
                .into_iter()
                .map(|request| actor.handle_request(request))
                .collect();
            // One timer check for the whole group: deadlines only move once it is done.
            actor.schedule(ctx);
            results
        });
        // After a panic (or to a failed actor) the reply is dropped unsent, once the user is
        // marked failed: the caller answers 503.
        let Some(results) = done else { return };
        // The reply goes once this user's changes so far are durable (at once if they are). A
        // caller that gave up no longer listens; what was applied stays applied.
        self.shared.journal.when_durable(self.last_seq, move || {
            let _ = reply.send(Reply::Done { results });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_prefix_a_ulid_and_the_tag_in_hex_and_sort_in_the_order_they_were_made() {
        let mut ids = UlidIds {
            tag: 0x00ab_cdef_0123_4567,
            generator: ulid::Generator::new(),
        };
        let made: Vec<Name> = (0..1000).map(|_| ids.next_id("le")).collect();
        for id in &made {
            let parts: Vec<&str> = id.split('_').collect();
            assert_eq!(parts.len(), 3, "{id}");
            assert_eq!(parts[0], "le");
            let ulid = ulid::Ulid::from_string(parts[1]).expect("a ULID");
            assert_eq!(ulid.to_string(), parts[1]);
            assert_eq!(parts[2], format!("{:016x}", 0x00ab_cdef_0123_4567u64));
        }
        assert!(made.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.next_id("evt").starts_with("evt_"));
    }
}
