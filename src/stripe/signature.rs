//! Verification of the `Stripe-Signature` header, exactly as Stripe signs webhooks.
//!
//! Stripe sends `t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]` where each `v1` is
//! `hex(HMAC-SHA256(key = the whole "whsec_..." string, message = "{t}.{raw body}"))`. While an
//! endpoint secret is being rolled, Stripe signs with every active secret, so ANY `v1` may match.
//! Written by hand on `hmac` + `sha2` + `subtle` because the Rust Stripe crates keep only the last
//! `v1` or compare with `!=`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

/// Stripe's own libraries default to five minutes; so does vevee.
pub const DEFAULT_TOLERANCE_S: i64 = 300;

/// The only scheme Stripe signs live traffic with; `v0` and unknown schemes are ignored.
const SCHEME: &str = "v1";

/// Why a `Stripe-Signature` header was refused. The HTTP layer answers all of them with 400
/// `invalid_signature`. No message ever includes the secret or the expected signature, so they
/// are safe to log and to return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing or empty")]
    MissingHeader,
    #[error("the Stripe-Signature header is malformed: {0}")]
    MalformedHeader(&'static str),
    #[error("the Stripe-Signature header carries no v1 signature")]
    NoV1Signature,
    #[error(
        "the Stripe-Signature timestamp {timestamp} is {age_s} s away from the server clock \
         ({now}), more than the {tolerance_s} s tolerance"
    )]
    TimestampOutsideTolerance {
        timestamp: i64,
        now: i64,
        age_s: u64,
        tolerance_s: i64,
    },
    #[error("no v1 signature in the Stripe-Signature header matches the webhook secret")]
    NoMatchingSignature,
    /// An empty key would make the HMAC computable by anyone: refuse rather than accept forgeries.
    #[error("no Stripe webhook secret is configured for this mode")]
    EmptySecret,
}

/// Checks `header` against the raw request body and returns the signed timestamp.
///
/// The signature is checked before the timestamp, as Stripe's libraries do, so a tolerance error
/// is only ever reported for a delivery that really came from Stripe (a clock or replay problem,
/// not a forgery). The timestamp must be within `tolerance_s` of `now_unix_s` in both directions.
///
/// Pass `""` when the request has no `Stripe-Signature` header: that is reported as
/// [`SignatureError::MissingHeader`].
pub fn verify(
    header: &str,
    payload: &[u8],
    secret: &str,
    now_unix_s: i64,
    tolerance_s: i64,
) -> Result<i64, SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::EmptySecret);
    }
    let parsed = parse_header(header)?;
    let expected = expected_signature_hex(secret, parsed.timestamp_text, payload)
        .ok_or(SignatureError::NoMatchingSignature)?;
    if !any_matches(&expected, &parsed.v1) {
        return Err(SignatureError::NoMatchingSignature);
    }
    check_tolerance(parsed.timestamp, now_unix_s, tolerance_s)?;
    Ok(parsed.timestamp)
}

/// The parts of a header that matter; borrowed from the header text.
#[derive(Debug)]
struct ParsedHeader<'a> {
    /// Exactly as it appeared, because that text is what was signed.
    timestamp_text: &'a str,
    timestamp: i64,
    v1: Vec<&'a str>,
}

fn parse_header(header: &str) -> Result<ParsedHeader<'_>, SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::MissingHeader);
    }
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::MalformedHeader(
                "an element is not of the form key=value",
            ))?;
        match key {
            "t" if timestamp.is_some() => {
                return Err(SignatureError::MalformedHeader(
                    "more than one t= timestamp",
                ));
            }
            "t" => timestamp = Some(parse_timestamp(value)?),
            SCHEME => v1.push(value),
            _ => {} // v0 and future schemes: ignored, as Stripe's libraries do.
        }
    }
    let (timestamp_text, timestamp) =
        timestamp.ok_or(SignatureError::MalformedHeader("no t= timestamp"))?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(ParsedHeader {
        timestamp_text,
        timestamp,
        v1,
    })
}

/// Stripe timestamps are plain decimal Unix seconds; anything else (signs, spaces, overflow) is
/// refused so that the signed text and the number we check can never disagree.
fn parse_timestamp(text: &str) -> Result<(&str, i64), SignatureError> {
    let malformed = SignatureError::MalformedHeader("t= is not a decimal Unix timestamp");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed);
    }
    text.parse::<i64>()
        .map(|t| (text, t))
        .map_err(|_| malformed)
}

/// Lower-case hex, the form Stripe sends and compares against.
///
/// `None` only if the key were refused, which HMAC never does (any length is valid); the caller
/// then fails closed instead of panicking.
fn expected_signature_hex(secret: &str, timestamp_text: &str, payload: &[u8]) -> Option<String> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp_text.as_bytes());
    mac.update(b".");
    mac.update(payload);
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// Compares against every candidate without stopping early, each in constant time, so timing
/// reveals neither which candidate matched nor how much of one did.
fn any_matches(expected: &str, candidates: &[&str]) -> bool {
    let matched = candidates.iter().fold(Choice::from(0), |acc, c| {
        acc | expected.as_bytes().ct_eq(c.as_bytes())
    });
    matched.into()
}

