#!/usr/bin/env python3
"""Generate tests/stripe/fixtures.json: Stripe webhook payloads signed by the OFFICIAL library.

Why this exists: our verifier in src/stripe/signature.rs must agree with what Stripe really sends.
Signing the fixtures with our own code would only prove that the code agrees with itself, so every
`Stripe-Signature` header here comes from the PyPI `stripe` package
(`stripe.WebhookSignature.generate_signature_header`, defined in `stripe._webhook` since v8).

How to regenerate (from the repository root; needs PyPI only, no Stripe account or network to Stripe):

    python3 -m venv /tmp/stripe-fixtures-venv
    /tmp/stripe-fixtures-venv/bin/pip install --quiet stripe
    /tmp/stripe-fixtures-venv/bin/python tests/stripe/generate_fixtures.py

or just `python3 tests/stripe/generate_fixtures.py`, which creates that venv itself when `stripe` is
not importable. Output is deterministic (fixed timestamps, fixed payloads): re-running it must leave
fixtures.json unchanged, and a diff means the official library changed how it signs.

Each fixture is `{name, secret, timestamp, payload, header}`; `payload` is the exact body string
(pretty-printed like Stripe's own deliveries, UTF-8), `header` the exact `Stripe-Signature` value.
The secrets are made-up test values, not real Stripe secrets.
"""

import json
import os
import subprocess
import sys

VENV = "/tmp/stripe-fixtures-venv"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures.json")

# The known vector pinned by a unit test in src/stripe/signature.rs.
KNOWN_SECRET = "whsec_test_secret"
KNOWN_TIMESTAMP = 1700000000
KNOWN_PAYLOAD = '{"id":"evt_test","object":"event"}'

# Made-up per-mode secrets, as an app would configure `stripe_webhook_secret_test/_live`.
TEST_SECRET = "whsec_vevee_fixture_test_mode_0123456789abcdef"
LIVE_SECRET = "whsec_vevee_fixture_live_mode_fedcba9876543210"
# The secret being rotated out: Stripe signs with both while a rotation is in progress.
OLD_TEST_SECRET = "whsec_vevee_fixture_test_mode_previous_secret"

BASE_TIMESTAMP = 1767225600  # 2026-01-01T00:00:00Z


def load_stripe():
    """Import the official library, re-running this script inside a private venv if needed."""
    try:
        import stripe  # noqa: F401

        return stripe
    except ImportError:
        if os.environ.get("VEVEE_FIXTURES_IN_VENV"):
            raise
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([python, "-m", "pip", "install", "--quiet", "stripe"])
    env = dict(os.environ, VEVEE_FIXTURES_IN_VENV="1")
    os.execve(python, [python, os.path.abspath(__file__)], env)
    return None  # unreachable: execve replaces this process


