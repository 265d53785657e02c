//! The actor that owns one user's state: it runs the pure engine on each message, queues the
//! events for the journal and answers at once with the sequence the caller must see durable.

use super::Shared;
use crate::engine::catalog::Catalog;
use crate::engine::event::{Event, EventKind};
use crate::engine::ids::{IdSource, ModelKey, Pattern};
use crate::engine::matcher::{self, Match};
use crate::engine::read::{self, LedgerPage, Usage};
use crate::engine::user::{Balance, Reservation, Subscription};
use crate::engine::{
    Command, Outcome, Record, Rejection, Ts, UserKey, UserState, catch_up, next_deadline, step,
};
use actix::{Actor, AsyncContext, Context, Handler, Message, SpawnHandle};
use std::sync::Arc;
use std::time::Duration;

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
    Ledger {
        limit: usize,
        starting_after: Option<String>,
    },
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
    Ledger(LedgerPage),
    Check(Match),
    Ticked,
}

/// A view, valid once the journal is durable up to `seq`.
pub struct Reply {
    pub seq: u64,
    pub result: Result<View, Rejection>,
}

pub struct Envelope(pub Request);

impl Message for Envelope {
    type Result = Reply;
}

/// Fresh ids from ULIDs followed by the user's tag. The generator is monotonic, so a user's ids
/// sort in the order they were made, also within one millisecond.
pub struct UlidIds {
    tag: u64,
    generator: ulid::Generator,
}

impl IdSource for UlidIds {
    fn next_id(&mut self, prefix: &'static str) -> String {
        // The random part only overflows after 2^80 ids in one millisecond.
        let ulid = self
            .generator
            .generate()
            .unwrap_or_else(|_| ulid::Ulid::new());
        format!("{prefix}_{ulid}_{:016x}", self.tag)
    }
}

pub struct UserActor {
    key: UserKey,
    state: UserState,
    shared: Arc<Shared>,
    /// End of the last records this user queued: every answer waits until it is durable.
    last_seq: u64,
    timer: Option<(Ts, SpawnHandle)>,
    ids: UlidIds,
}

/// Messages waiting for a user beyond this are refused as overload rather than queued.
pub const MAILBOX_MAX: usize = 1024;

/// A timer never sleeps longer than this, so a deadline is met even if the clock jumps.
const TIMER_MAX: Duration = Duration::from_secs(3600);

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_MAX);
        self.schedule(ctx);
    }
}

impl UserActor {
    pub fn new(key: UserKey, state: UserState, shared: Arc<Shared>) -> UserActor {
        let tag = key.tag();
        UserActor {
            key,
            state,
            shared,
            last_seq: 0,
            timer: None,
            ids: UlidIds {
                tag,
                generator: ulid::Generator::new(),
            },
        }
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
        if let Request::Command(command) = request {
            let plan_before = self.active_plan();
            let done = step(&mut self.state, &catalog, command, now, &mut self.ids);
            self.record(&done.events, plan_before);
            return done.result.map(|outcome| self.view(outcome));
        }
        let plan_before = self.active_plan();
        let events = catch_up(&mut self.state, now, &mut self.ids);
        self.record(&events, plan_before);
        let state = &self.state;
        match request {
            Request::Command(_) => unreachable!("handled above"),
            Request::Tick => Ok(View::Ticked),
            Request::Check { model, amount } => Ok(View::Check(matcher::find(
                state, &catalog, &model, amount, now,
            ))),
            Request::Reservation(id) => state
                .reservations
                .get(&id)
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
                &catalog,
                filter.as_ref(),
                now,
            ))),
            Request::Ledger {
                limit,
                starting_after,
            } => read::ledger(state, limit, starting_after.as_deref())
                .map(View::Ledger)
                .ok_or_else(|| Rejection::UnknownCursor(starting_after.unwrap_or_default())),
        }
    }

    fn view(&self, outcome: Outcome) -> View {
        let state = &self.state;
        match outcome {
            Outcome::Reservation(id) => View::Reservation(state.reservations[&id].clone()),
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

    fn active_plan(&self) -> Option<String> {
        self.state
            .subscription
            .as_ref()
            .and_then(|s| s.active_plan())
            .map(str::to_owned)
    }

    /// Queues applied events for the journal and keeps the shared indexes in step with them.
    fn record(&mut self, events: &[Event], plan_before: Option<String>) {
        if events.is_empty() {
            return;
        }
        for event in events {
            if let EventKind::CreditsGranted(g) = &event.kind {
                if let Some(intent) = &g.payment_intent {
                    self.shared.index_payment(&self.key, intent, &g.balance_id);
                }
            }
        }
        let plan_after = self.active_plan();
        if plan_before != plan_after {
            self.shared
                .count_subscriber(&self.key.app, plan_before.as_deref(), -1);
            self.shared
                .count_subscriber(&self.key.app, plan_after.as_deref(), 1);
        }
        let key = &self.key;
        self.last_seq = self
            .shared
            .journal
            .push(events.iter().map(|event| Record::User {
                key: key.clone(),
                event: event.clone(),
            }));
    }

    /// Arms a timer for the next deadline, so expiry happens without a request.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let Some(deadline) = next_deadline(&self.state) else {
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
            let _ = actor.handle_request(Request::Tick);
            actor.schedule(ctx);
        });
        self.timer = Some((deadline, handle));
    }
}

impl Handler<Envelope> for UserActor {
    type Result = actix::MessageResult<Envelope>;

    fn handle(&mut self, Envelope(request): Envelope, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.handle_request(request);
        self.schedule(ctx);
        actix::MessageResult(Reply {
            seq: self.last_seq,
            result,
        })
    }
}

/// All of one user's operations of a `/v1/batch`: one message, run in their order.
pub struct BatchEnvelope(pub Vec<Request>);

/// Every operation's answer, in order, valid once the journal is durable up to `seq`.
pub struct BatchReply {
    pub seq: u64,
    pub results: Vec<Result<View, Rejection>>,
}

impl Message for BatchEnvelope {
    type Result = BatchReply;
}

impl Handler<BatchEnvelope> for UserActor {
    type Result = actix::MessageResult<BatchEnvelope>;

    fn handle(
        &mut self,
        BatchEnvelope(requests): BatchEnvelope,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let results = requests
            .into_iter()
            .map(|request| self.handle_request(request))
            .collect();
        // One timer check for the whole group: deadlines only move once it is done.
        self.schedule(ctx);
        actix::MessageResult(BatchReply {
            seq: self.last_seq,
            results,
        })
    }
}
