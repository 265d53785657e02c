//! The endpoints: kept on disk (`persistence::webhooks`) and copied in memory, where the HTTP
//! handlers, the dashboard and the deliverer read them. A change is written and synced first and
//! only then shown in memory, so nobody is told of a change a crash could undo.
//!
//! Nothing here is shared with the user actors: the request path of a reservation never touches
//! this lock.

use super::endpoint::{
    ENDPOINTS_PER_SCOPE_MAX, Endpoint, EndpointRejection, EventFilter, PREVIOUS_SECRET_MS,
    PreviousSecret,
};
use super::signing;
use crate::engine::{Mode, Ts};
use crate::persistence::webhooks::{WebhookStore, WebhookStoreError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// How long a creation waits at most for its app's clock to pass the new endpoint's
/// `createdAt` (normally under a millisecond, and the disk sync before it has taken longer).
const CLOCK_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Rejected(#[from] EndpointRejection),
    #[error("the webhook endpoint store failed: {0}")]
    Store(#[from] WebhookStoreError),
    #[error("the webhook endpoint store's worker stopped")]
    Stopped,
}

/// A change to an endpoint, each field optional (PATCH). `description: Some(None)` clears it.
#[derive(Debug, Default, Clone)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub events: Option<EventFilter>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

pub struct Registry {
    store: WebhookStore,
    endpoints: Mutex<BTreeMap<String, Endpoint>>,
    /// Serialises changes, so a count checked (16 per scope) is still true when it is written.
    writes: tokio::sync::Mutex<()>,
    /// Poked after every change, for the deliverer (an endpoint enabled again gets its pending
    /// deliveries back).
    pub changed: Notify,
}

impl Registry {
    pub fn load(store: WebhookStore) -> Result<Arc<Registry>, WebhookStoreError> {
        let endpoints = store
            .endpoints::<Endpoint>()?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        Ok(Arc::new(Registry {
            store,
            endpoints: Mutex::new(endpoints),
            writes: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
        }))
    }

    pub fn store(&self) -> &WebhookStore {
        &self.store
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Endpoint>> {
        self.endpoints.lock().expect("webhook endpoints poisoned")
    }

    /// The scope's endpoints, oldest first (ids are ULIDs).
    pub fn list(&self, app: &str, mode: Mode) -> Vec<Endpoint> {
        self.map()
            .values()
            .filter(|e| e.in_scope(app, mode))
            .cloned()
            .collect()
    }

    /// Every endpoint, for the deliverer.
    pub fn all(&self) -> Vec<Endpoint> {
        self.map().values().cloned().collect()
    }

    pub fn get(&self, app: &str, mode: Mode, id: &str) -> Result<Endpoint, EndpointRejection> {
        self.map()
            .get(id)
            .filter(|e| e.in_scope(app, mode))
            .cloned()
            .ok_or_else(|| EndpointRejection::NotFound(id.to_owned()))
    }

    /// Writes `endpoint` durably, then shows it.
    async fn save(&self, endpoint: Endpoint) -> Result<Endpoint, RegistryError> {
        let store = self.store.clone();
        let saved = endpoint.clone();
        tokio::task::spawn_blocking(move || store.put_endpoint(&saved.id, &saved))
            .await
            .map_err(|_| RegistryError::Stopped)??;
        self.map().insert(endpoint.id.clone(), endpoint.clone());
        self.changed.notify_one();
        Ok(endpoint)
    }

    /// Every endpoint, once no change is under way: what the deliverer matches events against.
    ///
    /// With [`Registry::create`] this makes "an endpoint receives the events made after its
    /// `createdAt`" exact. An endpoint being created holds the lock from reading its `createdAt`
    /// until it is shown, so an event the deliverer matches either finds it here, or was made
    /// before this call and so no later than the `createdAt` of any endpoint created after it.
    pub async fn settled(&self) -> Vec<Endpoint> {
        let _write = self.writes.lock().await;
        self.all()
    }

    /// Creates an endpoint stamped `createdAt` = `now()` (its app's and mode's clock, the one that
    /// stamps events). It receives the events made strictly after that: the answer waits until
    /// `now()` has passed it (the disk sync nearly always has), so that an event made after the
    /// answer is never in the same millisecond.
    pub async fn create(
        &self,
        app: &str,
        mode: Mode,
        url: String,
        events: EventFilter,
        description: Option<String>,
        now: impl Fn() -> Ts,
    ) -> Result<Endpoint, RegistryError> {
        let _write = self.writes.lock().await;
        if self.list(app, mode).len() >= ENDPOINTS_PER_SCOPE_MAX {
            return Err(EndpointRejection::TooMany.into());
        }
        let created_at = now();
        let created = self
            .save(Endpoint::new(
                app,
                mode,
                url,
                events,
                description,
                created_at,
            ))
            .await?;
        // Bounded: a wall clock stepped back (NTP) must not hold every endpoint change up.
        let waited_max = std::time::Instant::now() + CLOCK_WAIT_MAX;
        while now() <= created_at && std::time::Instant::now() < waited_max {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(created)
    }

    pub async fn update(
        &self,
        app: &str,
        mode: Mode,
        id: &str,
        patch: EndpointPatch,
    ) -> Result<Endpoint, RegistryError> {
        let _write = self.writes.lock().await;
        let mut endpoint = self.get(app, mode, id)?;
        if let Some(url) = patch.url {
            endpoint.url = url;
        }
        if let Some(events) = patch.events {
            endpoint.events = events;
        }
        if let Some(description) = patch.description {
            endpoint.description = description;
        }
        if let Some(enabled) = patch.enabled {
            if enabled && !endpoint.enabled {
                // A fresh start: the 24 hours of failures count again from the next failure.
                endpoint.failing_since_ms = None;
            }
            endpoint.enabled = enabled;
            endpoint.disabled_reason = None;
        }
        self.save(endpoint).await
    }

    pub async fn rotate(
        &self,
        app: &str,
        mode: Mode,
        id: &str,
        now_ms: i64,
    ) -> Result<Endpoint, RegistryError> {
        let _write = self.writes.lock().await;
        let mut endpoint = self.get(app, mode, id)?;
        let old = std::mem::replace(&mut endpoint.secret, signing::new_secret());
        endpoint.previous_secret = Some(PreviousSecret {
            secret: old,
            until_ms: now_ms + PREVIOUS_SECRET_MS,
        });
        self.save(endpoint).await
    }

    pub async fn delete(&self, app: &str, mode: Mode, id: &str) -> Result<(), RegistryError> {
        let _write = self.writes.lock().await;
        self.get(app, mode, id)?;
        let store = self.store.clone();
        let gone = id.to_owned();
        tokio::task::spawn_blocking(move || store.delete_endpoint(&gone))
            .await
            .map_err(|_| RegistryError::Stopped)??;
        self.map().remove(id);
        self.changed.notify_one();
        Ok(())
    }

    /// The server disables an endpoint (failing for 24 h, outbox full), durably.
    pub async fn disable(&self, id: &str, reason: &str) -> Result<(), RegistryError> {
        let _write = self.writes.lock().await;
        let Some(mut endpoint) = self.map().get(id).cloned() else {
            return Ok(());
        };
        if !endpoint.enabled {
            return Ok(());
        }
        tracing::warn!(endpoint = %id, reason, "webhook endpoint disabled");
        endpoint.enabled = false;
        endpoint.disabled_reason = Some(reason.to_owned());
        self.save(endpoint).await.map(|_| ())
    }

    /// Notes when an endpoint started failing (`Some`) or that it answered again (`None`).
    pub async fn set_failing_since(
        &self,
        id: &str,
        since_ms: Option<i64>,
    ) -> Result<(), RegistryError> {
        let _write = self.writes.lock().await;
        let Some(mut endpoint) = self.map().get(id).cloned() else {
            return Ok(());
        };
        if endpoint.failing_since_ms == since_ms {
            return Ok(());
        }
        endpoint.failing_since_ms = since_ms;
        self.save(endpoint).await.map(|_| ())
    }
}
