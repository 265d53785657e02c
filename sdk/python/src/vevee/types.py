"""The shapes of vevee's HTTP API v1 (API.md) as frozen dataclasses with snake_case fields.

Amounts are `int`. Timestamps are RFC 3339 UTC strings as the server sends them
(`2026-11-22T21:40:00Z`), so that nothing is lost or reformatted on the way through. Fields the
server adds later are ignored, fields it omits take their default: the API only grows.

The annotations are spelled for Python 3.9 (`Optional`, no `from __future__ import annotations`)
because the decoder in `_decode` evaluates them at run time.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Optional, TypeVar, Union

T = TypeVar("T")


@dataclass(frozen=True)
class ResponseInfo:
    """What came back with an answer, besides its body."""

    status: int
    #: The server's `request-id` header.
    request_id: Optional[str]
    #: The key sent with a POST; None for other methods.
    idempotency_key: Optional[str]
    #: The server replayed a stored answer (`Idempotent-Replayed: true`).
    idempotent_replayed: bool
    #: How many attempts it took: 1 when the first one answered.
    attempts: int
    headers: Mapping[str, str]


class ApiObject:
    """The base of every answer the client returns: `last_response` tells how it came back."""

    @property
    def last_response(self) -> Optional[ResponseInfo]:
        """Set on the object a method returned (not on the objects nested in it)."""
        info: Optional[ResponseInfo] = self.__dict__.get("_last_response")
        return info


Period = Literal["lifetime", "day", "week", "month", "year"]
BalanceStatus = Literal["active", "expired", "revoked"]
GrantSource = Literal["purchase", "grant", "adjustment"]
ReservationStatus = Literal["pending", "committed", "released", "expired"]
#: Why a reserve, consume or check was refused (API.md "The matcher"). Plain strings: a later
#: server may add reasons.
DenialReason = str


@dataclass(frozen=True)
class Page(ApiObject, Generic[T]):
    """`{"data": [...], "hasMore": false}`."""

    data: list[T]
    has_more: bool


# --- Catalog -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanPrice(ApiObject):
    #: In the currency's smallest unit; 0 for a free plan.
    amount: int
    currency: str
    #: None for a free plan.
    interval: Optional[Literal["month", "year"]] = None


@dataclass(frozen=True)
class PlanLimit(ApiObject):
    id: str
    name: str
    #: Match patterns: a model key, `category.*`, or `*`.
    match: list[str]
    limit: int
    unit: str
    period: Period


@dataclass(frozen=True)
class Plan(ApiObject):
    id: str
    name: str
    price: PlanPrice
    limits: list[PlanLimit]
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class DeletedPlan(ApiObject):
    id: str
    deleted: bool


@dataclass(frozen=True)
class PackPrice(ApiObject):
    amount: int
    currency: str


@dataclass(frozen=True)
class PackItem(ApiObject):
    """One item of a credit pack. To create one, `id` may be None (the server generates it)."""

    match: str
    amount: int
    unit: str
    id: Optional[str] = None
    #: The granted balance sends `credits.low` when its `remaining` drops to this or below.
    low_balance_threshold: Optional[int] = None


@dataclass(frozen=True)
class CreditPack(ApiObject):
    id: str
    name: str
    price: PackPrice
    #: None: the pack's balances never expire.
    expires_in_days: Optional[int]
    stripe_price_id: Optional[str]
    archived: bool
    items: list[PackItem]
    created_at: str
    updated_at: str


# --- Subscriptions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription(ApiObject):
    user_id: str
    plan_id: str
    status: Literal["active", "canceled"]
    current_period_start: Optional[str] = None
    created_at: Optional[str] = None


# --- Credits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Balance(ApiObject):
    id: str
    user_id: str
    pack_id: str
    pack_item_id: str
    match: str
    unit: str
    granted: int
    #: What can be spent now.
    remaining: int
    #: Held by pending reservations.
    reserved: int
    status: BalanceStatus
    source: GrantSource
    external_ref: str
    notes: Optional[str]
    expires_at: Optional[str]
    created_at: str


@dataclass(frozen=True)
class Grant(ApiObject):
    user_id: str
    pack_id: str
    external_ref: str
    #: False on a repeat of (user, pack, external_ref): nothing was granted, `balances` are the
    #: first grant's.
    created: bool
    #: One per pack item, in item order.
    balances: list[Balance]


# --- Reservations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation(ApiObject):
    """Where units of a reservation come from: `source` "plan" (with `limit_id`) or "credits"
    (with `balance_id`)."""

    source: Literal["plan", "credits"]
    amount: int
    limit_id: Optional[str] = None
    balance_id: Optional[str] = None


@dataclass(frozen=True)
class Available(ApiObject):
    """What the plan and the credits could still give for the model."""

    plan: int
    credits: int


@dataclass(frozen=True)
class Reservation(ApiObject):
    """A hold on a user's quota and credits: what an allowed `reserve` or `consume` returns."""

    reservation_id: str
    allowed: Literal[True]
    status: ReservationStatus
    user_id: str
    model: str
    amount: int
    allocations: list[Allocation]
    expires_at: str
    created_at: Optional[str] = None
    reasons: list[DenialReason] = field(default_factory=list)
    metadata: Any = None
    #: None until committed.
    committed_amount: Optional[int] = None
    response: Any = None
    error_code: Optional[str] = None


