"""verify_webhook against the official Standard Webhooks library (`standardwebhooks` on PyPI, a dev
requirement only): what it signs, ours accepts; what is tampered, stale, unsigned or signed with
another secret, ours refuses with the right reason. Two fixed vectors computed with openssl (below)
make sure both libraries are not simply agreeing on the same mistake. Needs no server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import pytest
from standardwebhooks import Webhook

from vevee import (
    WEBHOOK_EVENT_TYPES,
    VeveeConfigurationError,
    VeveeError,
    WebhookVerificationError,
    verify_webhook,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_dmV2ZWUtd2ViaG9vay10ZXN0LWtleS0y"
NOW_S = 1_795_383_600  # 2026-11-22T21:40:00Z


def now() -> float:
    return float(NOW_S)


EVENT: dict[str, Any] = {
    "id": "evt_01",
    "type": "credits.low",
    "createdAt": "2026-11-22T21:40:00Z",
    "mode": "test",
    "data": {
        "id": "bal_01",
        "userId": "ana",
        "packId": "cpk_creator_bundle",
        "packItemId": "dalle",
        "match": "image.dall-e-3",
        "unit": "count",
        "granted": 10,
        "remaining": 2,
        "reserved": 0,
        "status": "active",
        "source": "purchase",
        "externalRef": "cs_test_1",
        "notes": "café ✓",
        "expiresAt": None,
        "createdAt": "2026-11-01T00:00:00Z",
    },
}
# The same bytes as JSON.stringify in the TypeScript tests: compact, UTF-8, keys in this order.
BODY = json.dumps(EVENT, separators=(",", ":"), ensure_ascii=False)


def signed(
    body: str, *, secrets: Sequence[str] = (SECRET,), msg_id: str = "evt_01", at: int = NOW_S
) -> dict[str, str]:
    """What vevee sends for `body`, signed by the official library with each of `secrets`."""
    when = datetime.fromtimestamp(at, tz=timezone.utc)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": " ".join(Webhook(s).sign(msg_id, when, body) for s in secrets),
    }


def refusal(call: Callable[[], object]) -> str:
    with pytest.raises(WebhookVerificationError) as caught:
        call()
    error = caught.value
    assert isinstance(error, VeveeError)
    assert error.type == "webhook_verification"
    assert error.code == error.reason
    return error.reason


def verify(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str = SECRET,
    **kw: Any,
) -> dict[str, Any]:
    return verify_webhook(payload, headers, secret, now=now, **kw)


def test_what_the_official_library_signs_verifies() -> None:
    assert verify(BODY, signed(BODY)) == EVENT
    assert verify(BODY.encode(), signed(BODY)) == EVENT
    # A bytearray or memoryview works too (typed `bytes | str` all the same).
    as_bytearray: Any = bytearray(BODY.encode())
    assert verify(as_bytearray, signed(BODY)) == EVENT
    assert verify(memoryview(as_bytearray), signed(BODY)) == EVENT  # type: ignore[arg-type]


def test_against_the_wall_clock_with_the_default_tolerance() -> None:
    at = int(datetime.now(timezone.utc).timestamp())
    assert verify_webhook(BODY, signed(BODY, at=at), SECRET) == EVENT
    # The official library verifies the same request (its own clock, 5 minutes).
    assert Webhook(SECRET).verify(BODY, signed(BODY, at=at)) == EVENT


def test_the_secret_without_its_prefix_works_too() -> None:
    assert verify(BODY, signed(BODY), SECRET.removeprefix("whsec_")) == EVENT


def test_a_tampered_body_is_refused() -> None:
    headers = signed(BODY)
    tampered = BODY.replace('"remaining":2', '"remaining":9')
    assert tampered != BODY
    assert refusal(lambda: verify(tampered, headers)) == "no_matching_signature"
    # Re-serialized JSON is another body too: the same data, other bytes.
    reserialized = json.dumps(json.loads(BODY))
    assert reserialized != BODY
    assert refusal(lambda: verify(reserialized, headers)) == "no_matching_signature"


def test_a_changed_id_or_timestamp_is_refused() -> None:
    headers = signed(BODY)
    changed_id = {**headers, "webhook-id": "evt_02"}
    assert refusal(lambda: verify(BODY, changed_id)) == "no_matching_signature"
    later = {**headers, "webhook-timestamp": str(NOW_S + 1)}
    assert refusal(lambda: verify(BODY, later)) == "no_matching_signature"


def test_another_secret_is_refused() -> None:
    headers = signed(BODY, secrets=[OTHER_SECRET])
    assert refusal(lambda: verify(BODY, headers)) == "no_matching_signature"


@pytest.mark.parametrize("offset", [-301, 301, -86_400])
def test_a_stale_or_future_timestamp_is_refused(offset: int) -> None:
    headers = signed(BODY, at=NOW_S + offset)
    assert refusal(lambda: verify(BODY, headers)) == "timestamp_out_of_tolerance"


def test_the_tolerance() -> None:
    # 300 s either way is still inside, as in the official library.
    for offset in (-300, 300):
        assert verify(BODY, signed(BODY, at=NOW_S + offset)) == EVENT
    old = signed(BODY, at=NOW_S - 3600)
    assert verify(BODY, old, tolerance_seconds=3600) == EVENT
    recent = signed(BODY, at=NOW_S - 10)
    assert (
        refusal(lambda: verify(BODY, recent, tolerance_seconds=5)) == "timestamp_out_of_tolerance"
    )
    with pytest.raises(VeveeConfigurationError):
        verify(BODY, recent, tolerance_seconds=-1)


@pytest.mark.parametrize(
    "bad", ["abc", "1795383600.5", "-1795383600", "2026-11-22T21:40:00Z", "0x6B0A5F30", "١٢٣"]
)
def test_a_timestamp_that_is_not_unix_seconds_is_refused(bad: str) -> None:
    headers = {**signed(BODY), "webhook-timestamp": bad}
    assert refusal(lambda: verify(BODY, headers)) == "bad_timestamp"


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_or_empty_header_is_refused(name: str) -> None:
    without = {k: v for k, v in signed(BODY).items() if k != name}
    assert refusal(lambda: verify(BODY, without)) == "missing_header"
    empty = {**signed(BODY), name: "  "}
    assert refusal(lambda: verify(BODY, empty)) == "missing_header"
    assert refusal(lambda: verify(BODY, {})) == "missing_header"


def test_two_signatures_either_matching_verifies() -> None:
    # A secret rotation: the old secret signs first, the new one second.
    rotation = signed(BODY, secrets=[OTHER_SECRET, SECRET])
    assert len(rotation["webhook-signature"].split(" ")) == 2
    assert verify(BODY, rotation, SECRET) == EVENT  # only the second matches
    assert verify(BODY, rotation, OTHER_SECRET) == EVENT  # only the first matches
    third = "whsec_" + base64.b64encode(b"a third secret, 24 bytes.").decode()
    assert refusal(lambda: verify(BODY, rotation, third)) == "no_matching_signature"


def test_other_versions_and_malformed_entries_are_skipped() -> None:
    good = signed(BODY)["webhook-signature"]
    sig = good.removeprefix("v1,")
    headers = {
        **signed(BODY),
        "webhook-signature": f"v1a,{sig} v2,{sig} garbage v1,not*base64 v1, {good}",
    }
    assert verify(BODY, headers) == EVENT
    only_v2 = {**signed(BODY), "webhook-signature": f"v2,{sig}"}
    assert refusal(lambda: verify(BODY, only_v2)) == "no_matching_signature"


class MultiHeaders(Mapping[str, str]):
    """Headers as Starlette and Werkzeug keep them: a name may come twice, any case, and `items()`
    yields every (name, value) pair while `[name]` gives the first."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    def __getitem__(self, name: str) -> str:
        for key, value in self.pairs:
            if key.lower() == name.lower():
                return value
        raise KeyError(name)

    def __iter__(self) -> Any:
        return iter(key for key, _ in self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def items(self) -> Any:
        return list(self.pairs)


def test_header_names_in_any_case() -> None:
    h = signed(BODY)
    mixed = {
        "WEBHOOK-ID": h["webhook-id"],
        "Webhook-Timestamp": h["webhook-timestamp"],
        "wEbHoOk-SiGnAtUrE": h["webhook-signature"],
        "Content-Type": "application/json",
    }
    assert verify(BODY, mixed) == EVENT
    assert verify(BODY, MultiHeaders(mixed.items())) == EVENT


def test_a_signature_header_sent_twice_still_verifies() -> None:
    h = signed(BODY, secrets=[OTHER_SECRET, SECRET])
    first, second = h["webhook-signature"].split(" ")
    # As two header lines (the matching one first, so that the joining comma follows it) …
    pairs = [
        ("Webhook-Id", h["webhook-id"]),
        ("Webhook-Timestamp", h["webhook-timestamp"]),
        ("Webhook-Signature", second),
        ("Webhook-Signature", first),
    ]
    assert verify(BODY, MultiHeaders(pairs)) == EVENT
    # … or already joined by the server (WSGI joins repeated headers with ", ").
    assert verify(BODY, {**h, "webhook-signature": f"{second}, {first}"}) == EVENT


@pytest.mark.parametrize(
    "bad", ["", "whsec_", "whsec_not base64!", "sk_test_py_suite", "whsec_abc"]
)
def test_a_secret_that_is_not_whsec_base64_is_refused(bad: str) -> None:
    assert refusal(lambda: verify(BODY, signed(BODY), bad)) == "bad_secret"
    # Checked first, so that a misconfiguration shows on every request, even a bad one.
    assert refusal(lambda: verify(BODY, {}, bad)) == "bad_secret"


def test_a_parsed_body_is_refused() -> None:
    parsed: Any = json.loads(BODY)
    assert refusal(lambda: verify(parsed, signed(BODY))) == "invalid_payload"


@pytest.mark.parametrize(
    "body",
    ["not json", "[1,2]", "null", '{"id":"evt_1"}', '{"id":"evt_1","type":"x","data":null}'],
)
def test_a_signed_body_that_is_not_an_event_is_refused(body: str) -> None:
    assert refusal(lambda: verify(body, signed(body))) == "invalid_payload"


def test_signed_bytes_that_are_not_utf8() -> None:
    # The official library signs text only, so hmac signs these bytes.
    latin1 = BODY.replace("café ✓", "café").encode("latin-1")
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"evt_01.{NOW_S}.".encode() + latin1, hashlib.sha256).digest()
    headers = {**signed(BODY), "webhook-signature": "v1," + base64.b64encode(mac).decode()}
    assert refusal(lambda: verify(latin1, headers)) == "invalid_payload"
    # Bytes are verified as bytes: decoded as UTF-8 (with replacement) they would not match.
    as_text = latin1.decode("utf-8", errors="replace")
    assert refusal(lambda: verify(as_text, headers)) == "no_matching_signature"


