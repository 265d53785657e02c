"""`with client.reservation(user_id, model, amount) as r:` and its `async with` twin.

The block runs only with the units held: a denial raises `Denied` before it starts. A block that
ends normally commits (all of it, or what `r.commit(amount=...)` already committed inside it); a
block that raises releases every unit with the exception's class name as the error code, then the
exception goes on. A failed release is logged, not raised, so that it cannot hide the block's own
exception; the server releases the hold at its TTL anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable

from .errors import Denied, VeveeError
from .types import Denial, Reservation, ReserveResult

if TYPE_CHECKING:
    from ._async_client import AsyncVevee
    from ._client import Vevee

log = logging.getLogger("vevee")


def _held(result: ReserveResult, user_id: str, model: str, amount: int) -> Reservation:
    if isinstance(result, Denial):
        info = result.last_response
        raise Denied(
            user_id=user_id,
            model=model,
            amount=amount,
            reasons=result.reasons,
            available=result.available,
            request_id=info.request_id if info else None,
        )
    return result


def error_code_of(exc: BaseException) -> str:
    """What a failed block's release records as `errorCode`: the exception's class name."""
    return type(exc).__name__


class ReservationHandle:
    """The hold of a `with client.reservation(...)` block."""

    def __init__(self, client: Vevee, reservation: Reservation) -> None:
        self._client = client
        #: The reservation as reserved (or as last committed or released through this handle).
        self.reservation = reservation
        #: Sent with the commit at the end of the block, e.g. the provider's answer.
        self.response: Any = None
        self.settled = False

    @property
    def id(self) -> str:
        return self.reservation.reservation_id

    def commit(self, amount: int | None = None, *, response: Any = None) -> Reservation:
        """Commits now (`amount` below the reserved one gives the rest back); the end of the
        block then commits nothing more."""
        self.reservation = self._client.commit(
            self.id, amount=amount, response=response if response is not None else self.response
        )
        self.settled = True
        return self.reservation

    def release(self, error_code: str | None = None) -> Reservation:
        """Gives every unit back now; the end of the block then does nothing."""
        self.reservation = self._client.release(self.id, error_code=error_code)
        self.settled = True
        return self.reservation


class ReservationContext:
    def __init__(
        self,
        client: Vevee,
        reserve: Callable[[], ReserveResult],
        user_id: str,
        model: str,
        amount: int,
    ) -> None:
        self._client = client
        self._reserve = reserve
        self._what = (user_id, model, amount)
        self._handle: ReservationHandle | None = None

    def __enter__(self) -> ReservationHandle:
        held = _held(self._reserve(), *self._what)
        self._handle = ReservationHandle(self._client, held)
        return self._handle

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        handle = self._handle
        if handle is None or handle.settled:
            return
        if exc is None:
            handle.commit()
            return
        try:
            handle.release(error_code_of(exc))
        except VeveeError as failure:
            log.warning("could not release %s after %r: %s", handle.id, exc, failure)


class AsyncReservationHandle:
    """The hold of an `async with client.reservation(...)` block."""

    def __init__(self, client: AsyncVevee, reservation: Reservation) -> None:
        self._client = client
        self.reservation = reservation
        self.response: Any = None
        self.settled = False

    @property
    def id(self) -> str:
        return self.reservation.reservation_id

    async def commit(self, amount: int | None = None, *, response: Any = None) -> Reservation:
        """Commits now (`amount` below the reserved one gives the rest back); the end of the
        block then commits nothing more."""
        self.reservation = await self._client.commit(
            self.id, amount=amount, response=response if response is not None else self.response
        )
        self.settled = True
        return self.reservation

    async def release(self, error_code: str | None = None) -> Reservation:
        """Gives every unit back now; the end of the block then does nothing."""
        self.reservation = await self._client.release(self.id, error_code=error_code)
        self.settled = True
        return self.reservation


class AsyncReservationContext:
    def __init__(
        self,
        client: AsyncVevee,
        reserve: Callable[[], Awaitable[ReserveResult]],
        user_id: str,
        model: str,
        amount: int,
    ) -> None:
        self._client = client
        self._reserve = reserve
        self._what = (user_id, model, amount)
        self._handle: AsyncReservationHandle | None = None

    async def __aenter__(self) -> AsyncReservationHandle:
        held = _held(await self._reserve(), *self._what)
        self._handle = AsyncReservationHandle(self._client, held)
        return self._handle

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        handle = self._handle
        if handle is None or handle.settled:
            return
        if exc is None:
            await handle.commit()
            return
        try:
            await handle.release(error_code_of(exc))
        except VeveeError as failure:
            log.warning("could not release %s after %r: %s", handle.id, exc, failure)
