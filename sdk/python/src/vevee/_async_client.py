"""`AsyncVevee`: every call of vevee's HTTP API v1 as a coroutine, for asyncio apps (FastAPI).

The same methods as `Vevee` (`_client`), each awaited; only the sending differs."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Literal

import httpx

from . import _calls as calls
from ._client import settings_from
from ._reservation import AsyncReservationContext
from ._transport import AsyncTransport, Call, RequestOptions, T
from .batch import BatchOp, BatchResult
from .types import (
    Balance,
    CheckResult,
    CreditPack,
    DeletedPlan,
    DeletedWebhookEndpoint,
    Grant,
    LedgerEntry,
    PackItem,
    PackPrice,
    Page,
    Plan,
    PlanLimit,
    PlanPrice,
    Reservation,
    ReserveResult,
    Subscription,
    TestClock,
    Usage,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)


class AsyncVevee:
    """An asyncio client. One per event loop: it pools its connections.

    >>> vevee = AsyncVevee(api_key="sk_test_...", base_url="http://127.0.0.1:8080")
    >>> async with vevee.reservation("ana", "image.dall-e-3", 1) as hold:
    ...     image = await provider.generate(...)
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        initial_retry_delay: float = 0.5,
        max_retry_delay: float = 8.0,
        max_retry_after: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        """`timeout` is per attempt, in seconds; `max_retries` counts retries after the first
        attempt. A `Retry-After` longer than `max_retry_after` seconds is not waited for.
        `http_client` replaces the client's own pool (e.g. for a proxy); it is not closed here."""
        settings = settings_from(
            api_key,
            base_url,
            timeout,
            max_retries,
            initial_retry_delay,
            max_retry_delay,
            max_retry_after,
        )
        self._transport = AsyncTransport(settings, http_client)
        self.subscriptions = AsyncSubscriptions(self)
        self.credits = AsyncCredits(self)
        self.plans = AsyncPlans(self)
        self.credit_packs = AsyncCreditPacks(self)
        self.test_clock = AsyncTestClockApi(self)
        self.webhook_endpoints = AsyncWebhookEndpoints(self)
        self.events = AsyncEvents(self)

    async def _send(self, call: Call[T], options: RequestOptions | None) -> T:
        return await self._transport.send(call, options)

    async def aclose(self) -> None:
        """Closes the pooled connections."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncVevee:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- Reservations ---------------------------------------------------------------------------

    async def reserve(
        self,
        user_id: str,
        model: str,
        amount: int,
        *,
        ttl_seconds: int | None = None,
        metadata: Any = None,
        options: RequestOptions | None = None,
    ) -> ReserveResult:
        """Holds `amount` of `model` for `user_id`: plan first, then credits. A denial is a value
        (`Denial`): test `.allowed`."""
        return await self._send(
            calls.reserve(user_id, model, amount, ttl_seconds, metadata), options
        )

    def reservation(
        self,
        user_id: str,
        model: str,
        amount: int,
        *,
        ttl_seconds: int | None = None,
        metadata: Any = None,
        options: RequestOptions | None = None,
    ) -> AsyncReservationContext:
        """`async with vevee.reservation(...) as r:` reserves (raising `Denied` if refused), commits
        when the block ends, and releases if it raises."""
        return AsyncReservationContext(
            self,
            lambda: self.reserve(
                user_id, model, amount, ttl_seconds=ttl_seconds, metadata=metadata, options=options
            ),
            user_id,
            model,
            amount,
        )

    async def commit(
        self,
        reservation_id: str,
        *,
        amount: int | None = None,
        response: Any = None,
        options: RequestOptions | None = None,
    ) -> Reservation:
        """Spends a reservation: all of it, or `amount` of it (the rest goes back)."""
        return await self._send(calls.commit(reservation_id, amount, response), options)

    async def release(
        self,
        reservation_id: str,
        *,
        error_code: str | None = None,
        options: RequestOptions | None = None,
    ) -> Reservation:
        """Gives every unit back to the counter or balance it came from."""
        return await self._send(calls.release(reservation_id, error_code), options)

    async def get_reservation(
        self, reservation_id: str, *, options: RequestOptions | None = None
    ) -> Reservation:
        return await self._send(calls.get_reservation(reservation_id), options)

    async def check(
        self, user_id: str, model: str, amount: int, *, options: RequestOptions | None = None
    ) -> CheckResult:
        """What a reserve would do now, holding nothing. Truthy when allowed."""
        return await self._send(calls.check(user_id, model, amount), options)

    can_use = check

    async def consume(
        self,
        user_id: str,
        model: str,
        amount: int,
        *,
        metadata: Any = None,
        options: RequestOptions | None = None,
    ) -> ReserveResult:
        """A reserve and commit in one step: the committed reservation, or the denial."""
        return await self._send(calls.consume(user_id, model, amount, metadata), options)

    async def batch(
        self, operations: Sequence[BatchOp], *, options: RequestOptions | None = None
    ) -> BatchResult:
        """Many reservation calls in one request (`POST /v1/batch`), one result per operation."""
        return await self._send(calls.batch(operations), options)

    # --- Usage and ledger -----------------------------------------------------------------------

    async def usage(
        self, user_id: str, match: str | None = None, *, options: RequestOptions | None = None
    ) -> Usage:
        """The user's counters and active balances; `match` keeps those overlapping it."""
        return await self._send(calls.usage(user_id, match), options)

    async def ledger_page(
        self,
        user_id: str,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        options: RequestOptions | None = None,
    ) -> Page[LedgerEntry]:
        """One page of the user's ledger, newest first."""
        return await self._send(calls.ledger_page(user_id, limit, starting_after), options)

    async def ledger(
        self,
        user_id: str,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        options: RequestOptions | None = None,
    ) -> AsyncIterator[LedgerEntry]:
        """Every entry of the user's ledger, newest first, fetching `limit` per page as it goes:
        `async for entry in vevee.ledger(user_id)`."""
        after = starting_after
        while True:
            page = await self.ledger_page(
                user_id, limit=limit, starting_after=after, options=options
            )
            for entry in page.data:
                yield entry
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    # --- Subscriptions (also as `subscriptions.get/upsert/cancel`) -------------------------------

    async def get_subscription(
        self, user_id: str, *, options: RequestOptions | None = None
    ) -> Subscription:
        return await self.subscriptions.get(user_id, options=options)

    async def upsert_subscription(
        self, user_id: str, plan_id: str, *, options: RequestOptions | None = None
    ) -> Subscription:
        return await self.subscriptions.upsert(user_id, plan_id, options=options)

    async def cancel_subscription(
        self, user_id: str, *, options: RequestOptions | None = None
    ) -> Subscription:
        return await self.subscriptions.cancel(user_id, options=options)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        options: RequestOptions | None = None,
    ) -> Any:
        """Any other call of the API (decoded JSON), with the same auth, retries and keys."""
        return await self._send(calls.raw(method, path, query, body), options)


