"""`POST /v1/batch`: up to 1000 reservation calls in one request (API.md "Batch").

Operations are independent: each result is what the single call would have answered, an answer in
its own slot, so one refused operation raises nothing; look at `item.error`, or call
`item.unwrap()` to raise it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

from ._decode import decode_as
from .errors import VeveeAPIError, VeveeError, error_from_response
from .types import ApiObject, CheckResult, Denial, Reservation

#: The most operations one batch may carry.
MAX_OPERATIONS = 1000


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class ReserveOp:
    user_id: str
    model: str
    amount: int
    ttl_seconds: int | None = None
    metadata: Any = None

    def to_json(self) -> dict[str, Any]:
        head = {"op": "reserve", "userId": self.user_id, "model": self.model, "amount": self.amount}
        return head | _given(ttlSeconds=self.ttl_seconds, metadata=self.metadata)


@dataclass(frozen=True)
class ConsumeOp:
    user_id: str
    model: str
    amount: int
    metadata: Any = None

    def to_json(self) -> dict[str, Any]:
        head = {"op": "consume", "userId": self.user_id, "model": self.model, "amount": self.amount}
        return head | _given(metadata=self.metadata)


@dataclass(frozen=True)
class CheckOp:
    user_id: str
    model: str
    amount: int

    def to_json(self) -> dict[str, Any]:
        return {"op": "check", "userId": self.user_id, "model": self.model, "amount": self.amount}


@dataclass(frozen=True)
class CommitOp:
    reservation_id: str
    amount: int | None = None
    response: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"op": "commit", "reservationId": self.reservation_id} | _given(
            amount=self.amount, response=self.response
        )


@dataclass(frozen=True)
class ReleaseOp:
    reservation_id: str
    error_code: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"op": "release", "reservationId": self.reservation_id} | _given(
            errorCode=self.error_code
        )


BatchOp = Union[ReserveOp, ConsumeOp, CheckOp, CommitOp, ReleaseOp]
#: What a successful operation answers: a reserve or consume gives a `Reservation` or a `Denial`,
#: a check a `CheckResult`, a commit or release the `Reservation`.
BatchValue = Union[Reservation, Denial, CheckResult]


@dataclass(frozen=True)
class BatchItem:
    """The answer to one operation of a batch."""

    op: BatchOp
    #: The HTTP status the single call would have answered.
    status: int
    #: Its decoded body, as sent.
    body: Any
    #: The decoded answer of a 2xx, else None.
    value: BatchValue | None
    #: The typed error of anything else, else None.
    error: VeveeError | None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> BatchValue:
        """The value, or raise the operation's error."""
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


@dataclass(frozen=True)
class BatchResult(ApiObject):
    #: One per operation, in the order of the operations.
    results: list[BatchItem]

    def __iter__(self) -> Iterator[BatchItem]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> BatchItem:
        return self.results[index]


def _value(op: BatchOp, body: Any) -> BatchValue:
    if isinstance(op, CheckOp):
        return decode_as(CheckResult, body)
    if isinstance(body, dict) and body.get("allowed") is False:
        return decode_as(Denial, body)
    return decode_as(Reservation, body)


def decode_batch(ops: Sequence[BatchOp], data: Any) -> BatchResult:
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list) or len(results) != len(ops):
        raise VeveeAPIError(
            f"vevee's batch answer does not have one result per operation ({len(ops)})",
            type="api_error",
            code="unexpected_answer",
            body=data,
        )
    items = []
    for i, (op, result) in enumerate(zip(ops, results)):
        if not isinstance(result, dict) or not isinstance(result.get("status"), int):
            raise VeveeAPIError(
                f"vevee's batch answer has a malformed result {i}: {result!r}",
                type="api_error",
                code="unexpected_answer",
                body=data,
            )
        status: int = result["status"]
        body = result.get("body")
        if 200 <= status < 300:
            items.append(BatchItem(op, status, body, _value(op, body), None))
        else:
            items.append(BatchItem(op, status, body, None, error_from_response(status, body)))
    return BatchResult(items)
