"""The retry policy and the error mapping against a scripted server (httpx.MockTransport): what
is retried, how long it waits, that every attempt carries the same key and body, and what is
raised when the retries run out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

import httpx
import pytest

from vevee import (
    AsyncVevee,
    Vevee,
    VeveeAPIError,
    VeveeConfigurationError,
    VeveeConnectionError,
    VeveeInternalError,
    VeveeInvalidRequestError,
    VeveeRateLimitError,
    VeveeTimeoutError,
    VeveeUnavailableError,
    backoff,
    parse_retry_after,
)

Answer = Callable[[httpx.Request], httpx.Response]

RESERVATION = {
    "reservationId": "res_1",
    "allowed": True,
    "reasons": [],
    "status": "pending",
    "userId": "ana",
    "model": "image.dall-e-3",
    "amount": 1,
    "allocations": [{"source": "plan", "limitId": "images", "balanceId": None, "amount": 1}],
    "expiresAt": "2026-11-22T21:50:00Z",
    "createdAt": "2026-11-22T21:40:00Z",
    "metadata": None,
    "committedAmount": None,
    "response": None,
    "errorCode": None,
}


def error(status: int, kind: str, code: str, **headers: str) -> httpx.Response:
    body = {"error": {"type": kind, "code": code, "message": f"{code}!", "param": None}}
    return httpx.Response(status, json=body, headers={"request-id": f"req_{status}", **headers})


class Script:
    """Answers the i-th request with the i-th answer (the last one repeats) and records them."""

    def __init__(self, answers: Sequence[Answer | httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return answer(request) if callable(answer) else answer

    def client(self, **kw: float) -> Vevee:
        http = httpx.Client(transport=httpx.MockTransport(self))
        return Vevee("sk_test_x", base_url="http://vevee.test", http_client=http, **kw)  # type: ignore[arg-type]

    @property
    def keys(self) -> list[str | None]:
        return [r.headers.get("Idempotency-Key") for r in self.requests]


def cut(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadError("connection reset by peer", request=request)


FAST = {"initial_retry_delay": 0.001, "max_retry_delay": 0.002}


def test_503_unavailable_is_retried_after_retry_after_with_the_same_key_and_bytes() -> None:
    script = Script(
        [
            error(503, "unavailable", "not_ready", **{"Retry-After": "0.2"}),
            httpx.Response(200, json=RESERVATION),
        ]
    )
    started = time.monotonic()
    hold = script.client(**FAST).reserve("ana", "image.dall-e-3", 1, metadata={"job": 7})
    assert time.monotonic() - started >= 0.2, "waited for Retry-After, not the 1 ms backoff"
    assert hold.allowed
    assert hold.last_response is not None
    assert hold.last_response.attempts == 2
    assert len(set(script.keys)) == 1
    assert script.keys[0] is not None
    assert script.keys[0].startswith("vv_")
    assert script.requests[0].content == script.requests[1].content
    assert json.loads(script.requests[0].content) == {
        "userId": "ana",
        "model": "image.dall-e-3",
        "amount": 1,
        "metadata": {"job": 7},
    }
    assert script.requests[0].headers["Authorization"] == "Bearer sk_test_x"


def test_each_logical_call_gets_its_own_key() -> None:
    script = Script([httpx.Response(200, json=RESERVATION)])
    client = script.client()
    client.reserve("ana", "image.dall-e-3", 1)
    client.reserve("ana", "image.dall-e-3", 1)
    assert len(set(script.keys)) == 2


def test_network_failures_are_retried_then_raised_as_connection_errors() -> None:
    script = Script([cut, cut, httpx.Response(200, json=RESERVATION)])
    hold = script.client(**FAST).reserve("ana", "image.dall-e-3", 1)
    assert hold.last_response is not None
    assert hold.last_response.attempts == 3
    assert len(set(script.keys)) == 1

    always = Script([cut])
    with pytest.raises(VeveeConnectionError) as caught:
        always.client(max_retries=3, **FAST).commit("res_1")
    assert len(always.requests) == 4
    assert caught.value.status is None
    assert "4 attempts" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ReadError)


def test_a_timeout_is_a_timeout_error() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    script = Script([slow])
    with pytest.raises(VeveeTimeoutError) as caught:
        script.client(max_retries=1, **FAST).usage("ana")
    assert isinstance(caught.value, VeveeConnectionError)
    assert len(script.requests) == 2


def test_5xx_is_retried_until_the_retries_run_out() -> None:
    script = Script([error(500, "internal", "internal_error")])
    with pytest.raises(VeveeInternalError) as caught:
        script.client(max_retries=2, **FAST).release("res_1", error_code="x")
    assert len(script.requests) == 3
    e = caught.value
    assert (e.status, e.type, e.code, e.request_id) == (
        500,
        "internal",
        "internal_error",
        "req_500",
    )


def test_a_refusal_is_not_retried() -> None:
    script = Script([error(400, "invalid_request", "parameter_invalid")])
    with pytest.raises(VeveeInvalidRequestError):
        script.client(**FAST).reserve("ana", "image.dall-e-3", 0)
    assert len(script.requests) == 1


def test_a_retry_after_beyond_the_cap_is_raised_at_once() -> None:
    script = Script([error(429, "rate_limited", "overloaded", **{"Retry-After": "120"})])
    with pytest.raises(VeveeRateLimitError) as caught:
        script.client(max_retry_after=60, **FAST).check("ana", "image.dall-e-3", 1)
    assert len(script.requests) == 1
    assert caught.value.retry_after == 120


def test_429_without_retry_after_backs_off_and_an_in_flight_key_is_waited_for() -> None:
    script = Script(
        [
            error(429, "rate_limited", "sandbox_rate_limited"),
            error(409, "conflict", "idempotency_key_in_use"),
            httpx.Response(200, json=RESERVATION),
        ]
    )
    hold = script.client(**FAST).consume("ana", "image.dall-e-3", 1)
    assert hold.last_response is not None
    assert hold.last_response.attempts == 3


def test_answers_that_are_not_vevee_errors() -> None:
    proxy_page = httpx.Response(502, text="<html>Bad Gateway</html>")
    with pytest.raises(VeveeInternalError) as bad_gateway:
        Script([proxy_page]).client(max_retries=0).usage("ana")
    assert bad_gateway.value.body == "<html>Bad Gateway</html>"
    empty_503 = httpx.Response(503)
    with pytest.raises(VeveeUnavailableError):
        Script([empty_503]).client(max_retries=0).usage("ana")
    not_json = httpx.Response(200, text="ok")
    with pytest.raises(VeveeAPIError):
        Script([not_json]).client().usage("ana")
    wrong_shape = httpx.Response(200, json={**RESERVATION, "amount": "1"})
    with pytest.raises(VeveeAPIError) as caught:
        Script([wrong_shape]).client().reserve("ana", "image.dall-e-3", 1)
    assert "answer.amount" in str(caught.value)


def test_ids_are_escaped_and_an_empty_one_is_refused_before_sending() -> None:
    script = Script([httpx.Response(200, json=RESERVATION)])
    client = script.client()
    client.get_reservation("res/../x")
    assert script.requests[0].url.raw_path == b"/v1/reservations/res%2F..%2Fx"
    with pytest.raises(VeveeConfigurationError):
        client.commit("")
    assert len(script.requests) == 1


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VEVEE_API_KEY", raising=False)
    with pytest.raises(VeveeConfigurationError) as caught:
        Vevee()
    assert caught.value.code == "api_key_missing"
    with pytest.raises(VeveeConfigurationError):
        Vevee("sk_test_x", timeout=0)
    monkeypatch.setenv("VEVEE_API_KEY", "sk_test_env")
    monkeypatch.setenv("VEVEE_BASE_URL", "http://vevee.env/")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"now": "2026-11-22T21:40:00Z"})

    http = httpx.Client(transport=httpx.MockTransport(answer))
    assert Vevee(http_client=http).test_clock.get().now == "2026-11-22T21:40:00Z"
    assert str(seen[0].url) == "http://vevee.env/v1/test/clock"
    assert seen[0].headers["Authorization"] == "Bearer sk_test_env"


def test_parse_retry_after_and_backoff() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert [backoff(n, 0.5, 8.0, lambda: 1.0) for n in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]
    assert [backoff(n, 0.5, 8.0, lambda: 0.0) for n in range(3)] == [0.25, 0.5, 1.0]


@pytest.mark.anyio
async def test_async_retries_with_the_same_key() -> None:
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        return httpx.Response(200, json=RESERVATION)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    async with AsyncVevee(
        "sk_test_x", base_url="http://vevee.test", http_client=http, initial_retry_delay=0.001
    ) as client:
        hold = await client.reserve("ana", "image.dall-e-3", 1)
    assert hold.allowed
    assert len({r.headers["Idempotency-Key"] for r in requests}) == 1
    assert len(requests) == 2
    await http.aclose()
