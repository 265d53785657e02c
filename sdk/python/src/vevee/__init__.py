"""vevee: the Python client for vevee's HTTP API v1 (usage metering and credit packs).

from vevee import Vevee, Denied
vevee = Vevee(api_key="sk_test_...")
try:
    with vevee.reservation(user_id, "image.dall-e-3", 1) as hold:
        image = provider.generate(prompt)       # raises: every unit is released
        hold.response = {"url": image.url}      # committed when the block ends
except Denied as denied:
    offer_upgrade() if "plan_exhausted" in denied.reasons else offer_credits()
"""

from ._async_client import AsyncVevee
from ._client import Vevee
from ._reservation import AsyncReservationHandle, ReservationHandle
from ._transport import RequestOptions, backoff, new_idempotency_key, parse_retry_after
from ._version import VERSION
from .batch import (
    BatchItem,
    BatchOp,
    BatchResult,
    CheckOp,
    CommitOp,
    ConsumeOp,
    ReleaseOp,
    ReserveOp,
)
from .errors import (
    Denied,
    VeveeAPIError,
    VeveeAuthenticationError,
    VeveeConfigurationError,
    VeveeConflictError,
    VeveeConnectionError,
    VeveeError,
    VeveeInternalError,
    VeveeInvalidRequestError,
    VeveeMethodNotAllowedError,
    VeveeNotFoundError,
    VeveePayloadTooLargeError,
    VeveePermissionError,
    VeveeRateLimitError,
    VeveeTimeoutError,
    VeveeUnavailableError,
    VeveeUnprocessableError,
    WebhookVerificationError,
    WebhookVerificationReason,
)
from .types import (
    Allocation,
    Available,
    Balance,
    CheckResult,
    Counter,
    CreditPack,
    DeletedPlan,
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
    ResponseInfo,
    Subscription,
    TestClock,
    Usage,
)
from .webhooks import WEBHOOK_EVENT_TYPES, verify_webhook

__all__ = [
    "VERSION",
    "WEBHOOK_EVENT_TYPES",
    "Allocation",
    "AsyncReservationHandle",
    "AsyncVevee",
    "Available",
    "Balance",
    "BatchItem",
    "BatchOp",
    "BatchResult",
    "CheckOp",
    "CheckResult",
    "CommitOp",
    "ConsumeOp",
    "Counter",
    "CreditPack",
    "DeletedPlan",
    "Denial",
    "Denied",
    "Grant",
    "LedgerEntry",
    "PackItem",
    "PackPrice",
    "Page",
    "Plan",
    "PlanLimit",
    "PlanPrice",
    "ReleaseOp",
    "RequestOptions",
    "Reservation",
    "ReservationHandle",
    "ReserveOp",
    "ReserveResult",
    "ResponseInfo",
    "Subscription",
    "TestClock",
    "Usage",
    "Vevee",
    "VeveeAPIError",
    "VeveeAuthenticationError",
    "VeveeConfigurationError",
    "VeveeConflictError",
    "VeveeConnectionError",
    "VeveeError",
    "VeveeInternalError",
    "VeveeInvalidRequestError",
    "VeveeMethodNotAllowedError",
    "VeveeNotFoundError",
    "VeveePayloadTooLargeError",
    "VeveePermissionError",
    "VeveeRateLimitError",
    "VeveeTimeoutError",
    "VeveeUnavailableError",
    "VeveeUnprocessableError",
    "WebhookVerificationError",
    "WebhookVerificationReason",
    "backoff",
    "new_idempotency_key",
    "parse_retry_after",
    "verify_webhook",
]
