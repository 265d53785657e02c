"""Every call of API.md as a `Call`: method, path, body and the decoder of its answer.

Shared by the sync and the async client, which differ only in how they send a `Call`. Bodies carry
only what the caller gave (an omitted optional field is left out, so the server's default applies),
except where API.md gives `null` a meaning (a pack's `expiresInDays: null` never expires).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from ._decode import decode_as, decode_event_page, decode_page
from ._transport import Call
from .batch import BatchOp, BatchResult, decode_batch
from .errors import VeveeConfigurationError
from .types import (
    Balance,
    CheckResult,
    CreditPack,
    DeletedPlan,
    DeletedWebhookEndpoint,
    Denial,
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


def seg(value: str) -> str:
    """One path segment, escaped; an empty id would silently call another route."""
    if not isinstance(value, str) or value == "":
        raise VeveeConfigurationError(
            f"expected a non-empty id, got {value!r}", type="configuration", code="id_missing"
        )
    return quote(value, safe="")


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def reserve_result(data: Any) -> ReserveResult:
    """A reservation or a denial, told apart by `allowed`."""
    if isinstance(data, dict) and data.get("allowed") is False:
        return decode_as(Denial, data)
    return decode_as(Reservation, data)


def reserve(
    user_id: str, model: str, amount: int, ttl_seconds: int | None, metadata: Any
) -> Call[ReserveResult]:
    body = {"userId": user_id, "model": model, "amount": amount}
    body.update(_given(ttlSeconds=ttl_seconds, metadata=metadata))
    return Call("POST", "/v1/reservations", reserve_result, body=body)


def consume(user_id: str, model: str, amount: int, metadata: Any) -> Call[ReserveResult]:
    body = {"userId": user_id, "model": model, "amount": amount}
    body.update(_given(metadata=metadata))
    return Call("POST", "/v1/consume", reserve_result, body=body)


def check(user_id: str, model: str, amount: int) -> Call[CheckResult]:
    body = {"userId": user_id, "model": model, "amount": amount}
    return Call("POST", "/v1/check", lambda d: decode_as(CheckResult, d), body=body)


def commit(reservation_id: str, amount: int | None, response: Any) -> Call[Reservation]:
    path = f"/v1/reservations/{seg(reservation_id)}/commit"
    body = _given(amount=amount, response=response)
    return Call("POST", path, lambda d: decode_as(Reservation, d), body=body)


def release(reservation_id: str, error_code: str | None) -> Call[Reservation]:
    path = f"/v1/reservations/{seg(reservation_id)}/release"
    body = _given(errorCode=error_code)
    return Call("POST", path, lambda d: decode_as(Reservation, d), body=body)


def get_reservation(reservation_id: str) -> Call[Reservation]:
    path = f"/v1/reservations/{seg(reservation_id)}"
    return Call("GET", path, lambda d: decode_as(Reservation, d))


def batch(operations: Sequence[BatchOp]) -> Call[BatchResult]:
    ops = list(operations)
    body = {"operations": [op.to_json() for op in ops]}
    return Call("POST", "/v1/batch", lambda d: decode_batch(ops, d), body=body)


def usage(user_id: str, match: str | None) -> Call[Usage]:
    path = f"/v1/users/{seg(user_id)}/usage"
    return Call("GET", path, lambda d: decode_as(Usage, d), query={"match": match})


def ledger_page(
    user_id: str, limit: int | None, starting_after: str | None
) -> Call[Page[LedgerEntry]]:
    path = f"/v1/users/{seg(user_id)}/ledger"
    query = {"limit": limit, "startingAfter": starting_after}
    return Call("GET", path, lambda d: decode_page(LedgerEntry, d), query=query)


# --- Subscriptions -----------------------------------------------------------------------------


def _subscription(d: Any) -> Subscription:
    return decode_as(Subscription, d)


def get_subscription(user_id: str) -> Call[Subscription]:
    return Call("GET", f"/v1/users/{seg(user_id)}/subscription", _subscription)


def upsert_subscription(user_id: str, plan_id: str) -> Call[Subscription]:
    path = f"/v1/users/{seg(user_id)}/subscription"
    return Call("PUT", path, _subscription, body={"planId": plan_id})


def cancel_subscription(user_id: str) -> Call[Subscription]:
    return Call("DELETE", f"/v1/users/{seg(user_id)}/subscription", _subscription)


# --- Credits -----------------------------------------------------------------------------------


def _timestamp(value: str | dt.datetime) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise VeveeConfigurationError(
            "expires_at needs a timezone (e.g. datetime.now(timezone.utc)): a naive datetime "
            "could be read in the wrong zone",
            type="configuration",
            code="naive_datetime",
        )
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def grant(
    user_id: str,
    pack_id: str,
    external_ref: str,
    source: str,
    notes: str | None,
    expires_at: str | dt.datetime | None,
) -> Call[Grant]:
    body: dict[str, Any] = {
        "userId": user_id,
        "packId": pack_id,
        "externalRef": external_ref,
        "source": source,
    }
    body.update(_given(notes=notes))
    if expires_at is not None:
        body["expiresAt"] = _timestamp(expires_at)
    return Call("POST", "/v1/credits/grants", lambda d: decode_as(Grant, d), body=body)


def revoke(balance_id: str, reason: str) -> Call[Balance]:
    path = f"/v1/credits/balances/{seg(balance_id)}/revoke"
    return Call("POST", path, lambda d: decode_as(Balance, d), body={"reason": reason})


def get_balance(balance_id: str) -> Call[Balance]:
    path = f"/v1/credits/balances/{seg(balance_id)}"
    return Call("GET", path, lambda d: decode_as(Balance, d))


# --- Catalog -----------------------------------------------------------------------------------


def _plan(d: Any) -> Plan:
    return decode_as(Plan, d)


def _plan_body(
    plan_id: str, name: str, price: PlanPrice | None, limits: Sequence[PlanLimit]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": plan_id,
        "name": name,
        "limits": [
            {
                "id": limit.id,
                "name": limit.name,
                "match": list(limit.match),
                "limit": limit.limit,
                "unit": limit.unit,
                "period": limit.period,
            }
            for limit in limits
        ],
    }
    if price is not None:
        body["price"] = {
            "amount": price.amount,
            "currency": price.currency,
            "interval": price.interval,
        }
    return body


def list_plans() -> Call[Page[Plan]]:
    return Call("GET", "/v1/plans", lambda d: decode_page(Plan, d))


def get_plan(plan_id: str) -> Call[Plan]:
    return Call("GET", f"/v1/plans/{seg(plan_id)}", _plan)


def create_plan(
    plan_id: str, name: str, price: PlanPrice | None, limits: Sequence[PlanLimit]
) -> Call[Plan]:
    body = _plan_body(plan_id, name, price, limits)
    return Call("POST", "/v1/plans", _plan, body=body)


def upsert_plan(
    plan_id: str, name: str, price: PlanPrice | None, limits: Sequence[PlanLimit]
) -> Call[Plan]:
    body = _plan_body(plan_id, name, price, limits)
    return Call("PUT", f"/v1/plans/{seg(plan_id)}", _plan, body=body)


def delete_plan(plan_id: str) -> Call[DeletedPlan]:
    return Call("DELETE", f"/v1/plans/{seg(plan_id)}", lambda d: decode_as(DeletedPlan, d))


def _pack(d: Any) -> CreditPack:
    return decode_as(CreditPack, d)


def _pack_body(
    pack_id: str,
    name: str,
    items: Sequence[PackItem],
    price: PackPrice | None,
    expires_in_days: int | None,
    stripe_price_id: str | None,
    archived: bool | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": pack_id,
        "name": name,
        "items": [
            {"match": i.match, "amount": i.amount, "unit": i.unit}
            | _given(id=i.id, lowBalanceThreshold=i.low_balance_threshold)
            for i in items
        ],
        # `null` is meaningful: the pack's balances never expire.
        "expiresInDays": expires_in_days,
        "stripePriceId": stripe_price_id,
    }
    if price is not None:
        body["price"] = {"amount": price.amount, "currency": price.currency}
    if archived is not None:
        body["archived"] = archived
    return body


def list_packs(include_archived: bool) -> Call[Page[CreditPack]]:
    query = {"includeArchived": "true" if include_archived else None}
    return Call("GET", "/v1/credit-packs", lambda d: decode_page(CreditPack, d), query=query)


def get_pack(pack_id: str) -> Call[CreditPack]:
    return Call("GET", f"/v1/credit-packs/{seg(pack_id)}", _pack)


def create_pack(
    pack_id: str,
    name: str,
    items: Sequence[PackItem],
    price: PackPrice | None,
    expires_in_days: int | None,
    stripe_price_id: str | None,
    archived: bool | None,
) -> Call[CreditPack]:
    body = _pack_body(pack_id, name, items, price, expires_in_days, stripe_price_id, archived)
    return Call("POST", "/v1/credit-packs", _pack, body=body)


def upsert_pack(
    pack_id: str,
    name: str,
    items: Sequence[PackItem],
    price: PackPrice | None,
    expires_in_days: int | None,
    stripe_price_id: str | None,
    archived: bool | None,
) -> Call[CreditPack]:
    body = _pack_body(pack_id, name, items, price, expires_in_days, stripe_price_id, archived)
    return Call("PUT", f"/v1/credit-packs/{seg(pack_id)}", _pack, body=body)


def archive_pack(pack_id: str) -> Call[CreditPack]:
    return Call("POST", f"/v1/credit-packs/{seg(pack_id)}/archive", _pack)


# --- Webhooks out ------------------------------------------------------------------------------


class Unset(enum.Enum):
    """The default of an update's field that may also be set to None: leave it as it is."""

    UNSET = "UNSET"


