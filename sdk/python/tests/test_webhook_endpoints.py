"""Webhooks out through the client against the real server: the endpoints API (create, list,
retrieve, update, rotate, delete, the limit of 16 and invalid input as typed errors), deliveries to
a local receiver checked with verify_webhook and the secrets the API gave, `events` with paging and
the type filter, and pack items' low_balance_threshold. One server of its own: endpoints are
counted per app and mode."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest

from vevee import (
    AsyncVevee,
    PackItem,
    Vevee,
    VeveeConfigurationError,
    VeveeConflictError,
    VeveeInvalidRequestError,
    VeveeNotFoundError,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
    verify_webhook,
)

from .support import DALLE, LIVE_KEY, SECRET_KEY, RunningServer, start_server

T = TypeVar("T")


@pytest.fixture(scope="module")
def hooks_server() -> Iterator[RunningServer]:
    running = start_server()
    yield running
    running.stop()


@pytest.fixture
def vevee(hooks_server: RunningServer) -> Iterator[Vevee]:
    with Vevee(SECRET_KEY, base_url=hooks_server.base_url) as client:
        yield client


@pytest.fixture
async def avevee(hooks_server: RunningServer) -> AsyncIterator[AsyncVevee]:
    async with AsyncVevee(SECRET_KEY, base_url=hooks_server.base_url) as client:
        yield client


def test_create_list_retrieve_update_rotate_delete(vevee: Vevee) -> None:
    created = vevee.webhook_endpoints.create(
        "https://example.com/hooks/vevee",
        ["credits.low", "credits.depleted"],
        description="top-up prompts",
    )
    assert isinstance(created, WebhookEndpointWithSecret)
    assert created.id.startswith("we_")
    assert created.secret.startswith("whsec_")
    assert (created.url, created.events, created.description, created.enabled) == (
        "https://example.com/hooks/vevee",
        ["credits.low", "credits.depleted"],
        "top-up prompts",
        True,
    )
    assert created.last_response is not None
    assert created.last_response.status == 200

    fetched = vevee.webhook_endpoints.retrieve(created.id)
    assert type(fetched) is WebhookEndpoint, "the secret is only in create's and rotate's answers"
    assert (fetched.id, fetched.url, fetched.created_at) == (
        created.id,
        created.url,
        created.created_at,
    )
    assert vevee.webhook_endpoints.get(created.id) == fetched

    listed = vevee.webhook_endpoints.list()
    assert created.id in {e.id for e in listed.data}
    assert all(type(e) is WebhookEndpoint for e in listed.data)
    assert listed.has_more is False

    updated = vevee.webhook_endpoints.update(created.id, enabled=False, events=["*"])
    assert (updated.events, updated.enabled, updated.description) == (
        ["*"],
        False,
        "top-up prompts",
    )
    cleared = vevee.webhook_endpoints.update(
        created.id, description=None, url="http://example.com/v2"
    )
    assert (cleared.description, cleared.url) == (None, "http://example.com/v2")
    assert cleared.enabled is False, "what is not given stays as it was"

    rotated = vevee.webhook_endpoints.rotate_secret(created.id)
    assert rotated.id == created.id
    assert rotated.secret.startswith("whsec_")
    assert rotated.secret != created.secret

    deleted = vevee.webhook_endpoints.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(VeveeNotFoundError) as missing:
        vevee.webhook_endpoints.retrieve(created.id)
    assert missing.value.code == "endpoint_not_found"


def test_invalid_input_is_an_invalid_request_error_naming_the_field(vevee: Vevee) -> None:
    with pytest.raises(VeveeInvalidRequestError) as bad_url:
        vevee.webhook_endpoints.create("ftp://example.com/hooks", ["*"])
    e = bad_url.value
    assert (e.status, e.type, e.param) == (400, "invalid_request", "url")
    assert e.code
    with pytest.raises(VeveeInvalidRequestError) as too_long:
        vevee.webhook_endpoints.create("https://example.com/" + "a" * 2048, ["*"])
    assert too_long.value.param == "url"
    with pytest.raises(VeveeInvalidRequestError) as bad_type:
        vevee.webhook_endpoints.create("https://example.com/h", ["credits.lo"])
    assert bad_type.value.param == "events"
    with pytest.raises(VeveeConfigurationError):
        vevee.webhook_endpoints.create("https://example.com/h", "credits.low")  # not a list
    with pytest.raises(VeveeInvalidRequestError) as bad_cursor:
        vevee.events.list(starting_after="evt_nope")
    assert bad_cursor.value.param == "startingAfter"  # the wire name, as the server says it
    with pytest.raises(VeveeInvalidRequestError) as bad_limit:
        vevee.events.list(limit=0)
    assert bad_limit.value.param == "limit"


def test_a_17th_endpoint_is_a_conflict_and_the_other_mode_has_its_own(
    vevee: Vevee, hooks_server: RunningServer
) -> None:
    existing = len(vevee.webhook_endpoints.list().data)
    made = [
        vevee.webhook_endpoints.create(f"https://example.com/hooks/{i}", ["*"]).id
        for i in range(existing, 16)
    ]
    assert len(vevee.webhook_endpoints.list().data) == 16
    with pytest.raises(VeveeConflictError) as caught:
        vevee.webhook_endpoints.create("https://example.com/hooks/17", ["*"])
    assert (caught.value.status, caught.value.code) == (409, "too_many_endpoints")

    with Vevee(LIVE_KEY, base_url=hooks_server.base_url) as live:
        live_endpoint = live.webhook_endpoints.create("https://example.com/live", ["*"])
        assert live_endpoint.id not in {e.id for e in vevee.webhook_endpoints.list().data}
        live.webhook_endpoints.delete(live_endpoint.id)

    for endpoint_id in made:
        vevee.webhook_endpoints.delete(endpoint_id)
    assert len(vevee.webhook_endpoints.list().data) == existing


def test_events_after_a_grant_page_and_filter(vevee: Vevee, user: str) -> None:
    grant = vevee.credits.grant(user, "cpk_creator_bundle", "ev-1", source="grant")
    vevee.subscriptions.upsert(user, "pro")

    granted = vevee.events.list(type="credits.granted", limit=100)
    assert all(e["type"] == "credits.granted" for e in granted.data)
    ours = [e for e in granted.data if e["data"]["userId"] == user]
    assert sorted(e["data"]["id"] for e in ours) == sorted(b.id for b in grant.balances)
    for event in ours:
        assert event["id"].startswith("evt_")
        assert event["mode"] == "test"
        balance = next(b for b in grant.balances if b.id == event["data"]["id"])
        data = event["data"]
        assert (data["packItemId"], data["granted"], data["remaining"], data["externalRef"]) == (
            balance.pack_item_id,
            balance.granted,
            balance.remaining,
            "ev-1",
        )

    everything = vevee.events.list(limit=100)
    assert any(
        e["type"] == "subscription.updated" and e["data"]["userId"] == user for e in everything.data
    )
    ids = [e["id"] for e in everything.data]
    first = vevee.events.list(limit=1)
    assert (len(first.data), first.has_more) == (1, True)
    second = vevee.events.list(limit=1, starting_after=first.data[0]["id"])
    assert second.data[0]["id"] == ids[1]
    assert [e["id"] for e in vevee.events.all(limit=2)] == ids
    assert [e["id"] for e in vevee.events.all(limit=1, type="credits.granted")] == [
        e["id"] for e in granted.data
    ]
    assert [e["id"] for e in vevee.events.all(limit=2, starting_after=ids[0])] == ids[1:]


def test_pack_items_round_trip_low_balance_threshold_and_credits_low_fires(
    vevee: Vevee, user: str
) -> None:
    pack_id = f"cpk_low_{user}"
    pack = vevee.credit_packs.create(
        pack_id,
        "Low alert",
        items=[
            PackItem(DALLE, 5, "count", id="img", low_balance_threshold=2),
            PackItem("video.veo-3", 5, "seconds", id="vid"),
        ],
    )
    assert [(i.id, i.low_balance_threshold) for i in pack.items] == [("img", 2), ("vid", None)]
    assert vevee.credit_packs.get(pack_id).items[0].low_balance_threshold == 2
    edited = vevee.credit_packs.upsert(
        pack_id,
        pack.name,
        items=[
            PackItem(DALLE, 5, "count", id="img", low_balance_threshold=3),
            PackItem("video.veo-3", 5, "seconds", id="vid"),
        ],
    )
    assert [i.low_balance_threshold for i in edited.items] == [3, None]
    with pytest.raises(VeveeInvalidRequestError):
        vevee.credit_packs.upsert(
            pack_id, pack.name, items=[PackItem(DALLE, 5, "count", low_balance_threshold=6)]
        )

    grant = vevee.credits.grant(user, pack_id, "low-1", source="grant")
    image = next(b for b in grant.balances if b.pack_item_id == "img")
    vevee.consume(user, DALLE, 2)
    lows = [e for e in vevee.events.all(type="credits.low") if e["data"]["id"] == image.id]
    assert len(lows) == 1
    assert lows[0]["data"]["remaining"] == 3


class _Receiver:
    """A local HTTP server that answers 200 to every POST and keeps the raw bodies and headers."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[bytes, dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.deliveries.append((body, dict(self.headers.items())))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/vevee"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def of_grant(self, external_ref: str) -> tuple[bytes, dict[str, str]] | None:
        # Only that grant's: other events may reach a new endpoint too.
        return next(
            (d for d in self.deliveries if f'"externalRef":"{external_ref}"'.encode() in d[0]),
            None,
        )


