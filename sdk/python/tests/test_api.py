"""Every call of API.md through `Vevee` against the real server: answers as typed objects, and
refusals as the `VeveeError` subclass of their type."""

from __future__ import annotations

import uuid

import pytest

from vevee import (
    Denial,
    PackItem,
    PackPrice,
    PlanLimit,
    PlanPrice,
    RequestOptions,
    Reservation,
    Vevee,
    VeveeAuthenticationError,
    VeveeConflictError,
    VeveeError,
    VeveeInvalidRequestError,
    VeveeNotFoundError,
    VeveePermissionError,
)

from .support import GEMINI, LIVE_KEY, PUBLISHABLE_KEY, RunningServer


def test_the_seeded_catalog_reads_with_a_publishable_key_that_may_do_nothing_else(
    server: RunningServer,
) -> None:
    with Vevee(PUBLISHABLE_KEY, base_url=server.base_url) as browser:
        plans = browser.plans.list()
        assert plans.has_more is False
        assert {"free", "pro"} <= {p.id for p in plans.data}
        free = browser.plans.get("free")
        assert free.price == PlanPrice(amount=0, currency="usd", interval=None)
        assert free.limits == [
            PlanLimit("images", "Images", [GEMINI], 2, "count", "lifetime"),
        ]
        bundle = browser.credit_packs.get("cpk_creator_bundle")
        assert bundle.expires_in_days == 90
        assert [(i.id, i.match, i.amount, i.unit) for i in bundle.items] == [
            ("dalle", "image.dall-e-3", 10, "count"),
            ("veo", "video.veo-3", 5, "seconds"),
        ]
        with pytest.raises(VeveePermissionError) as caught:
            browser.reserve("eve", GEMINI, 1)
    error = caught.value
    assert isinstance(error, VeveeError)
    assert (error.status, error.type) == (403, "permission")
    assert error.code
    assert error.request_id, "the request-id header is kept"


def test_refusals_carry_status_type_code_param_and_request_id(vevee: Vevee, user: str) -> None:
    with pytest.raises(VeveeInvalidRequestError) as caught:
        vevee.reserve(user, "NOT A MODEL", 1)
    e = caught.value
    assert (e.status, e.type, e.param) == (400, "invalid_request", "model")
    assert e.code
    assert e.message
    assert e.request_id
    assert e.request_id in str(e)

    with pytest.raises(VeveeNotFoundError) as missing:
        vevee.get_reservation("res_does_not_exist")
    assert (missing.value.status, missing.value.type) == (404, "not_found")

    with pytest.raises(VeveeNotFoundError) as no_sub:
        vevee.subscriptions.get(user)
    assert no_sub.value.code == "no_subscription"


def test_a_wrong_key_is_an_authentication_error(server: RunningServer) -> None:
    with (
        Vevee("sk_test_nobody", base_url=server.base_url) as stranger,
        pytest.raises(VeveeAuthenticationError) as caught,
    ):
        stranger.usage("ana")
    assert caught.value.status == 401


def test_reserve_commit_release_and_the_conflicts_after_them(vevee: Vevee, user: str) -> None:
    vevee.upsert_subscription(user, "pro")
    hold = vevee.reserve(user, GEMINI, 3, ttl_seconds=120, metadata={"job": "j1"})
    assert isinstance(hold, Reservation)
    assert (hold.status, hold.amount, hold.metadata) == ("pending", 3, {"job": "j1"})
    assert [(a.source, a.limit_id, a.amount) for a in hold.allocations] == [("plan", "images", 3)]

    done = vevee.commit(hold.reservation_id, amount=2, response={"url": "https://cdn/1.png"})
    assert (done.status, done.committed_amount, done.response) == (
        "committed",
        2,
        {"url": "https://cdn/1.png"},
    )
    assert vevee.get_reservation(hold.reservation_id) == done
    with pytest.raises(VeveeConflictError) as caught:
        vevee.release(hold.reservation_id)
    assert caught.value.code == "reservation_not_pending"

    other = vevee.reserve(user, GEMINI, 1)
    assert other.allowed
    released = vevee.release(other.reservation_id, error_code="provider_timeout")
    assert (released.status, released.error_code) == ("released", "provider_timeout")

    usage = vevee.usage(user, "image.*")
    assert [(c.limit_id, c.used, c.reserved, c.remaining) for c in usage.counters] == [
        ("images", 2, 0, 38)
    ]


