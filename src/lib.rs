//! vevee: usage metering and credit packs for AI-generation apps.
//!
//! Reading order: [`engine`] holds every business rule as pure functions (no I/O); [`persistence`]
//! keeps its events on disk (a sled journal with group commit, bincode snapshots); [`actors`] runs
//! one actor per user over the engine and answers once a change is durable; [`http`] is the thin
//! axum layer of API.md; [`stripe`] checks and reads Stripe's webhooks; [`config`] and [`startup`]
//! put it together.

pub mod access;
pub mod actors;
pub mod admin;
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
