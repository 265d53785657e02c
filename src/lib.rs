//! vevee: usage metering and credit packs for AI-generation apps.
//!
//! Reading order: [`engine`] holds every business rule as pure functions (no I/O), the catalog's
//! input rules included ([`engine::catalog_input`]); [`persistence`] keeps its events on disk (a
//! sled journal with group commit, bincode snapshots); [`actors`] runs one actor per user over the
//! engine and answers once a change is durable; [`webhooks`] delivers the app's events and
//! [`stripe`] checks and reads Stripe's; [`config`] reads the config file.
//!
//! The server has two faces over the same [`actors::Engine`]: [`http`], the thin axum layer of
//! API.md, and [`dashboard`], the operator's pages. `http` does not know the dashboard, and the
//! dashboard uses only [`http::error`] of it, the one place refusals become HTTP answers. What
//! both need sits below them: [`state`] (what their handlers share), [`access`] (API keys and the
//! test-mode budget) and [`views`] (API.md's JSON shapes, also the payloads of outgoing webhooks).
//! [`startup`] puts it together: it recovers, starts the actors, merges the routes of both faces
//! and serves them through one set of layers. [`admin`] holds the offline commands.

pub mod access;
pub mod actors;
pub mod admin;
pub mod allocator;
pub mod config;
pub mod dashboard;
pub mod engine;
pub mod http;
pub mod persistence;
pub mod startup;
pub mod state;
pub mod stripe;
pub mod views;
pub mod webhooks;