def event(evt_id, event_type, livemode, obj, created):
    """An event envelope shaped like Stripe's API version 2025 deliveries."""
    return {
        "id": evt_id,
        "object": "event",
        "api_version": "2025-06-30.basil",
        "created": created,
        "data": {"object": obj},
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def checkout_session(cs_id, livemode, payment_status, metadata, client_reference_id, pi):
    return {
        "id": cs_id,
        "object": "checkout.session",
        "amount_subtotal": 1900,
        "amount_total": 1900,
        "client_reference_id": client_reference_id,
        "currency": "usd",
        "customer": None,
        "customer_details": {"email": "ada@example.com", "name": "Ada Lovelace"},
        "livemode": livemode,
        "metadata": metadata,
        "mode": "payment",
        "payment_intent": pi,
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "status": "complete",
        "success_url": "https://pixelforge.example/thanks",
    }


def charge(ch_id, pi, amount, amount_refunded, refunded):
    return {
        "id": ch_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "captured": True,
        "currency": "usd",
        "livemode": False,
        "metadata": {},
        "paid": True,
        "payment_intent": pi,
        "refunded": refunded,
        "status": "succeeded",
    }


def payloads():
    """(name, secret, timestamp, event dict) for every realistic delivery we test."""
    t = BASE_TIMESTAMP
    paid_meta = {"userId": "user_42", "packId": "pack_starter"}
    return [
        ("checkout_completed_paid_test", TEST_SECRET, t, event(
            "evt_1TestPaid", "checkout.session.completed", False,
            checkout_session("cs_test_paid", False, "paid", paid_meta, None, "pi_test_paid"), t)),
        ("checkout_completed_paid_live", LIVE_SECRET, t + 1, event(
            "evt_1LivePaid", "checkout.session.completed", True,
            checkout_session("cs_live_paid", True, "paid", paid_meta, None, "pi_live_paid"), t + 1)),
        ("checkout_completed_unpaid", TEST_SECRET, t + 2, event(
            "evt_1TestUnpaid", "checkout.session.completed", False,
            checkout_session("cs_test_async", False, "unpaid", paid_meta, None, "pi_test_async"),
            t + 2)),
        ("checkout_async_payment_succeeded", TEST_SECRET, t + 3, event(
            "evt_1TestAsyncOk", "checkout.session.async_payment_succeeded", False,
            checkout_session("cs_test_async", False, "paid", paid_meta, None, "pi_test_async"),
            t + 3)),
        ("charge_refunded_full", TEST_SECRET, t + 4, event(
            "evt_1TestRefundFull", "charge.refunded", False,
            charge("ch_test_full", "pi_test_paid", 1900, 1900, True), t + 4)),
        ("charge_refunded_partial", TEST_SECRET, t + 5, event(
            "evt_1TestRefundPart", "charge.refunded", False,
            charge("ch_test_part", "pi_test_paid", 1900, 500, False), t + 5)),
        ("customer_created_unknown_type", TEST_SECRET, t + 6, event(
            "evt_1TestCustomer", "customer.created", False,
            # Non-ASCII on purpose: the signature covers UTF-8 bytes, not characters.
            {"id": "cus_test_1", "object": "customer", "email": "zoe@example.com",
             "name": "Zoë Ångström", "livemode": False, "metadata": {}}, t + 6)),
        ("checkout_completed_no_user", TEST_SECRET, t + 7, event(
            "evt_1TestNoUser", "checkout.session.completed", False,
            checkout_session("cs_test_nouser", False, "paid", {"packId": "pack_starter"}, None,
                             "pi_test_nouser"), t + 7)),
        ("checkout_completed_unknown_pack", TEST_SECRET, t + 8, event(
            "evt_1TestBadPack", "checkout.session.completed", False,
            checkout_session("cs_test_badpack", False, "paid", {"packId": "pack_does_not_exist"},
                             "user_from_client_ref", "pi_test_badpack"), t + 8)),
        ("checkout_completed_no_payment_required", TEST_SECRET, t + 9, event(
            "evt_1TestFree", "checkout.session.completed", False,
            checkout_session("cs_test_free", False, "no_payment_required", paid_meta, None, None),
            t + 9)),
    ]


def fixture(stripe, name, secret, timestamp, payload):
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
    return {"name": name, "secret": secret, "timestamp": timestamp, "payload": payload,
            "header": header}


def rotation_fixture(stripe):
    """During a secret rotation Stripe sends one v1 per active secret, the old one first."""
    name, _, t, evt = payloads()[0]
    payload = json.dumps(evt, indent=2, ensure_ascii=False)
    sig = lambda secret: stripe.WebhookSignature.generate_signature_header(  # noqa: E731
        payload, secret, t).split(",v1=")[1]
    header = f"t={t},v1={sig(OLD_TEST_SECRET)},v1={sig(TEST_SECRET)},v0=0123456789abcdef"
    return {"name": "rotation_two_v1_second_matches", "secret": TEST_SECRET, "timestamp": t,
            "payload": payload, "header": header}


def main():
    stripe = load_stripe()
    fixtures = [fixture(stripe, "known_vector", KNOWN_SECRET, KNOWN_TIMESTAMP, KNOWN_PAYLOAD)]
    for name, secret, t, evt in payloads():
        payload = json.dumps(evt, indent=2, ensure_ascii=False)
        fixtures.append(fixture(stripe, name, secret, t, payload))
    fixtures.append(rotation_fixture(stripe))
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(fixtures, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(fixtures)} fixtures to {OUT} (stripe-python {stripe.VERSION})")


if __name__ == "__main__":
    main()
