//! Integration tests of `vevee serve`, over HTTP only, against the contract in API.md.

mod batch;
mod catalog;
mod concurrency;
mod crash;
mod damage;
mod idempotency;
mod ledger;
mod restart;
mod story;
mod stripe_fixtures;
mod support;
mod validation;
mod webhook;