class AsyncSubscriptions:
    def __init__(self, client: AsyncVevee) -> None:
        self._c = client

    async def get(self, user_id: str, *, options: RequestOptions | None = None) -> Subscription:
        """404 `no_subscription` if the user never had one; a canceled one is returned."""
        return await self._c._send(calls.get_subscription(user_id), options)

    async def upsert(
        self, user_id: str, plan_id: str, *, options: RequestOptions | None = None
    ) -> Subscription:
        """Puts the user on `plan_id`: the same plan changes nothing, another starts a new
        period now."""
        return await self._c._send(calls.upsert_subscription(user_id, plan_id), options)

    async def cancel(self, user_id: str, *, options: RequestOptions | None = None) -> Subscription:
        """Cancels; the user's credits stay spendable."""
        return await self._c._send(calls.cancel_subscription(user_id), options)


class AsyncCredits:
    def __init__(self, client: AsyncVevee) -> None:
        self._c = client

    async def grant(
        self,
        user_id: str,
        pack_id: str,
        external_ref: str,
        *,
        source: Literal["purchase", "grant", "adjustment"],
        notes: str | None = None,
        expires_at: str | dt.datetime | None = None,
        options: RequestOptions | None = None,
    ) -> Grant:
        """Grants a pack: one balance per item. A repeat of (user, pack, external_ref) grants
        nothing (`created` False)."""
        call = calls.grant(user_id, pack_id, external_ref, source, notes, expires_at)
        return await self._c._send(call, options)

    async def revoke(
        self, balance_id: str, *, reason: str, options: RequestOptions | None = None
    ) -> Balance:
        """Takes what is left of a balance (e.g. on a refund)."""
        return await self._c._send(calls.revoke(balance_id, reason), options)

    async def get_balance(
        self, balance_id: str, *, options: RequestOptions | None = None
    ) -> Balance:
        return await self._c._send(calls.get_balance(balance_id), options)