def test_check_and_consume_and_a_denial_as_a_value(vevee: Vevee, user: str) -> None:
    assert not vevee.can_use(user, GEMINI, 1)
    denied = vevee.consume(user, GEMINI, 1)
    assert isinstance(denied, Denial)
    assert denied.reasons == ["no_subscription", "credits_exhausted"]
    assert (denied.available.plan, denied.available.credits) == (0, 0)

    vevee.subscriptions.upsert(user, "free")
    check = vevee.check(user, GEMINI, 2)
    assert check
    assert check.allowed
    assert [(a.source, a.amount) for a in check.allocations] == [("plan", 2)]
    consumed = vevee.consume(user, GEMINI, 2, metadata={"prompt": "a cat"})
    assert isinstance(consumed, Reservation)
    assert (consumed.status, consumed.committed_amount) == ("committed", 2)
    after = vevee.check(user, GEMINI, 1)
    assert (after.allowed, after.reasons) == (False, ["plan_exhausted"])


def test_subscriptions_and_credits(vevee: Vevee, user: str) -> None:
    sub = vevee.subscriptions.upsert(user, "pro")
    assert (sub.user_id, sub.plan_id, sub.status) == (user, "pro", "active")
    assert vevee.get_subscription(user).plan_id == "pro"
    canceled = vevee.cancel_subscription(user)
    assert canceled.status == "canceled"
    assert vevee.usage(user).subscription is None

    grant = vevee.credits.grant(
        user, "cpk_creator_bundle", "cs_test_py_1", source="purchase", notes="checkout"
    )
    assert grant.created is True
    assert [(b.pack_item_id, b.granted, b.remaining, b.status) for b in grant.balances] == [
        ("dalle", 10, 10, "active"),
        ("veo", 5, 5, "active"),
    ]
    again = vevee.credits.grant(user, "cpk_creator_bundle", "cs_test_py_1", source="purchase")
    assert again.created is False
    assert [b.id for b in again.balances] == [b.id for b in grant.balances]

    dalle = grant.balances[0]
    assert vevee.credits.get_balance(dalle.id) == dalle
    revoked = vevee.credits.revoke(dalle.id, reason="refund")
    assert (revoked.status, revoked.remaining) == ("revoked", 0)
    with pytest.raises(VeveeNotFoundError) as caught:
        vevee.credits.grant(user, "cpk_nope", "cs_x", source="grant")
    assert caught.value.code == "pack_not_found"


def test_plans_and_packs_create_replace_archive_and_delete(vevee: Vevee, user: str) -> None:
    plan_id = f"plan_{uuid.uuid4().hex[:8]}"
    limit = PlanLimit("vids", "Videos", ["video.*"], 10, "seconds", "month")
    created = vevee.plans.create(
        plan_id, "Studio", price=PlanPrice(2900, "usd", "month"), limits=[limit]
    )
    assert (created.id, created.price.amount, created.limits) == (plan_id, 2900, [limit])
    with pytest.raises(VeveeConflictError) as exists:
        vevee.plans.create(plan_id, "Studio")
    assert exists.value.code == "plan_exists"
    # A plan read from the API can be edited and written back.
    bigger = vevee.plans.upsert(
        created.id,
        created.name,
        price=created.price,
        limits=[PlanLimit("vids", "Videos", ["video.*"], 20, "seconds", "month")],
    )
    assert bigger.limits[0].limit == 20
    vevee.subscriptions.upsert(user, plan_id)
    with pytest.raises(VeveeConflictError) as in_use:
        vevee.plans.delete(plan_id)
    assert in_use.value.code == "plan_in_use"
    vevee.subscriptions.cancel(user)
    deleted = vevee.plans.delete(plan_id)
    assert (deleted.id, deleted.deleted) == (plan_id, True)
    with pytest.raises(VeveeNotFoundError):
        vevee.plans.get(plan_id)

    pack_id = f"cpk_{uuid.uuid4().hex[:8]}"
    pack = vevee.credit_packs.create(
        pack_id,
        "Video top-up",
        items=[PackItem(match="video.veo-3", amount=30, unit="seconds")],
        price=PackPrice(900, "usd"),
    )
    assert pack.expires_in_days is None
    assert pack.archived is False
    assert pack.items[0].id, "the server names an item created without an id"
    renamed = vevee.credit_packs.upsert(
        pack_id, "Video top-up XL", items=pack.items, expires_in_days=30
    )
    assert (renamed.name, renamed.expires_in_days, renamed.items) == (
        "Video top-up XL",
        30,
        pack.items,
    )
    archived = vevee.credit_packs.archive(pack_id)
    assert archived.archived is True
    assert pack_id not in {p.id for p in vevee.credit_packs.list().data}
    assert pack_id in {p.id for p in vevee.credit_packs.list(include_archived=True).data}


