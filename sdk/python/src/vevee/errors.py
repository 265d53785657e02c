"""Errors. Every failure the client raises is a `VeveeError`.

An API refusal (a non-2xx answer) is the subclass named by the answer's `error.type`; a request
that got no answer at all is a `VeveeConnectionError` (or its `VeveeTimeoutError`), whose `status`
is None. A denied reservation is not an error for `reserve` (it returns a `Denial` value); only the
`reservation()` context manager raises `Denied`, because its block must not run without a hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .types import Available


class VeveeError(Exception):
    """The base of every error this package raises."""

    #: The HTTP status; None when no answer came back.
    status: int | None
    #: `error.type` of the answer (`invalid_request`, `conflict`, ...), or `connection`,
    #: `timeout`, `configuration`, `denied`, `api_error`.
    type: str
    #: `error.code` of the answer, e.g. `reservation_not_pending`; the client's own code otherwise.
    code: str | None
    #: The request field at fault, when one is.
    param: str | None
    #: The server's `request-id` response header, to quote to support and find in the logs.
    request_id: str | None
    #: The decoded error body (or its text when it was not JSON), when there was one.
    body: Any

    def __init__(
        self,
        message: str,
        *,
        type: str,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.status = status
        self.code = code
        self.param = param
        self.request_id = request_id
        self.body = body
        self.headers: Mapping[str, str] = dict(headers or {})

    def __str__(self) -> str:
        parts = [self.message]
        details = [
            f"{name}={value}"
            for name, value in (
                ("status", self.status),
                ("type", self.type),
                ("code", self.code),
                ("param", self.param),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        if details:
            parts.append(f"({', '.join(details)})")
        return " ".join(parts)


class VeveeInvalidRequestError(VeveeError):
    """400 `invalid_request`: a field is missing or invalid (see `param`)."""


class VeveeAuthenticationError(VeveeError):
    """401 `authentication`: the API key is missing or unknown."""


class VeveePermissionError(VeveeError):
    """403 `permission`: e.g. a publishable key outside the catalog, a live key on the clock."""


class VeveeNotFoundError(VeveeError):
    """404 `not_found`."""


class VeveeMethodNotAllowedError(VeveeError):
    """405 `method_not_allowed`."""


class VeveeConflictError(VeveeError):
    """409 `conflict`: e.g. `reservation_not_pending`, `plan_in_use`, `idempotency_key_reused`."""


class VeveePayloadTooLargeError(VeveeError):
    """413 `payload_too_large`."""


class VeveeUnprocessableError(VeveeError):
    """422 `unprocessable`."""


class VeveeRateLimitError(VeveeError):
    """429 `rate_limited`, after the client's retries. `retry_after` is the server's, in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class VeveeInternalError(VeveeError):
    """500 `internal` (or another 5xx), after the client's retries."""


class VeveeUnavailableError(VeveeError):
    """503 `unavailable`: overloaded or not ready, nothing was applied; after the retries."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class VeveeAPIError(VeveeError):
    """An answer that fits no known type (e.g. an HTML page from a proxy, or a body not JSON)."""


class VeveeConnectionError(VeveeError):
    """No answer: the connection failed or was cut before an answer came back."""


class VeveeTimeoutError(VeveeConnectionError):
    """No answer within the timeout."""


class VeveeConfigurationError(VeveeError):
    """The client was set up or called in a way that cannot work (e.g. no API key, an empty id)."""


#: Why `verify_webhook` refused a request.
WebhookVerificationReason = Literal[
    "missing_header",  # webhook-id, webhook-timestamp or webhook-signature missing or empty
    "bad_timestamp",  # webhook-timestamp is not a whole number of Unix seconds
    "timestamp_out_of_tolerance",  # further from now than the tolerance: stale, or from the future
    "no_matching_signature",  # no v1 signature matches: a changed body, or another secret
    "bad_secret",  # the secret is not whsec_ + base64 (e.g. an API key was passed)
    "invalid_payload",  # not the raw body (str or bytes), or the signed body is not an event
]


class WebhookVerificationError(VeveeError):
    """`verify_webhook` refused the request: answer it with a 4xx and do not act on it.

    `reason` says why; `type` is `webhook_verification` and `code` is the reason too.
    """

    reason: WebhookVerificationReason

    def __init__(self, reason: WebhookVerificationReason, message: str | None = None) -> None:
        super().__init__(message or reason, type="webhook_verification", code=reason)
        self.reason = reason


class Denied(VeveeError):
    """The `reservation()` context manager could not hold the units: its block did not run.

    `reasons` says why (`plan_exhausted`: offer an upgrade; otherwise offer credits) and
    `available` what plan and credits could still give.
    """

    def __init__(
        self,
        *,
        user_id: str,
        model: str,
        amount: int,
        reasons: Sequence[str],
        available: Available,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            f"{user_id} may not use {amount} of {model}: {', '.join(reasons) or 'denied'}",
            type="denied",
            status=200,
            code=reasons[0] if reasons else "denied",
            request_id=request_id,
        )
        self.user_id = user_id
        self.model = model
        self.amount = amount
        self.reasons: list[str] = list(reasons)
        self.available = available


_BY_TYPE: dict[str, type[VeveeError]] = {
    "invalid_request": VeveeInvalidRequestError,
    "authentication": VeveeAuthenticationError,
    "permission": VeveePermissionError,
    "not_found": VeveeNotFoundError,
    "method_not_allowed": VeveeMethodNotAllowedError,
    "conflict": VeveeConflictError,
    "payload_too_large": VeveePayloadTooLargeError,
    "unprocessable": VeveeUnprocessableError,
    "rate_limited": VeveeRateLimitError,
    "internal": VeveeInternalError,
    "unavailable": VeveeUnavailableError,
}

# For an answer without an error body (a proxy's page, an empty 502): its type by status.
_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "unprocessable",
    429: "rate_limited",
    503: "unavailable",
}


def error_from_response(
    status: int,
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> VeveeError:
    """The error for a non-2xx answer, from its status and body (`{"error": {...}}`)."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        detail = {}

    def text(name: str) -> str | None:
        value = detail.get(name)
        return value if isinstance(value, str) else None

    kind = (
        text("type")
        or _TYPE_BY_STATUS.get(status)
        or ("internal" if status >= 500 else "api_error")
    )
    message = text("message") or f"vevee answered {status} without an error body"
    cls = _BY_TYPE.get(kind, VeveeAPIError)
    common: dict[str, Any] = {
        "type": kind,
        "status": status,
        "code": text("code"),
        "param": text("param"),
        "request_id": request_id,
        "body": body,
        "headers": headers,
    }
    if cls in (VeveeRateLimitError, VeveeUnavailableError):
        common["retry_after"] = retry_after
    return cls(message, **common)