def test_an_unknown_event_type_still_verifies() -> None:
    body = (
        '{"id":"evt_9","type":"credits.something_new","createdAt":"2026-11-22T21:40:00Z",'
        '"mode":"live","data":{}}'
    )
    event = verify(body, signed(body, msg_id="evt_9"))
    assert event["type"] == "credits.something_new"
    assert event["type"] not in WEBHOOK_EVENT_TYPES
    assert len(WEBHOOK_EVENT_TYPES) == 10


# Fixed vectors, computed without any Python HMAC, so that a mistake shared by both libraries (say,
# signing "{id}.{timestamp}{body}", or keying with the secret's text instead of its decoded bytes)
# would fail here:
#
#   key=$(printf %s "$SECRET_WITHOUT_WHSEC_PREFIX" | base64 -d | xxd -p -c 256)
#   printf %s "$ID.$TIMESTAMP.$BODY" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$key -binary \
#     | base64


def test_vector_the_standard_webhooks_spec_example() -> None:
    # Published with the spec and its reference libraries; recomputed with the openssl line above
    # (key 31f290f6bf06298aab4f08d43c3f082cf648a362da2da4b0).
    body = '{"test": 2432232314}'
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }

    def then() -> float:
        return 1614265330.0

    # The signature matches, then the body is refused only because it is not a vevee event …
    assert refusal(lambda: verify_webhook(body, headers, SECRET, now=then)) == "invalid_payload"
    # … whereas one changed bit of the signature is refused before the body is looked at,
    flipped = {**headers, "webhook-signature": "v1,h0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
    assert refusal(lambda: verify_webhook(body, flipped, SECRET, now=then)) == (
        "no_matching_signature"
    )
    # and so is another spelling of the same bytes (the last character's two unused bits set).
    respelled = {**headers, "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF="}
    assert base64.b64decode("g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=") == base64.b64decode(
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    assert refusal(lambda: verify_webhook(body, respelled, SECRET, now=then)) == (
        "no_matching_signature"
    )


def test_vector_a_vevee_event_with_non_ascii_text() -> None:
    # OTHER_SECRET is whsec_ + base64("vevee-webhook-test-key-2"), key
    # 76657665652d776562686f6f6b2d746573742d6b65792d32; ID evt_01, TIMESTAMP 1795383600, BODY this
    # file's BODY (its notes "café ✓" as UTF-8), the same vector as the TypeScript SDK's tests.
    headers = {
        "webhook-id": "evt_01",
        "webhook-timestamp": "1795383600",
        "webhook-signature": "v1,IDfY6kA0QCCr8c3oFUnzOIWC6cfr1nyqQRudoDLtbZM=",
    }
    assert verify(BODY, headers, OTHER_SECRET) == EVENT
    assert verify(BODY.encode("utf-8"), headers, OTHER_SECRET) == EVENT
    # The official library computes the same value.
    when = datetime.fromtimestamp(NOW_S, tz=timezone.utc)
    assert Webhook(OTHER_SECRET).sign("evt_01", when, BODY) == headers["webhook-signature"]


def test_a_wsgi_receiver_that_reads_the_raw_body() -> None:
    """What a Flask view does (`request.get_data()`, `request.headers`), in plain WSGI."""
    received: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        headers = {
            key[5:].replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        try:
            received.append(verify(body, headers))
        except WebhookVerificationError as error:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [error.reason.encode()]
        start_response("204 No Content", [])
        return []

    def post(body: bytes, headers: Mapping[str, str]) -> tuple[str, bytes]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/json",
            "wsgi.input": io.BytesIO(body),
            **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
        }
        status: list[str] = []
        out = b"".join(app(environ, lambda s, _h: status.append(s)))
        return status[0], out

    assert post(BODY.encode(), signed(BODY)) == ("204 No Content", b"")
    assert post(BODY.encode() + b" ", signed(BODY)) == ("400 Bad Request", b"no_matching_signature")
    assert received == [EVENT]
