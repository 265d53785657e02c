"""`Vevee`: every call of vevee's HTTP API v1 as a blocking method."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Literal

import httpx

from . import _calls as calls
from ._reservation import ReservationContext
from ._transport import Call, RequestOptions, Settings, SyncTransport, T
from ._version import VERSION
from .batch import BatchOp, BatchResult
from .errors import VeveeConfigurationError
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

DEFAULT_BASE_URL = "http://127.0.0.1:8080"


def settings_from(
    api_key: str | None,
    base_url: str | None,
    timeout: float,
    max_retries: int,
    initial_retry_delay: float,
    max_retry_delay: float,
    max_retry_after: float,
) -> Settings:
    """The client's settings, checked; `VEVEE_API_KEY` and `VEVEE_BASE_URL` fill the gaps."""
    key = (api_key or os.environ.get("VEVEE_API_KEY") or "").strip()
    if not key:
        raise VeveeConfigurationError(
            "Vevee needs an API key: a secret key (sk_test_... or sk_live_...), as api_key= or in "
            "the VEVEE_API_KEY environment variable",
            type="configuration",
            code="api_key_missing",
        )
    for name, value, least in (
        ("timeout", timeout, 0.0),
        ("max_retries", max_retries, 0),
        ("initial_retry_delay", initial_retry_delay, 0.0),
        ("max_retry_delay", max_retry_delay, 0.0),
        ("max_retry_after", max_retry_after, 0.0),
    ):
        if value < least or (name == "timeout" and value == 0):
            raise VeveeConfigurationError(
                f"{name} must be {'positive' if name == 'timeout' else 'at least 0'}, got {value}",
                type="configuration",
                code="invalid_option",
            )
    url = (base_url or os.environ.get("VEVEE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    return Settings(
        api_key=key,
        base_url=url,
        timeout=timeout,
        max_retries=max_retries,
        initial_retry_delay=initial_retry_delay,
        max_retry_delay=max_retry_delay,
        max_retry_after=max_retry_after,
        user_agent=f"vevee-sdk-python/{VERSION}",
    )


class Vevee:
    """A blocking client. One per process: it pools its connections and is thread-safe.

    >>> vevee = Vevee(api_key="sk_test_...", base_url="http://127.0.0.1:8080")
    >>> with vevee.reservation("ana", "image.dall-e-3", 1) as hold:
    ...     image = provider.generate(...)
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
        http_client: httpx.Client | None = None,
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
        self._transport = SyncTransport(settings, http_client)
        self.subscriptions = Subscriptions(self)
        self.credits = Credits(self)
        self.plans = Plans(self)
        self.credit_packs = CreditPacks(self)
        self.test_clock = TestClockApi(self)
        self.webhook_endpoints = WebhookEndpoints(self)
        self.events = Events(self)

    def _send(self, call: Call[T], options: RequestOptions | None) -> T:
        return self._transport.send(call, options)

    def close(self) -> None:
        """Closes the pooled connections."""
        self._transport.close()

    def __enter__(self) -> Vevee:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- Reservations ---------------------------------------------------------------------------

    def reserve(
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
        return self._send(calls.reserve(user_id, model, amount, ttl_seconds, metadata), options)

    def reservation(
        self,
        user_id: str,
        model: str,
        amount: int,
        *,
        ttl_seconds: int | None = None,
        metadata: Any = None,
        options: RequestOptions | None = None,
    ) -> ReservationContext:
        """`with vevee.reservation(...) as r:` reserves (raising `Denied` if refused), commits
        when the block ends, and releases if it raises."""
        return ReservationContext(
            self,
            lambda: self.reserve(
                user_id, model, amount, ttl_seconds=ttl_seconds, metadata=metadata, options=options
            ),
            user_id,
            model,
            amount,
        )

    def commit(
        self,
        reservation_id: str,
        *,
        amount: int | None = None,
        response: Any = None,
        options: RequestOptions | None = None,
    ) -> Reservation:
        """Spends a reservation: all of it, or `amount` of it (the rest goes back)."""
        return self._send(calls.commit(reservation_id, amount, response), options)

    def release(
        self,
        reservation_id: str,
        *,
        error_code: str | None = None,
        options: RequestOptions | None = None,
    ) -> Reservation:
        """Gives every unit back to the counter or balance it came from."""
        return self._send(calls.release(reservation_id, error_code), options)

    def get_reservation(
        self, reservation_id: str, *, options: RequestOptions | None = None
    ) -> Reservation:
        return self._send(calls.get_reservation(reservation_id), options)

    def check(
        self, user_id: str, model: str, amount: int, *, options: RequestOptions | None = None
    ) -> CheckResult:
        """What a reserve would do now, holding nothing. Truthy when allowed."""
        return self._send(calls.check(user_id, model, amount), options)

    can_use = check

    def consume(
        self,
        user_id: str,
        model: str,
        amount: int,
        *,
        metadata: Any = None,
        options: RequestOptions | None = None,
    ) -> ReserveResult:
        """A reserve and commit in one step: the committed reservation, or the denial."""
        return self._send(calls.consume(user_id, model, amount, metadata), options)

    def batch(
        self, operations: Sequence[BatchOp], *, options: RequestOptions | None = None
    ) -> BatchResult:
        """Many reservation calls in one request (`POST /v1/batch`), one result per operation."""
        return self._send(calls.batch(operations), options)

    # --- Usage and ledger -----------------------------------------------------------------------

    def usage(
        self, user_id: str, match: str | None = None, *, options: RequestOptions | None = None
    ) -> Usage:
        """The user's counters and active balances; `match` keeps those overlapping it."""
        return self._send(calls.usage(user_id, match), options)

    def ledger_page(
        self,
        user_id: str,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        options: RequestOptions | None = None,
    ) -> Page[LedgerEntry]:
        """One page of the user's ledger, newest first."""
        return self._send(calls.ledger_page(user_id, limit, starting_after), options)

    def ledger(
        self,
        user_id: str,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        options: RequestOptions | None = None,
    ) -> Iterator[LedgerEntry]:
        """Every entry of the user's ledger, newest first, fetching `limit` per page as it goes."""
        after = starting_after
        while True:
            page = self.ledger_page(user_id, limit=limit, starting_after=after, options=options)
            yield from page.data
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    # --- Subscriptions (also as `subscriptions.get/upsert/cancel`) -------------------------------

    def get_subscription(
        self, user_id: str, *, options: RequestOptions | None = None
    ) -> Subscription:
        return self.subscriptions.get(user_id, options=options)

    def upsert_subscription(
        self, user_id: str, plan_id: str, *, options: RequestOptions | None = None
    ) -> Subscription:
        return self.subscriptions.upsert(user_id, plan_id, options=options)

    def cancel_subscription(
        self, user_id: str, *, options: RequestOptions | None = None
    ) -> Subscription:
        return self.subscriptions.cancel(user_id, options=options)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        options: RequestOptions | None = None,
    ) -> Any:
        """Any other call of the API (decoded JSON), with the same auth, retries and keys."""
        return self._send(calls.raw(method, path, query, body), options)


