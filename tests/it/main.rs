//! Integration tests of `vevee serve`, over HTTP only, against the contract in API.md.

mod catalog;
mod concurrency;
mod crash;
mod damage;
mod fuzz_findings;
mod idempotency;
mod ledger;
mod openapi;
mod restart;
mod story;
mod stripe_fixtures;
mod support;
mod validation;
mod webhook;