UNSET = Unset.UNSET


def _endpoint(d: Any) -> WebhookEndpoint:
    return decode_as(WebhookEndpoint, d)


def _endpoint_path(endpoint_id: str) -> str:
    return f"/v1/webhook-endpoints/{seg(endpoint_id)}"


def _endpoint_with_secret(d: Any) -> WebhookEndpointWithSecret:
    return decode_as(WebhookEndpointWithSecret, d)


def create_webhook_endpoint(
    url: str, events: Sequence[str], description: str | None
) -> Call[WebhookEndpointWithSecret]:
    if isinstance(events, str):
        # A bare string would be sent as its characters' list: a caller's slip worth naming.
        raise VeveeConfigurationError(
            f"events must be a list of event types, e.g. [{events!r}]",
            type="configuration",
            code="invalid_option",
        )
    body: dict[str, Any] = {"url": url, "events": list(events)}
    body.update(_given(description=description))
    return Call("POST", "/v1/webhook-endpoints", _endpoint_with_secret, body=body)


def list_webhook_endpoints() -> Call[Page[WebhookEndpoint]]:
    return Call("GET", "/v1/webhook-endpoints", lambda d: decode_page(WebhookEndpoint, d))


def get_webhook_endpoint(endpoint_id: str) -> Call[WebhookEndpoint]:
    return Call("GET", _endpoint_path(endpoint_id), _endpoint)


