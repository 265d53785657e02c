//! Webhooks out (API.md, "Webhooks out"): the app's endpoints and the delivery of its events.
//!
//! The engine decides the events and the journal writer makes them durable with the change that
//! caused them (`engine::notice`, `persistence::history`). This module takes it from there, off
//! the request path: [`endpoint`] (what an endpoint is, parsed), [`registry`] (endpoints on disk
//! and in memory), [`signing`] (Standard Webhooks signatures), [`delivery`] (the outbox, attempts,
//! retries and endpoint health).

pub mod delivery;
pub mod endpoint;
pub mod registry;
pub mod signing;

use crate::actors::journal_writer::JournalQueue;
use crate::config::Config;
use crate::engine::Mode;
use crate::persistence::History;
use crate::persistence::history::NoticeKey;
use delivery::{Activity, Command, Deliverer, ResendError};
use endpoint::Endpoint;
use registry::Registry;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the HTTP handlers and the dashboard use: the endpoints, their recent attempts, and a way
/// to ask the deliverer for a resend. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    pub registry: Arc<Registry>,
    pub activity: Arc<Activity>,
    /// The events, for `GET /v1/events`.
    pub history: History,
    commands: mpsc::Sender<Command>,
}

/// Resend requests waiting for the deliverer; more is a busy dashboard, told to try again.
const COMMANDS_MAX: usize = 64;

impl Webhooks {
    /// Starts the deliverer task (call within a tokio runtime). It runs until the runtime stops or
    /// the returned handle is aborted.
    pub fn start(
        config: &Config,
        registry: Arc<Registry>,
        history: History,
        journal: Arc<JournalQueue>,
    ) -> (Webhooks, tokio::task::JoinHandle<()>) {
        let activity = Arc::new(Activity::default());
        let (commands, receiver) = mpsc::channel(COMMANDS_MAX);
        let deliverer = Deliverer {
            store: registry.store().clone(),
            registry: registry.clone(),
            history: history.clone(),
            journal,
            activity: activity.clone(),
            policies: config
                .apps
                .iter()
                .map(|a| (a.id.clone(), delivery::Policy::of(a)))
                .collect(),
        };
        let task = tokio::spawn(deliverer.run(receiver));
        (
            Webhooks {
                registry,
                activity,
                history,
                commands,
            },
            task,
        )
    }

    /// Queues event `event_id` of the endpoint's app and mode for the endpoint now, with the same
    /// `webhook-id` as before.
    pub async fn resend(&self, endpoint: &Endpoint, event_id: &str) -> Result<(), ResendError> {
        let (done, answer) = oneshot::channel();
        let command = Command::Resend {
            endpoint: endpoint.clone(),
            event: NoticeKey::of(&endpoint.app, endpoint.mode, event_id),
            done,
        };
        self.commands
            .try_send(command)
            .map_err(|_| ResendError::Stopped)?;
        answer.await.map_err(|_| ResendError::Stopped)?
    }

    pub fn endpoints(&self, app: &str, mode: Mode) -> Vec<Endpoint> {
        self.registry.list(app, mode)
    }
}
