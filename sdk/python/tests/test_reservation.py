"""`with vevee.reservation(...)` and `async with`: commit on a normal exit, release on an
exception (which goes on), `Denied` before the block when nothing can be held."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from vevee import AsyncVevee, Denied, Vevee, VeveeConflictError

from .support import GEMINI, SECRET_KEY, RunningServer


class ProviderDown(Exception):
    pass


def counter(vevee: Vevee, user: str) -> tuple[int, int, int]:
    c = vevee.usage(user, "image.*").counters[0]
    return (c.used, c.reserved, c.remaining)


def test_a_block_that_ends_commits_everything_with_its_response(vevee: Vevee, user: str) -> None:
    vevee.upsert_subscription(user, "pro")
    with vevee.reservation(user, GEMINI, 2, metadata={"prompt": "a cat"}) as hold:
        assert hold.reservation.status == "pending"
        assert counter(vevee, user) == (0, 2, 38), "held while the block runs"
        hold.response = {"url": "https://cdn/cat.png"}
    assert hold.settled
    done = vevee.get_reservation(hold.id)
    assert (done.status, done.committed_amount, done.response) == (
        "committed",
        2,
        {"url": "https://cdn/cat.png"},
    )
    assert counter(vevee, user) == (2, 0, 38)


def test_a_partial_commit_inside_the_block_is_the_only_commit(vevee: Vevee, user: str) -> None:
    vevee.upsert_subscription(user, "pro")
    with vevee.reservation(user, GEMINI, 5) as hold:
        committed = hold.commit(amount=3)
        assert committed.committed_amount == 3
    assert vevee.get_reservation(hold.id).committed_amount == 3
    assert counter(vevee, user) == (3, 0, 37), "the other 2 went back to the plan"


def test_a_block_that_raises_releases_and_the_exception_goes_on(vevee: Vevee, user: str) -> None:
    vevee.upsert_subscription(user, "pro")
    with pytest.raises(ProviderDown), vevee.reservation(user, GEMINI, 4) as hold:
        assert counter(vevee, user) == (0, 4, 36)
        raise ProviderDown("the image model timed out")
    released = vevee.get_reservation(hold.id)
    assert (released.status, released.error_code) == ("released", "ProviderDown")
    assert counter(vevee, user) == (0, 0, 40)


def test_an_explicit_release_in_the_block_is_not_followed_by_a_commit(
    vevee: Vevee, user: str
) -> None:
    vevee.upsert_subscription(user, "pro")
    with vevee.reservation(user, GEMINI, 1) as hold:
        hold.release("nsfw_prompt")
    assert vevee.get_reservation(hold.id).status == "released"
    assert counter(vevee, user) == (0, 0, 40)


def test_a_denial_raises_before_the_block_runs(vevee: Vevee, user: str) -> None:
    vevee.upsert_subscription(user, "free")
    ran = False
    with pytest.raises(Denied) as caught, vevee.reservation(user, GEMINI, 3):
        ran = True
    assert not ran
    denied = caught.value
    assert denied.reasons == ["plan_exhausted"]
    assert (denied.available.plan, denied.available.credits) == (2, 0)
    assert (denied.user_id, denied.model, denied.amount) == (user, GEMINI, 3)
    assert denied.request_id
    assert [e.type for e in vevee.ledger(user)] == ["subscription.updated"], "nothing was held"


# --- The same through AsyncVevee ---------------------------------------------------------------


@pytest.fixture
async def avevee(server: RunningServer) -> AsyncIterator[AsyncVevee]:
    async with AsyncVevee(SECRET_KEY, base_url=server.base_url) as client:
        yield client


@pytest.mark.anyio
async def test_async_block_commits_on_exit(avevee: AsyncVevee, vevee: Vevee, user: str) -> None:
    await avevee.upsert_subscription(user, "pro")
    async with avevee.reservation(user, GEMINI, 2) as hold:
        assert counter(vevee, user) == (0, 2, 38)
    assert (await avevee.get_reservation(hold.id)).status == "committed"
    assert counter(vevee, user) == (2, 0, 38)


@pytest.mark.anyio
async def test_async_partial_commit_then_nothing_more(
    avevee: AsyncVevee, vevee: Vevee, user: str
) -> None:
    await avevee.upsert_subscription(user, "pro")
    async with avevee.reservation(user, GEMINI, 5) as hold:
        await hold.commit(amount=1, response={"seconds": 1})
    done = await avevee.get_reservation(hold.id)
    assert (done.committed_amount, done.response) == (1, {"seconds": 1})
    assert counter(vevee, user) == (1, 0, 39)


@pytest.mark.anyio
async def test_async_block_that_raises_releases(
    avevee: AsyncVevee, vevee: Vevee, user: str
) -> None:
    await avevee.upsert_subscription(user, "pro")
    with pytest.raises(ProviderDown):
        async with avevee.reservation(user, GEMINI, 3) as hold:
            raise ProviderDown
    released = await avevee.get_reservation(hold.id)
    assert (released.status, released.error_code) == ("released", "ProviderDown")
    assert counter(vevee, user) == (0, 0, 40)


@pytest.mark.anyio
async def test_async_denial(avevee: AsyncVevee, user: str) -> None:
    with pytest.raises(Denied) as caught:
        async with avevee.reservation(user, GEMINI, 1):
            pytest.fail("the block must not run without a hold")
    assert caught.value.reasons == ["no_subscription", "credits_exhausted"]


@pytest.mark.anyio
async def test_async_ledger_pages_and_usage(avevee: AsyncVevee, user: str) -> None:
    await avevee.subscriptions.upsert(user, "pro")
    for _ in range(3):
        await avevee.consume(user, GEMINI, 1)
    entries = [e async for e in avevee.ledger(user, limit=2)]
    assert [e.type for e in entries] == [
        *["usage.committed", "usage.reserved"] * 3,
        "subscription.updated",
    ]
    usage = await avevee.usage(user)
    assert usage.counters[0].used == 3


# --- When vevee fails while the block settles (a scripted server) -----------------------------

HELD = {
    "reservationId": "res_1",
    "allowed": True,
    "reasons": [],
    "status": "pending",
    "userId": "ana",
    "model": GEMINI,
    "amount": 1,
    "allocations": [],
    "expiresAt": "2026-11-22T21:50:00Z",
}


def scripted(settle: httpx.Response) -> tuple[Vevee, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=HELD) if request.url.path == "/v1/reservations" else settle

    http = httpx.Client(transport=httpx.MockTransport(answer))
    return Vevee("sk_test_x", base_url="http://vevee.test", http_client=http, max_retries=0), seen


def test_a_failed_release_is_logged_and_the_blocks_own_exception_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = {"error": {"type": "internal", "code": "internal_error", "message": "disk"}}
    client, seen = scripted(httpx.Response(500, json=broken))
    with (
        caplog.at_level(logging.WARNING, logger="vevee"),
        pytest.raises(ProviderDown),
        client.reservation("ana", GEMINI, 1),
    ):
        raise ProviderDown
    assert [r.url.path for r in seen] == ["/v1/reservations", "/v1/reservations/res_1/release"]
    assert json.loads(seen[1].content) == {"errorCode": "ProviderDown"}
    assert "could not release res_1" in caplog.text


def test_a_failed_commit_at_the_end_of_the_block_is_raised() -> None:
    gone = {"error": {"type": "conflict", "code": "reservation_not_pending", "message": "expired"}}
    client, seen = scripted(httpx.Response(409, json=gone))
    with pytest.raises(VeveeConflictError) as caught, client.reservation("ana", GEMINI, 1):
        pass
    assert caught.value.code == "reservation_not_pending"
    assert seen[-1].url.path == "/v1/reservations/res_1/commit"