class AsyncPlans:
    def __init__(self, client: AsyncVevee) -> None:
        self._c = client

    async def list(self, *, options: RequestOptions | None = None) -> Page[Plan]:
        return await self._c._send(calls.list_plans(), options)

    async def get(self, plan_id: str, *, options: RequestOptions | None = None) -> Plan:
        return await self._c._send(calls.get_plan(plan_id), options)

    async def create(
        self,
        plan_id: str,
        name: str,
        *,
        price: PlanPrice | None = None,
        limits: Sequence[PlanLimit] = (),
        options: RequestOptions | None = None,
    ) -> Plan:
        """`POST /v1/plans`: 409 `plan_exists` if the id is taken."""
        return await self._c._send(calls.create_plan(plan_id, name, price, limits), options)

    async def upsert(
        self,
        plan_id: str,
        name: str,
        *,
        price: PlanPrice | None = None,
        limits: Sequence[PlanLimit] = (),
        options: RequestOptions | None = None,
    ) -> Plan:
        """`PUT /v1/plans/{id}`: creates or replaces."""
        return await self._c._send(calls.upsert_plan(plan_id, name, price, limits), options)

    async def delete(self, plan_id: str, *, options: RequestOptions | None = None) -> DeletedPlan:
        """409 `plan_in_use` while an active subscription uses it."""
        return await self._c._send(calls.delete_plan(plan_id), options)


class AsyncCreditPacks:
    def __init__(self, client: AsyncVevee) -> None:
        self._c = client

    async def list(
        self, *, include_archived: bool = False, options: RequestOptions | None = None
    ) -> Page[CreditPack]:
        return await self._c._send(calls.list_packs(include_archived), options)

    async def get(self, pack_id: str, *, options: RequestOptions | None = None) -> CreditPack:
        return await self._c._send(calls.get_pack(pack_id), options)

    async def create(
        self,
        pack_id: str,
        name: str,
        *,
        items: Sequence[PackItem],
        price: PackPrice | None = None,
        expires_in_days: int | None = None,
        stripe_price_id: str | None = None,
        archived: bool | None = None,
        options: RequestOptions | None = None,
    ) -> CreditPack:
        """`POST /v1/credit-packs`: 409 `pack_exists` if the id is taken. `expires_in_days`
        None: its balances never expire."""
        call = calls.create_pack(
            pack_id, name, items, price, expires_in_days, stripe_price_id, archived
        )
        return await self._c._send(call, options)

    async def upsert(
        self,
        pack_id: str,
        name: str,
        *,
        items: Sequence[PackItem],
        price: PackPrice | None = None,
        expires_in_days: int | None = None,
        stripe_price_id: str | None = None,
        archived: bool | None = None,
        options: RequestOptions | None = None,
    ) -> CreditPack:
        """`PUT /v1/credit-packs/{id}`: creates or replaces; changes future grants only."""
        call = calls.upsert_pack(
            pack_id, name, items, price, expires_in_days, stripe_price_id, archived
        )
        return await self._c._send(call, options)

    async def archive(self, pack_id: str, *, options: RequestOptions | None = None) -> CreditPack:
        """Hides the pack from lists; it can still be granted."""
        return await self._c._send(calls.archive_pack(pack_id), options)


