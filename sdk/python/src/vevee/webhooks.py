"""Webhooks out: vevee POSTs events to the app's endpoints, signed per the Standard Webhooks spec
(https://www.standardwebhooks.com). `verify_webhook` checks such a request and returns its event.

    event = verify_webhook(request.get_data(), request.headers, os.environ["VEVEE_WEBHOOK_SECRET"])
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from .errors import VeveeConfigurationError, WebhookVerificationError

__all__ = ["WEBHOOK_EVENT_TYPES", "verify_webhook"]

#: The event types of API.md ("Webhooks out"). A newer server may send others: ignore those.
WEBHOOK_EVENT_TYPES = (
    "credits.granted",
    "credits.revoked",
    "credits.expired",
    "credits.low",
    "credits.depleted",
    "credits.expiring",
    "plan.limit_reached",
    "subscription.updated",
    "subscription.canceled",
    "reservation.expired",
)

_SECRET_PREFIX = "whsec_"
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}")


def verify_webhook(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_seconds: float = 300,
    now: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Verifies a webhook request from vevee and returns its event, decoded from JSON.

    - `payload`: the raw request body exactly as received (Flask: `request.get_data()`, Django:
      `request.body`, Starlette: `await request.body()`), never `json.dumps` of a parsed body:
      the signature covers the bytes.
    - `headers`: the request's headers; names are matched in any case.
    - `secret`: the endpoint's `whsec_...` secret (the prefix may be left out).
    - `now`: the current time in seconds since the epoch, like `time.time` (the default).

    Checks, in order: the secret decodes; `webhook-id`, `webhook-timestamp` and
    `webhook-signature` are present; the timestamp is within `tolerance_seconds` of now, either
    way; one of the space-separated `v1,<base64>` signatures (two during a secret rotation) is the
    HMAC-SHA256, keyed with the secret's decoded bytes, of `"{id}.{timestamp}.{payload}"`,
    compared in constant time; the body is a JSON event (`id`, `type`, `createdAt`, `mode`,
    `data`). Raises `WebhookVerificationError` (with `reason`) otherwise.
    """
    if (
        isinstance(tolerance_seconds, bool)
        or not isinstance(tolerance_seconds, (int, float))
        or not tolerance_seconds >= 0
    ):
        raise VeveeConfigurationError(
            f"tolerance_seconds must be a number from 0, got {tolerance_seconds!r}",
            type="configuration",
            code="invalid_option",
        )
    key = _decode_secret(secret)
    body = _payload_bytes(payload)

    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signature = _header(headers, "webhook-signature")
    if msg_id is None or timestamp is None or signature is None:
        missing = [
            name
            for name, value in (
                ("webhook-id", msg_id),
                ("webhook-timestamp", timestamp),
                ("webhook-signature", signature),
            )
            if value is None
        ]
        raise WebhookVerificationError("missing_header", f"missing header: {', '.join(missing)}")

    if not _UNIX_SECONDS.fullmatch(timestamp):
        raise WebhookVerificationError(
            "bad_timestamp",
            f"webhook-timestamp is not a whole number of Unix seconds: {timestamp!r}",
        )
    sent_at = int(timestamp)
    now_value = (now or time.time)()
    if not isinstance(now_value, (int, float)) or not math.isfinite(now_value):
        raise VeveeConfigurationError(
            "now() must return seconds since the epoch, like time.time()",
            type="configuration",
            code="invalid_option",
        )
    now_seconds = math.floor(now_value)
    if abs(now_seconds - sent_at) > tolerance_seconds:
        raise WebhookVerificationError(
            "timestamp_out_of_tolerance",
            f"webhook-timestamp {sent_at} is {now_seconds - sent_at} s before now (tolerance "
            f"{tolerance_seconds} s either way): a replay, or a wrong clock",
        )

    expected = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    # compare_digest takes the same time wherever the bytes differ.
    if not any(hmac.compare_digest(expected, sig) for sig in _v1_signatures(signature)):
        raise WebhookVerificationError(
            "no_matching_signature",
            "no v1 signature in webhook-signature matches this body and secret: the body was "
            "changed (verify the raw bytes, not re-serialized JSON), or the secret is not this "
            "endpoint's",
        )
    return _parse_event(body)


def _decode_secret(secret: str) -> bytes:
    key = None
    if isinstance(secret, str):
        encoded = secret[len(_SECRET_PREFIX) :] if secret.startswith(_SECRET_PREFIX) else secret
        key = _decode_base64(encoded)
    if not key:
        raise WebhookVerificationError(
            "bad_secret",
            "the webhook secret must be the endpoint's whsec_... secret (whsec_ and base64), as "
            "POST /v1/webhook-endpoints or rotate-secret answered it",
        )
    return key


def _payload_bytes(payload: bytes | str) -> bytes:
    if isinstance(payload, str):
        try:
            return payload.encode("utf-8")
        except UnicodeEncodeError as error:
            raise WebhookVerificationError(
                "invalid_payload", f"the payload is not text: {error}"
            ) from None
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise WebhookVerificationError(
        "invalid_payload",
        "the payload must be the raw request body, bytes or str, not a parsed object: e.g. "
        "Flask's request.get_data(), Django's request.body",
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, its name in any case; None when missing or empty. A header sent twice
    reads as its values joined with ", ", as HTTP does."""
    values = [
        value.strip()
        for key, value in headers.items()
        if isinstance(key, str) and key.lower() == name and isinstance(value, str)
    ]
    joined = ", ".join(v for v in values if v)
    return joined or None


def _v1_signatures(value: str) -> list[bytes]:
    """The decoded `v1` signatures of `webhook-signature`; other versions are skipped."""
    out = []
    for entry in value.split():
        # A header repeated and joined by ", " leaves a comma after an entry; base64 has none.
        version, _, encoded = entry.removesuffix(",").partition(",")
        if version != "v1":
            continue
        decoded = _decode_base64(encoded)
        if decoded:
            out.append(decoded)
    return out


def _decode_base64(text: str) -> bytes | None:
    """Strict, canonical standard base64 (with padding) to bytes; None if it is not that."""
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    # b64decode ignores the unused low bits of the last character ("...E=" and "...F=" give the
    # same bytes); only the canonical spelling is the signature that was sent.
    if base64.b64encode(decoded).decode("ascii") != text:
        return None
    return decoded


def _parse_event(body: bytes) -> dict[str, Any]:
    try:
        event = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise WebhookVerificationError(
            "invalid_payload", f"the signed body is not UTF-8 JSON ({error})"
        ) from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("invalid_payload", "the signed body is not a JSON object")
    if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise WebhookVerificationError(
            "invalid_payload", "the signed body has no string id and type: not a vevee event"
        )
    if not isinstance(event.get("data"), dict):
        raise WebhookVerificationError(
            "invalid_payload", "the signed body has no data object: not a vevee event"
        )
    return event
