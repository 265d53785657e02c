//! What the handlers of the API and the pages of the dashboard share: the [`Engine`] handle and
//! what was read from the config at startup. It sits below both faces of the server, which
//! import it and not each other.

use crate::access::{Keys, SandboxLimit};
use crate::actors::Engine;
use crate::config::Config;
use crate::engine::{Mode, Name};
use dashmap::DashMap;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// An app's Stripe webhook signing secrets, one per mode.
pub struct WebhookSecrets {
    pub live: Option<String>,
    pub test: Option<String>,
}

/// What every handler shares. axum clones the state for every extractor and middleware that
/// asks for it, so it is one `Arc`: one reference count to touch per clone, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub engine: Engine,
    pub keys: Keys,
    pub sandbox_limit: SandboxLimit,
    pub webhook_secrets: HashMap<String, WebhookSecrets>,
    pub webhook_tolerance_s: i64,
    /// Each app's `expiring_notice_days`.
    pub expiring_notice_days: HashMap<String, u32>,
    pub metrics: PrometheusHandle,
    pub in_flight: DashMap<(Name, Mode, String), ()>,
    /// Unix seconds of the last snapshot written, 0 before the first.
    pub last_snapshot_s: Arc<AtomicI64>,
    pub webhooks: crate::webhooks::Webhooks,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(
        config: &Config,
        engine: Engine,
        metrics: PrometheusHandle,
        webhooks: crate::webhooks::Webhooks,
    ) -> AppState {
        let webhook_secrets = config
            .apps
            .iter()
            .map(|a| {
                let secrets = WebhookSecrets {
                    live: a.stripe_webhook_secret_live.clone(),
                    test: a.stripe_webhook_secret_test.clone(),
                };
                (a.id.clone(), secrets)
            })
            .collect();
        AppState(Arc::new(Shared {
            engine,
            keys: Keys::from_config(config),
            sandbox_limit: SandboxLimit::new(config.server.sandbox_requests_per_second),
            webhook_secrets,
            webhook_tolerance_s: config.server.webhook_tolerance_seconds,
            expiring_notice_days: config
                .apps
                .iter()
                .map(|a| (a.id.clone(), a.expiring_notice_days))
                .collect(),
            metrics,
            in_flight: DashMap::new(),
            last_snapshot_s: Arc::new(AtomicI64::new(0)),
            webhooks,
        }))
    }

    /// The app's `expiring_notice_days`, for the grants made on its behalf.
    pub fn expiring_notice_days(&self, app: &str) -> u32 {
        self.expiring_notice_days
            .get(app)
            .copied()
            .unwrap_or(crate::config::EXPIRING_NOTICE_DAYS_DEFAULT)
    }

    pub fn snapshot_age_s(&self) -> Option<f64> {
        let last = self.last_snapshot_s.load(Ordering::Relaxed);
        let now = crate::actors::clock::real_now().0 / 1000;
        (last > 0).then(|| (now - last) as f64)
    }
}