fn check_tolerance(timestamp: i64, now: i64, tolerance_s: i64) -> Result<(), SignatureError> {
    let age_s = now.abs_diff(timestamp);
    // A negative tolerance is treated as zero: only the exact second is accepted.
    let allowed = u64::try_from(tolerance_s).unwrap_or(0);
    if age_s > allowed {
        return Err(SignatureError::TimestampOutsideTolerance {
            timestamp,
            now,
            age_s,
            tolerance_s,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::test_fixtures::{Fixture, fixture, fixtures};

    /// Only for property tests; fixture tests use headers made by the official Stripe library.
    fn sign(payload: &[u8], secret: &str, t: i64) -> String {
        let hex = expected_signature_hex(secret, &t.to_string(), payload).unwrap_or_default();
        format!("t={t},v1={hex}")
    }

    type VerifyResult = Result<i64, SignatureError>;

    fn check(header: &str, payload: &[u8], secret: &str, now: i64) -> VerifyResult {
        verify(header, payload, secret, now, DEFAULT_TOLERANCE_S)
    }

    /// A second after the signed time, as a prompt delivery would arrive.
    fn verify_fixture(f: &Fixture) -> VerifyResult {
        check(&f.header, f.payload.as_bytes(), &f.secret, f.timestamp + 1)
    }

    #[test]
    fn the_known_vector_matches_the_pinned_hex_from_the_official_library() {
        let f = fixture("known_vector");
        assert_eq!(f.secret, "whsec_test_secret");
        assert_eq!(f.timestamp, 1_700_000_000);
        let pinned = "8042376f6ca064adbe037642a718227dfd59047137eb49497a54c49eb0cfb724";
        assert_eq!(f.header, format!("t=1700000000,v1={pinned}"));
        let ours = expected_signature_hex(&f.secret, "1700000000", f.payload.as_bytes());
        assert_eq!(ours.as_deref(), Some(pinned));
        assert_eq!(verify_fixture(&f), Ok(1_700_000_000));
    }

    #[test]
    fn every_fixture_signed_by_the_official_library_verifies() {
        for f in fixtures() {
            assert_eq!(verify_fixture(&f), Ok(f.timestamp), "fixture {}", f.name);
        }
    }

    #[test]
    fn a_header_with_two_v1_values_verifies_when_only_the_second_matches() {
        let f = fixture("rotation_two_v1_second_matches");
        assert_eq!(f.header.matches("v1=").count(), 2);
        assert_eq!(verify_fixture(&f), Ok(f.timestamp));
    }

    #[test]
    fn a_header_with_two_v1_values_verifies_when_only_the_first_matches() {
        let f = fixture("checkout_completed_paid_test");
        let header = format!("{},v1={}", f.header, "0".repeat(64));
        assert_eq!(
            check(&header, f.payload.as_bytes(), &f.secret, f.timestamp),
            Ok(f.timestamp)
        );
    }

    #[test]
    fn a_wrong_secret_is_refused() {
        let f = fixture("checkout_completed_paid_test");
        let got = check(&f.header, f.payload.as_bytes(), "whsec_wrong", f.timestamp);
        assert_eq!(got, Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn the_live_secret_does_not_verify_a_test_mode_event() {
        let test_event = fixture("checkout_completed_paid_test");
        let live_secret = fixture("checkout_completed_paid_live").secret;
        assert_ne!(live_secret, test_event.secret);
        let got = check(
            &test_event.header,
            test_event.payload.as_bytes(),
            &live_secret,
            test_event.timestamp,
        );
        assert_eq!(got, Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn a_timestamp_older_than_the_tolerance_is_refused() {
        let f = fixture("checkout_completed_paid_test");
        let now = f.timestamp + DEFAULT_TOLERANCE_S + 1;
        let got = check(&f.header, f.payload.as_bytes(), &f.secret, now);
        assert!(matches!(
            got,
            Err(SignatureError::TimestampOutsideTolerance { age_s: 301, .. })
        ));
    }

    #[test]
    fn a_timestamp_exactly_at_the_tolerance_is_accepted() {
        let f = fixture("checkout_completed_paid_test");
        for now in [
            f.timestamp - DEFAULT_TOLERANCE_S,
            f.timestamp + DEFAULT_TOLERANCE_S,
        ] {
            let got = check(&f.header, f.payload.as_bytes(), &f.secret, now);
            assert_eq!(got, Ok(f.timestamp));
        }
    }

    #[test]
    fn a_timestamp_further_in_the_future_than_the_tolerance_is_refused() {
        let f = fixture("checkout_completed_paid_test");
        let now = f.timestamp - DEFAULT_TOLERANCE_S - 1;
        let got = check(&f.header, f.payload.as_bytes(), &f.secret, now);
        assert!(matches!(
            got,
            Err(SignatureError::TimestampOutsideTolerance { .. })
        ));
    }

    #[test]
    fn a_missing_or_empty_header_is_refused_as_missing() {
        let f = fixture("checkout_completed_paid_test");
        for header in ["", "   "] {
            let got = check(header, f.payload.as_bytes(), &f.secret, f.timestamp);
            assert_eq!(got, Err(SignatureError::MissingHeader), "header {header:?}");
        }
    }

    #[test]
    fn garbage_headers_are_refused_as_malformed_or_unsigned() {
        let f = fixture("checkout_completed_paid_test");
        let cases = [
            "garbage",
            "t=,v1=abc",
            "t=abc,v1=abc",
            "t=-1700000000,v1=abc",
            "t=99999999999999999999999,v1=abc",
            "v1=abc",
            "t=1,t=2,v1=abc",
            "t=1767225600;v1=abc",
        ];
        for header in cases {
            let got = check(header, f.payload.as_bytes(), &f.secret, f.timestamp);
            assert!(
                matches!(got, Err(SignatureError::MalformedHeader(_))),
                "{header:?}: {got:?}"
            );
        }
        let v0_only = format!("t={},v0=abc,v2=def", f.timestamp);
        let got = check(&v0_only, f.payload.as_bytes(), &f.secret, f.timestamp);
        assert_eq!(got, Err(SignatureError::NoV1Signature));
    }

    #[test]
    fn a_body_changed_by_one_byte_is_refused() {
        let f = fixture("checkout_completed_paid_test");
        let mut body = f.payload.clone().into_bytes();
        let i = body.len() / 2;
        body[i] ^= 0x01;
        let got = check(&f.header, &body, &f.secret, f.timestamp);
        assert_eq!(got, Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn a_body_with_one_extra_trailing_newline_is_refused() {
        let f = fixture("checkout_completed_paid_test");
        let body = format!("{}\n", f.payload);
        let got = check(&f.header, body.as_bytes(), &f.secret, f.timestamp);
        assert_eq!(got, Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn an_upper_case_signature_is_refused_as_stripe_compares_lower_case_hex() {
        let f = fixture("known_vector");
        let header = f
            .header
            .to_uppercase()
            .replace("T=", "t=")
            .replace("V1=", "v1=");
        let got = check(&header, f.payload.as_bytes(), &f.secret, f.timestamp);
        assert_eq!(got, Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn an_empty_secret_is_refused_rather_than_used_as_a_public_key() {
        let f = fixture("known_vector");
        let header = sign(f.payload.as_bytes(), "", f.timestamp);
        let got = check(&header, f.payload.as_bytes(), "", f.timestamp);
        assert_eq!(got, Err(SignatureError::EmptySecret));
    }

    #[test]
    fn error_messages_never_contain_the_secret_or_the_expected_signature() {
        let f = fixture("known_vector");
        let expected = expected_signature_hex(&f.secret, "1700000000", f.payload.as_bytes())
            .expect("HMAC takes any key");
        let errors = [
            check("", b"", &f.secret, 0),
            check("t=x", b"", &f.secret, 0),
            check("t=1,v0=a", b"", &f.secret, 0),
            check(&f.header, f.payload.as_bytes(), &f.secret, 0),
            check("t=1700000000,v1=00", f.payload.as_bytes(), &f.secret, 0),
        ];
        for err in errors {
            let message = err.expect_err("every case is refused").to_string();
            assert!(!message.contains(&f.secret), "{message}");
            assert!(!message.contains(&expected), "{message}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_payload_signed_with_the_secret_verifies_at_its_timestamp(
                payload in proptest::collection::vec(any::<u8>(), 0..512),
                secret in "whsec_[A-Za-z0-9]{1,40}",
                t in 0i64..4_000_000_000,
            ) {
                let header = sign(&payload, &secret, t);
                prop_assert_eq!(verify(&header, &payload, &secret, t, 300), Ok(t));
            }

            #[test]
            fn any_flipped_byte_in_the_payload_is_refused(
                payload in proptest::collection::vec(any::<u8>(), 1..512),
                index in any::<prop::sample::Index>(),
                flip in 1u8..=255,
            ) {
                let header = sign(&payload, "whsec_prop", 1_700_000_000);
                let mut tampered = payload.clone();
                tampered[index.index(payload.len())] ^= flip;
                prop_assert_eq!(
                    verify(&header, &tampered, "whsec_prop", 1_700_000_000, 300),
                    Err(SignatureError::NoMatchingSignature)
                );
            }

            #[test]
            fn arbitrary_headers_never_panic(header in ".{0,200}") {
                let _ = verify(&header, b"{}", "whsec_prop", 1_700_000_000, 300);
            }
        }
    }
}
