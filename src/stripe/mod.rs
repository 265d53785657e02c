//! Stripe webhooks: verifying the `Stripe-Signature` header and reading the events we act on.
//!
//! Both halves are pure (no clock, no I/O, no config) so the HTTP layer decides the time, the
//! secret for the event's mode and the status codes. Typical use on a raw request body:
//! [`peek_livemode`] to pick the live or test secret, [`verify`] with [`DEFAULT_TOLERANCE_S`],
//! then [`parse_event`]. The tests use headers signed by the official Stripe library
//! (`tests/stripe/generate_fixtures.py`), not by this code.

mod event;
mod signature;

pub use event::{EventError, EventKind, StripeEvent, parse_event, peek_livemode};
pub use signature::{DEFAULT_TOLERANCE_S, SignatureError, verify};

/// Fixtures signed by the official Stripe library, shared by the unit tests of both halves.
#[cfg(test)]
mod test_fixtures {
    use serde::Deserialize;

    #[derive(Debug, Clone, Deserialize)]
    pub struct Fixture {
        pub name: String,
        pub secret: String,
        pub timestamp: i64,
        pub payload: String,
        pub header: String,
    }

    pub fn fixtures() -> Vec<Fixture> {
        serde_json::from_str(include_str!("../../tests/stripe/fixtures.json"))
            .expect("tests/stripe/fixtures.json is a list of fixtures")
    }

    pub fn fixture(name: &str) -> Fixture {
        fixtures()
            .into_iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no fixture named {name}; regenerate fixtures.json"))
    }
}
