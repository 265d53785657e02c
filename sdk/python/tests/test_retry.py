"""A retried call lands once. A TCP proxy in front of the real server forwards the first reserve,
lets the server answer it, and cuts the client's connection instead of passing the answer on: the
client saw a network failure, the server held the units. The client retries with the same
Idempotency-Key and gets the stored answer back; usage and ledger show one hold."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from vevee import AsyncVevee, Reservation, Vevee

from .support import GEMINI, SECRET_KEY, DroppingProxy, RunningServer, start_server


@pytest.fixture
def proxy(server: RunningServer) -> Iterator[DroppingProxy]:
    p = DroppingProxy(server.port).start()
    yield p
    p.close()


def through(proxy: DroppingProxy, **kw: object) -> Vevee:
    return Vevee(
        SECRET_KEY,
        base_url=proxy.base_url,
        initial_retry_delay=0.02,
        max_retry_delay=0.1,
        **kw,  # type: ignore[arg-type]
    )


def test_a_reserve_whose_answer_is_lost_is_retried_with_the_same_key_and_holds_once(
    proxy: DroppingProxy, vevee: Vevee, user: str
) -> None:
    client = through(proxy)
    client.upsert_subscription(user, "pro")
    seen = len(proxy.requests)
    proxy.drop_next("/v1/reservations")

    hold = client.reserve(user, GEMINI, 3)

    keys = [r.key for r in proxy.requests[seen:]]
    assert proxy.dropped == 1, "the proxy cut the first answer"
    assert len(keys) == 2, "the reserve was sent twice"
    assert keys[0], "with an Idempotency-Key"
    assert keys[1] == keys[0], "the same key both times"
    assert isinstance(hold, Reservation)
    info = hold.last_response
    assert info is not None
    assert (info.attempts, info.idempotent_replayed, info.idempotency_key) == (2, True, keys[0])

    # One hold of 3 on the Pro counter (`vevee` talks to the server directly), one usage.reserved.
    counters = vevee.usage(user, "image.*").counters
    assert [(c.limit_id, c.reserved, c.used, c.remaining) for c in counters] == [
        ("images", 3, 0, 37)
    ]
    reserved = [e for e in vevee.ledger(user) if e.type == "usage.reserved"]
    assert [(e.reservation_id, e.amount) for e in reserved] == [(hold.reservation_id, 3)]

    # The hold is the one the client got: committing it leaves nothing pending.
    client.commit(hold.reservation_id)
    after = vevee.usage(user, "image.*").counters
    assert [(c.reserved, c.used, c.remaining) for c in after] == [(0, 3, 37)]
    client.close()


def test_without_the_key_the_same_lost_answer_would_have_held_twice(
    proxy: DroppingProxy, vevee: Vevee, user: str
) -> None:
    # The control: an httpx client that strips the key, as a hand-rolled client would send.
    def strip_key(request: httpx.Request) -> None:
        request.headers.pop("Idempotency-Key", None)

    keyless = httpx.Client(event_hooks={"request": [strip_key]})
    client = through(proxy, http_client=keyless)
    client.upsert_subscription(user, "pro")
    proxy.drop_next("/v1/reservations")
    hold = client.reserve(user, GEMINI, 3)
    assert hold.last_response is not None
    assert (hold.last_response.attempts, hold.last_response.idempotent_replayed) == (2, False)
    assert vevee.usage(user, "image.*").counters[0].reserved == 6, "two holds of 3"
    assert len([e for e in vevee.ledger(user) if e.type == "usage.reserved"]) == 2
    keyless.close()


def test_a_commit_whose_answer_is_lost_is_retried_and_answers_the_same(
    proxy: DroppingProxy, vevee: Vevee, user: str
) -> None:
    client = through(proxy)
    client.upsert_subscription(user, "pro")
    hold = client.reserve(user, GEMINI, 2)
    assert hold.allowed
    proxy.drop_next(f"/v1/reservations/{hold.reservation_id}/commit")
    done = client.commit(hold.reservation_id, amount=1)
    assert done.last_response is not None
    assert (done.last_response.attempts, done.last_response.idempotent_replayed) == (2, True)
    assert (done.status, done.committed_amount) == ("committed", 1)
    assert [(c.used, c.reserved) for c in vevee.usage(user, "image.*").counters] == [(1, 0)]
    client.close()


@pytest.mark.anyio
async def test_async_a_lost_consume_is_retried_and_spends_once(
    proxy: DroppingProxy, vevee: Vevee, user: str
) -> None:
    vevee.upsert_subscription(user, "pro")
    async with AsyncVevee(SECRET_KEY, base_url=proxy.base_url, initial_retry_delay=0.02) as client:
        proxy.drop_next("/v1/consume")
        spent = await client.consume(user, GEMINI, 2)
    assert spent.last_response is not None
    assert (spent.last_response.attempts, spent.last_response.idempotent_replayed) == (2, True)
    assert vevee.usage(user, "image.*").counters[0].used == 2


def test_429_answers_are_retried_after_retry_after_and_every_call_lands_once(user: str) -> None:
    limited = start_server(["sandbox_requests_per_second = 4"])
    try:
        with Vevee(SECRET_KEY, base_url=limited.base_url, max_retries=4) as client:
            client.upsert_subscription(user, "pro")
            time.sleep(1.1)  # a fresh second of the limit, so that the burst surely overflows it
            started = time.monotonic()
            results = [client.consume(user, GEMINI, 1) for _ in range(8)]
            elapsed = time.monotonic() - started
            assert all(isinstance(r, Reservation) and r.status == "committed" for r in results)
            retried = [r for r in results if r.last_response and r.last_response.attempts > 1]
            assert len(retried) >= 1, "the burst met the limit"
            assert elapsed >= 0.9, "the retries waited for Retry-After"
            assert client.usage(user).counters[0].used == 8, "each call landed once"
    finally:
        limited.stop()
