//! The pure domain: every business rule of vevee, with no actor, clock, disk or HTTP in it.
//!
//! Reading order: [`ids`] and [`time`] (values that parse their input) and [`name`] (the shared
//! strings ids are held in), [`catalog`] (plans and
//! packs) and [`catalog_input`] (the rules a plan or pack as written must meet), [`user`] (one
//! user's state and `apply`), [`event`] (what `apply` takes) and [`ledger`] (what it keeps of
//! them), [`matcher`] (who pays for a request), [`decide`] (commands into events), and [`state`]
//! (the whole engine as the journal sees it).

pub mod audit;
pub mod bounds;
pub mod catalog;
pub mod catalog_input;
pub mod decide;
pub mod event;
pub mod ids;
pub mod ledger;
pub mod matcher;
pub mod name;
pub mod notice;
pub mod read;
pub mod state;
pub mod time;
pub mod user;

#[cfg(test)]
pub(crate) mod tests;

pub use decide::{
    Changes, Command, Decision, NoPast, Outcome, Past, Rejection, Step, catch_up, decide,
    next_deadline, next_due, step, step_admitted,
};
pub use name::Name;
pub use state::{EngineState, Mode, Record, Settled, UserKey};
pub use time::Ts;
pub use user::{Applied, UserState};