class Subscriptions:
    def __init__(self, client: Vevee) -> None:
        self._c = client

    def get(self, user_id: str, *, options: RequestOptions | None = None) -> Subscription:
        """404 `no_subscription` if the user never had one; a canceled one is returned."""
        return self._c._send(calls.get_subscription(user_id), options)

    def upsert(
        self, user_id: str, plan_id: str, *, options: RequestOptions | None = None
    ) -> Subscription:
        """Puts the user on `plan_id`: the same plan changes nothing, another starts a new
        period now."""
        return self._c._send(calls.upsert_subscription(user_id, plan_id), options)

    def cancel(self, user_id: str, *, options: RequestOptions | None = None) -> Subscription:
        """Cancels; the user's credits stay spendable."""
        return self._c._send(calls.cancel_subscription(user_id), options)


class Credits:
    def __init__(self, client: Vevee) -> None:
        self._c = client

    def grant(
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
        return self._c._send(call, options)

    def revoke(
        self, balance_id: str, *, reason: str, options: RequestOptions | None = None
    ) -> Balance:
        """Takes what is left of a balance (e.g. on a refund)."""
        return self._c._send(calls.revoke(balance_id, reason), options)

    def get_balance(self, balance_id: str, *, options: RequestOptions | None = None) -> Balance:
        return self._c._send(calls.get_balance(balance_id), options)


class Plans:
    def __init__(self, client: Vevee) -> None:
        self._c = client

    def list(self, *, options: RequestOptions | None = None) -> Page[Plan]:
        return self._c._send(calls.list_plans(), options)

    def get(self, plan_id: str, *, options: RequestOptions | None = None) -> Plan:
        return self._c._send(calls.get_plan(plan_id), options)

    def create(
        self,
        plan_id: str,
        name: str,
        *,
        price: PlanPrice | None = None,
        limits: Sequence[PlanLimit] = (),
        options: RequestOptions | None = None,
    ) -> Plan:
        """`POST /v1/plans`: 409 `plan_exists` if the id is taken."""
        return self._c._send(calls.create_plan(plan_id, name, price, limits), options)

    def upsert(
        self,
        plan_id: str,
        name: str,
        *,
        price: PlanPrice | None = None,
        limits: Sequence[PlanLimit] = (),
        options: RequestOptions | None = None,
    ) -> Plan:
        """`PUT /v1/plans/{id}`: creates or replaces."""
        return self._c._send(calls.upsert_plan(plan_id, name, price, limits), options)

    def delete(self, plan_id: str, *, options: RequestOptions | None = None) -> DeletedPlan:
        """409 `plan_in_use` while an active subscription uses it."""
        return self._c._send(calls.delete_plan(plan_id), options)


class CreditPacks:
    def __init__(self, client: Vevee) -> None:
        self._c = client

    def list(
        self, *, include_archived: bool = False, options: RequestOptions | None = None
    ) -> Page[CreditPack]:
        return self._c._send(calls.list_packs(include_archived), options)

    def get(self, pack_id: str, *, options: RequestOptions | None = None) -> CreditPack:
        return self._c._send(calls.get_pack(pack_id), options)

    def create(
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
        return self._c._send(call, options)

    def upsert(
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
        return self._c._send(call, options)

    def archive(self, pack_id: str, *, options: RequestOptions | None = None) -> CreditPack:
        """Hides the pack from lists; it can still be granted."""
        return self._c._send(calls.archive_pack(pack_id), options)


class TestClockApi:
    """Test keys only (403 with a live key)."""

    __test__ = False  # not a pytest test class

    def __init__(self, client: Vevee) -> None:
        self._c = client

    def get(self, *, options: RequestOptions | None = None) -> TestClock:
        return self._c._send(calls.get_clock(), options)

    def advance(self, seconds: int, *, options: RequestOptions | None = None) -> TestClock:
        """Moves the app's test-mode clock forward: expiry, period resets and TTLs follow it."""
        return self._c._send(calls.advance_clock(seconds), options)


class WebhookEndpoints:
    """Where vevee POSTs events (API.md, "Webhooks out"), per mode: the key's. At most 16."""

    def __init__(self, client: Vevee) -> None:
        self._c = client

    def create(
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
        return self._c._send(call, options)

    def list(self, *, options: RequestOptions | None = None) -> Page[WebhookEndpoint]:
        """Every endpoint of the key's mode, oldest first, without secrets."""
        return self._c._send(calls.list_webhook_endpoints(), options)

    def retrieve(
        self, endpoint_id: str, *, options: RequestOptions | None = None
    ) -> WebhookEndpoint:
        """Without the secret; 404 `endpoint_not_found` (`VeveeNotFoundError`)."""
        return self._c._send(calls.get_webhook_endpoint(endpoint_id), options)

    get = retrieve

    def update(
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
        return self._c._send(call, options)

    def delete(
        self, endpoint_id: str, *, options: RequestOptions | None = None
    ) -> DeletedWebhookEndpoint:
        return self._c._send(calls.delete_webhook_endpoint(endpoint_id), options)

    def rotate_secret(
        self, endpoint_id: str, *, options: RequestOptions | None = None
    ) -> WebhookEndpointWithSecret:
        """A new `secret`; for 24 h the previous one signs too (two signatures), so receivers
        with either secret keep accepting while they switch."""
        return self._c._send(calls.rotate_webhook_secret(endpoint_id), options)


class Events:
    """The last 30 days' events of the key's mode, newest first, for apps that poll: the same
    dicts (`id`, `type`, `createdAt`, `mode`, `data`) that `verify_webhook` returns."""

    def __init__(self, client: Vevee) -> None:
        self._c = client

    def list(
        self,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        type: str | None = None,
        options: RequestOptions | None = None,
    ) -> Page[dict[str, Any]]:
        """One page (`limit` 1 to 100, default 50); `starting_after`: an event id, the page after
        it (older events); `type`: only events of that type."""
        return self._c._send(calls.events_page(limit, starting_after, type), options)

    def all(
        self,
        *,
        limit: int | None = None,
        starting_after: str | None = None,
        type: str | None = None,
        options: RequestOptions | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every event from there on, newest first, fetching `limit` per page as it goes."""
        after = starting_after
        while True:
            page = self.list(limit=limit, starting_after=after, type=type, options=options)
            yield from page.data
            if not page.has_more or not page.data:
                return
            after = page.data[-1]["id"]
