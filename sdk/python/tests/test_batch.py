"""`batch()`: the request it sends and the typed results it returns, against a scripted server;
and against the real one once it has `POST /v1/batch` (skipped while that answers 404)."""

from __future__ import annotations

import json

import httpx
import pytest

from vevee import (
    BatchOp,
    CheckOp,
    CheckResult,
    CommitOp,
    ConsumeOp,
    Denial,
    ReleaseOp,
    Reservation,
    ReserveOp,
    Vevee,
    VeveeConflictError,
    VeveeInvalidRequestError,
    VeveeNotFoundError,
)

from .support import GEMINI

PENDING = {
    "reservationId": "res_1",
    "allowed": True,
    "reasons": [],
    "status": "pending",
    "userId": "ana",
    "model": GEMINI,
    "amount": 2,
    "allocations": [{"source": "plan", "limitId": "images", "balanceId": None, "amount": 2}],
    "expiresAt": "2026-11-22T21:50:00Z",
    "createdAt": "2026-11-22T21:40:00Z",
    "metadata": {"job": 1},
    "committedAmount": None,
    "response": None,
    "errorCode": None,
}
DENIAL = {
    "reservationId": None,
    "allowed": False,
    "reasons": ["plan_exhausted"],
    "available": {"plan": 1, "credits": 0},
}


def test_batch_sends_every_operation_in_order_and_types_each_result() -> None:
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return httpx.Response(503, headers={"Retry-After": "0"})
        not_pending = {"type": "conflict", "code": "reservation_not_pending", "message": "no"}
        return httpx.Response(
            200,
            json={
                "results": [
                    {"status": 200, "body": PENDING},
                    {"status": 200, "body": DENIAL},
                    {
                        "status": 200,
                        "body": {**PENDING, "status": "committed", "committedAmount": 1},
                    },
                    {
                        "status": 200,
                        "body": {
                            "allowed": True,
                            "reasons": [],
                            "allocations": [],
                            "available": {"plan": 3, "credits": 0},
                        },
                    },
                    {"status": 409, "body": {"error": not_pending}},
                    {
                        "status": 400,
                        "body": {
                            "error": {
                                "type": "invalid_request",
                                "code": "parameter_invalid",
                                "message": "amount",
                                "param": "amount",
                            }
                        },
                    },
                ]
            },
        )

    http = httpx.Client(transport=httpx.MockTransport(answer))
    client = Vevee("sk_test_x", base_url="http://vevee.test", http_client=http)
    ops: list[BatchOp] = [
        ReserveOp("ana", GEMINI, 2, ttl_seconds=60, metadata={"job": 1}),
        ReserveOp("bob", GEMINI, 5),
        ConsumeOp("ana", GEMINI, 1),
        CheckOp("ana", GEMINI, 3),
        CommitOp("res_0", amount=1, response={"url": "u"}),
        ReleaseOp("res_9", error_code="provider_error"),
    ]
    result = client.batch(ops)

    assert requests[0].url.path == "/v1/batch"
    assert json.loads(requests[0].content) == {
        "operations": [
            {
                "op": "reserve",
                "userId": "ana",
                "model": GEMINI,
                "amount": 2,
                "ttlSeconds": 60,
                "metadata": {"job": 1},
            },
            {"op": "reserve", "userId": "bob", "model": GEMINI, "amount": 5},
            {"op": "consume", "userId": "ana", "model": GEMINI, "amount": 1},
            {"op": "check", "userId": "ana", "model": GEMINI, "amount": 3},
            {"op": "commit", "reservationId": "res_0", "amount": 1, "response": {"url": "u"}},
            {"op": "release", "reservationId": "res_9", "errorCode": "provider_error"},
        ]
    }
    assert requests[0].headers["Idempotency-Key"] == requests[1].headers["Idempotency-Key"]
    assert result.last_response is not None
    assert result.last_response.attempts == 2

    assert len(result) == 6
    assert [item.op for item in result] == ops
    assert [item.status for item in result] == [200, 200, 200, 200, 409, 400]
    reserved, denied, consumed, checked, conflict, invalid = result.results
    assert isinstance(reserved.value, Reservation)
    assert reserved.value.metadata == {"job": 1}
    assert isinstance(denied.value, Denial)
    assert denied.value.reasons == ["plan_exhausted"]
    assert isinstance(consumed.value, Reservation)
    assert consumed.value.committed_amount == 1
    assert isinstance(checked.value, CheckResult)
    assert checked.value.available.plan == 3
    assert not conflict.ok
    assert isinstance(conflict.error, VeveeConflictError)
    assert conflict.error.code == "reservation_not_pending"
    assert isinstance(invalid.error, VeveeInvalidRequestError)
    assert invalid.error.param == "amount"
    with pytest.raises(VeveeConflictError):
        conflict.unwrap()
    assert reserved.unwrap() is reserved.value


def test_batch_against_the_real_server(vevee: Vevee, user: str) -> None:
    try:
        vevee.request(
            "POST",
            "/v1/batch",
            body={"operations": [{"op": "check", "userId": user, "model": GEMINI, "amount": 1}]},
        )
    except VeveeNotFoundError:
        pytest.skip("this server has no POST /v1/batch yet")

    vevee.upsert_subscription(user, "free")  # 2 Gemini images, lifetime
    first = vevee.batch(
        [ReserveOp(user, GEMINI, 1), ConsumeOp(user, GEMINI, 1), ReserveOp(user, GEMINI, 1)]
    )
    hold, spent, refused = (item.unwrap() for item in first)
    assert isinstance(hold, Reservation)
    assert hold.status == "pending"
    assert isinstance(spent, Reservation)
    assert spent.status == "committed"
    assert isinstance(refused, Denial)
    assert refused.reasons == ["plan_exhausted"]

    second = vevee.batch(
        [CommitOp(hold.reservation_id), ReleaseOp(hold.reservation_id), CheckOp(user, GEMINI, 1)]
    )
    committed, again, check = second.results
    assert isinstance(committed.value, Reservation)
    assert committed.value.status == "committed"
    assert isinstance(again.error, VeveeConflictError), "a release after the commit is refused"
    assert isinstance(check.value, CheckResult)
    assert check.value.allowed is False
    assert vevee.usage(user).counters[0].used == 2