def test_the_ledger_pages_by_itself(vevee: Vevee, user: str) -> None:
    vevee.upsert_subscription(user, "pro")
    for _ in range(6):
        vevee.consume(user, GEMINI, 1)
    # 1 subscription.updated + 6 x (usage.reserved, usage.committed) = 13 entries.
    whole = vevee.ledger_page(user, limit=500)
    assert whole.has_more is False
    assert len(whole.data) == 13
    assert whole.data[-1].type == "subscription.updated"

    first = vevee.ledger_page(user, limit=5)
    assert first.has_more is True
    assert first.data == whole.data[:5]

    paged = list(vevee.ledger(user, limit=5))
    assert [e.id for e in paged] == [e.id for e in whole.data]
    assert paged == whole.data

    rest = list(vevee.ledger(user, limit=4, starting_after=whole.data[2].id))
    assert rest == whole.data[3:]
    with pytest.raises(VeveeInvalidRequestError):
        vevee.ledger_page(user, limit=501)


def test_an_idempotency_key_of_ones_own_replays_the_first_answer(vevee: Vevee, user: str) -> None:
    vevee.upsert_subscription(user, "pro")
    key = f"job-{uuid.uuid4()}"
    first = vevee.reserve(user, GEMINI, 2, options=RequestOptions(idempotency_key=key))
    second = vevee.reserve(user, GEMINI, 2, options=RequestOptions(idempotency_key=key))
    assert first == second
    assert first.last_response is not None
    assert second.last_response is not None
    assert first.last_response.idempotency_key == key
    assert (first.last_response.idempotent_replayed, second.last_response.idempotent_replayed) == (
        False,
        True,
    )
    assert vevee.usage(user).counters[0].reserved == 2, "held once"
    with pytest.raises(VeveeConflictError) as caught:
        vevee.reserve(user, GEMINI, 3, options=RequestOptions(idempotency_key=key))
    assert caught.value.code == "idempotency_key_reused"


def test_the_test_clock_moves_and_refuses_a_live_key(
    vevee: Vevee, server: RunningServer, user: str
) -> None:
    vevee.upsert_subscription(user, "pro")
    hold = vevee.reserve(user, GEMINI, 1, ttl_seconds=60)
    assert hold.allowed
    before = vevee.test_clock.get().now
    moved = vevee.test_clock.advance(61)
    assert moved.now > before
    assert vevee.get_reservation(hold.reservation_id).status == "expired"
    with Vevee(LIVE_KEY, base_url=server.base_url) as live, pytest.raises(VeveePermissionError):
        live.test_clock.get()


def test_request_reaches_any_other_route(vevee: Vevee) -> None:
    assert vevee.request("GET", "/v1/plans/free")["id"] == "free"
    with pytest.raises(VeveeNotFoundError):
        vevee.request("GET", "/v1/nowhere")
