//! Integration tests of `vevee serve`, over HTTP only, against the contract in API.md.

mod actor_panic;
mod batch;
mod catalog;
mod concurrency;
mod crash;
mod damage;
mod dashboard;
mod fuzz_findings;
mod hardening;
mod history;
mod idempotency;
mod ledger;
mod openapi;
mod restart;
mod sleep;
mod slow_clients;
mod story;
mod stripe_fixtures;
mod support;
mod validation;
mod webhook;
mod webhooks_out;