class AsyncTestClockApi:
    """Test keys only (403 with a live key)."""

    __test__ = False  # not a pytest test class

    def __init__(self, client: AsyncVevee) -> None:
        self._c = client

    async def get(self, *, options: RequestOptions | None = None) -> TestClock:
        return await self._c._send(calls.get_clock(), options)

    async def advance(self, seconds: int, *, options: RequestOptions | None = None) -> TestClock:
        """Moves the app's test-mode clock forward: expiry, period resets and TTLs follow it."""
        return await self._c._send(calls.advance_clock(seconds), options)


class AsyncWebhookEndpoints:
    """Where vevee POSTs events (API.md, "Webhooks out"), per mode: the key's. At most 16."""

    def __init__(self, client: AsyncVevee) -> None:
        self._c = client

    async def create(
        self,
        url: str,
        events: Sequence[str],
        *,
        description: str | None = None,
        options: RequestOptions | None = None,
    ) -> WebhookEndpointWithSecret:
        """`POST /v1/webhook-endpoints`: `events` lists types (`WEBHOOK_EVENT_TYPES`) or is
        `["*"]`. The answer and `rotate_secret`'s are the only ones with a `secret`: store it for
        `verify_webhook`. A 17th endpoint is 409 `too_many_endpoints` (`VeveeConflictError`)."""
        call = calls.create_webhook_endpoint(url, events, description)
        return await self._c._send(call, options)

    async def list(self, *, options: RequestOptions | None = None) -> Page[WebhookEndpoint]:
        """Every endpoint of the key's mode, oldest first, without secrets."""
        return await self._c._send(calls.list_webhook_endpoints(), options)

    async def retrieve(
        self, endpoint_id: str, *, options: RequestOptions | None = None
    ) -> WebhookEndpoint:
        """Without the secret; 404 `endpoint_not_found` (`VeveeNotFoundError`)."""
        return await self._c._send(calls.get_webhook_endpoint(endpoint_id), options)

    get = retrieve

    async def update(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | calls.Unset | None = calls.UNSET,
        enabled: bool | None = None,
        options: RequestOptions | None = None,
    ) -> WebhookEndpoint:
        """`PATCH`: changes only what is given; `description=None` removes it, `enabled=True`
        enables an endpoint the server disabled."""
        call = calls.update_webhook_endpoint(endpoint_id, url, events, description, enabled)
        return await self._c._send(call, options)

    async def delete(
        self, endpoint_id: str, *, options: RequestOptions | None = None
    ) -> DeletedWebhookEndpoint:
        return await self._c._send(calls.delete_webhook_endpoint(endpoint_id), options)

    async def rotate_secret(
        self, endpoint_id: str, *, options: RequestOptions | None = None
    ) -> WebhookEndpointWithSecret:
        """A new `secret`; for 24 h the previous one signs too (two signatures), so receivers
        with either secret keep accepting while they switch."""
        return await self._c._send(calls.rotate_webhook_secret(endpoint_id), options)


class AsyncEvents:
    """The last 30 days' events of the key's mode, newest first, for apps that poll: the same
    dicts (`id`, `type`, `createdAt`, `mode`, `data`) that `verify_webhook` returns."""

    def __init__(self, client: AsyncVevee) -> None:
        self._c = client

    async def list(
        self,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        type: str | None = None,
        options: RequestOptions | None = None,
    ) -> Page[dict[str, Any]]:
        """One page (`limit` 1 to 100, default 50); `starting_after`: an event id, the page after
        it (older events); `type`: only events of that type."""
        return await self._c._send(calls.events_page(limit, starting_after, type), options)

    async def all(
        self,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        type: str | None = None,
        options: RequestOptions | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every event from there on, newest first, fetching `limit` per page as it goes."""
        after = starting_after
        while True:
            page = await self.list(limit=limit, starting_after=after, type=type, options=options)
            for event in page.data:
                yield event
            if not page.has_more or not page.data:
                return
            after = page.data[-1]["id"]