def update_webhook_endpoint(
    endpoint_id: str,
    url: str | None,
    events: Sequence[str] | None,
    description: str | Unset | None,
    enabled: bool | None,
) -> Call[WebhookEndpoint]:
    if isinstance(events, str):
        raise VeveeConfigurationError(
            f"events must be a list of event types, e.g. [{events!r}]",
            type="configuration",
            code="invalid_option",
        )
    body = _given(url=url, events=None if events is None else list(events), enabled=enabled)
    if description is not UNSET:
        # None is meaningful here: it removes the description.
        body["description"] = description
    return Call("PATCH", _endpoint_path(endpoint_id), _endpoint, body=body)


def delete_webhook_endpoint(endpoint_id: str) -> Call[DeletedWebhookEndpoint]:
    path = _endpoint_path(endpoint_id)
    return Call("DELETE", path, lambda d: decode_as(DeletedWebhookEndpoint, d))


def rotate_webhook_secret(endpoint_id: str) -> Call[WebhookEndpointWithSecret]:
    path = f"{_endpoint_path(endpoint_id)}/rotate-secret"
    return Call("POST", path, _endpoint_with_secret, body={})


def events_page(
    limit: int | None, starting_after: str | None, type: str | None
) -> Call[Page[dict[str, Any]]]:
    query = {"limit": limit, "startingAfter": starting_after, "type": type}
    return Call("GET", "/v1/events", decode_event_page, query=query)


# --- Test clock --------------------------------------------------------------------------------


def _clock(d: Any) -> TestClock:
    return decode_as(TestClock, d)


def get_clock() -> Call[TestClock]:
    return Call("GET", "/v1/test/clock", _clock)


def advance_clock(seconds: int) -> Call[TestClock]:
    return Call("POST", "/v1/test/clock/advance", _clock, body={"seconds": seconds})


def raw(method: str, path: str, query: dict[str, Any] | None, body: Any) -> Call[Any]:
    """Any other call of the API, with the same auth, retries and idempotency keys."""
    if not path.startswith("/"):
        path = "/" + path
    return Call(method.upper(), path, lambda d: d, query=query, body=body)