def _wait_for(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_deliveries_verify_with_the_secret_and_either_secret_after_rotation(
    vevee: Vevee, user: str
) -> None:
    receiver = _Receiver()
    try:
        endpoint = vevee.webhook_endpoints.create(receiver.url, ["credits.granted"])
        vevee.credits.grant(user, "cpk_gemini_topup", "hook-1", source="grant")
        body, headers = _wait_for("a delivery", lambda: receiver.of_grant("hook-1"))
        event = verify_webhook(body, headers, endpoint.secret)
        assert (event["type"], event["data"]["userId"]) == ("credits.granted", user)
        polled = vevee.events.list(type="credits.granted", limit=100)
        assert next(e for e in polled.data if e["id"] == event["id"]) == event, (
            "polling gives the delivered event"
        )

        rotated = vevee.webhook_endpoints.rotate_secret(endpoint.id)
        vevee.credits.grant(user, "cpk_gemini_topup", "hook-2", source="grant")
        body, headers = _wait_for("a second delivery", lambda: receiver.of_grant("hook-2"))
        signatures = {k.lower(): v for k, v in headers.items()}["webhook-signature"]
        assert len(signatures.split(" ")) == 2, "both secrets sign for 24 h"
        assert verify_webhook(body, headers, rotated.secret)["type"] == "credits.granted"
        assert verify_webhook(body, headers, endpoint.secret)["type"] == "credits.granted"
        vevee.webhook_endpoints.delete(endpoint.id)
    finally:
        receiver.close()


@pytest.mark.anyio
async def test_the_same_through_async_vevee(avevee: AsyncVevee, user: str) -> None:
    created = await avevee.webhook_endpoints.create("https://example.com/async", ["credits.low"])
    assert created.secret.startswith("whsec_")
    assert type(await avevee.webhook_endpoints.retrieve(created.id)) is WebhookEndpoint
    assert created.id in {e.id for e in (await avevee.webhook_endpoints.list()).data}
    updated = await avevee.webhook_endpoints.update(created.id, description="async")
    assert updated.description == "async"
    rotated = await avevee.webhook_endpoints.rotate_secret(created.id)
    assert rotated.secret != created.secret
    assert (await avevee.webhook_endpoints.delete(created.id)).deleted is True

    await avevee.credits.grant(user, "cpk_creator_bundle", "async-1", source="grant")
    page = await avevee.events.list(type="credits.granted", limit=100)
    assert [e["data"]["userId"] for e in page.data].count(user) == 2
    walked = [e["id"] async for e in avevee.events.all(limit=1, type="credits.granted")]
    assert walked == [e["id"] for e in page.data]