@dataclass(frozen=True)
class Denial(ApiObject):
    """A refusal of `reserve` or `consume`: nothing was held. A value, not an exception."""

    allowed: Literal[False]
    reasons: list[DenialReason]
    available: Available
    reservation_id: None = None


#: What `reserve` and `consume` return: test `.allowed` to tell which.
ReserveResult = Union[Reservation, Denial]


@dataclass(frozen=True)
class CheckResult(ApiObject):
    """`POST /v1/check`: what a reserve would do now, holding nothing."""

    allowed: bool
    reasons: list[DenialReason]
    allocations: list[Allocation]
    available: Available

    def __bool__(self) -> bool:
        return self.allowed


# --- Usage and ledger --------------------------------------------------------------------------


@dataclass(frozen=True)
class Counter(ApiObject):
    plan_id: str
    limit_id: str
    name: str
    match: list[str]
    unit: str
    period: Period
    limit: int
    used: int
    reserved: int
    remaining: int
    period_start: Optional[str] = None
    resets_at: Optional[str] = None


@dataclass(frozen=True)
class Usage(ApiObject):
    user_id: str
    #: None without an active subscription.
    subscription: Optional[Subscription]
    #: The current plan's counters; empty with no active subscription.
    counters: list[Counter]
    #: The active balances.
    credits: list[Balance]


LedgerEntryType = Literal[
    "credits.granted",
    "credits.revoked",
    "credits.expired",
    "usage.reserved",
    "usage.committed",
    "usage.released",
    "usage.expired",
    "subscription.updated",
    "subscription.canceled",
]


@dataclass(frozen=True)
class LedgerEntry(ApiObject):
    id: str
    at: str
    #: One of `LedgerEntryType`; a plain string so that a later server's new types still decode.
    type: str
    user_id: str
    amount: Optional[int] = None
    balance_id: Optional[str] = None
    pack_id: Optional[str] = None
    limit_id: Optional[str] = None
    reservation_id: Optional[str] = None
    allocations: Optional[list[Allocation]] = None
    external_ref: Optional[str] = None
    source: Optional[str] = None
    reason: Optional[str] = None
    notes: Optional[str] = None
    plan_id: Optional[str] = None


# --- Webhooks out ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookEndpoint(ApiObject):
    """Where vevee POSTs the events of one mode (the key's). Without its secret: see
    `WebhookEndpointWithSecret`."""

    #: `we_...`.
    id: str
    url: str
    #: Event types (`WEBHOOK_EVENT_TYPES`), or `["*"]` for every type.
    events: list[str]
    description: Optional[str]
    #: False once disabled by an update, or by the server after 24 h of failed deliveries.
    enabled: bool
    created_at: str


@dataclass(frozen=True)
class WebhookEndpointWithSecret(WebhookEndpoint):
    """What `create` and `rotate_secret` return: the only answers with the signing secret."""

    #: `whsec_...`, for `verify_webhook`. Keep it: no other answer shows it again.
    secret: str


@dataclass(frozen=True)
class DeletedWebhookEndpoint(ApiObject):
    id: str
    deleted: bool


# --- Test clock --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestClock(ApiObject):
    __test__ = False  # not a pytest test class

    now: str
