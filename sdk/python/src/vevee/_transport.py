"""One logical call to vevee, with retries: the policy, and its sync and async loops.

A call is retried when no answer came back (connection refused or cut, timeout), on 429 (after
`Retry-After` when the server sends one), on 5xx (503 `unavailable` included), and on 409
`idempotency_key_in_use` (the first attempt is still running on the server). The wait between
attempts grows exponentially from `initial_retry_delay`, is capped at `max_retry_delay`, and is half
jittered so that many workers do not retry in step.

Retrying a POST is safe because every POST carries an `Idempotency-Key` made once per logical call
and sent unchanged, with the very same body bytes, on every attempt: the server runs it at most once
and replays its answer to the retries (`Idempotent-Replayed: true`). A retried reserve holds once.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

import httpx

from .errors import (
    VeveeAPIError,
    VeveeConnectionError,
    VeveeError,
    VeveeRateLimitError,
    VeveeTimeoutError,
    VeveeUnavailableError,
    error_from_response,
)
from .types import ApiObject, ResponseInfo

T = TypeVar("T")


@dataclass(frozen=True)
class RequestOptions:
    """Per-call settings, the `options=` argument of every client method."""

    #: For a POST: the key to send instead of a generated one (e.g. your job's id), so that a
    #: retry of the whole job after a crash is not applied twice either.
    idempotency_key: str | None = None
    #: Seconds per attempt, instead of the client's `timeout`.
    timeout: float | None = None
    #: Retries after the first attempt, instead of the client's `max_retries`.
    max_retries: int | None = None


@dataclass(frozen=True)
class Settings:
    api_key: str
    base_url: str
    timeout: float
    max_retries: int
    initial_retry_delay: float
    max_retry_delay: float
    #: A `Retry-After` longer than this is not waited for: the error is raised at once.
    max_retry_after: float
    user_agent: str


@dataclass(frozen=True)
class Call(Generic[T]):
    """What one method of the client sends, and how its answer becomes a `T`."""

    method: str
    path: str
    decode: Callable[[Any], T]
    query: Mapping[str, Any] | None = None
    body: Any = None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A `Retry-After` value (seconds, or an HTTP date) in seconds, or None."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    try:
        at = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if at is None:
        return None
    return max(0.0, at.timestamp() - (time.time() if now is None else now))


def backoff(
    retry: int, initial: float, maximum: float, rand: Callable[[], float] = random.random
) -> float:
    """The wait before retry number `retry` (0 for the first): capped exponential, half jittered."""
    ceiling = min(maximum, initial * 2.0**retry)
    return ceiling / 2 + rand() * (ceiling / 2)


def new_idempotency_key() -> str:
    return f"vv_{uuid.uuid4()}"


class _Prepared(Generic[T]):
    """A call made ready to send: URL, headers and body bytes fixed once for every attempt."""

    def __init__(self, settings: Settings, call: Call[T], options: RequestOptions | None):
        options = options or RequestOptions()
        self.settings = settings
        self.call = call
        self.url = settings.base_url + call.path
        self.params = _query(call.query)
        self.timeout = options.timeout if options.timeout is not None else settings.timeout
        self.max_retries = (
            options.max_retries if options.max_retries is not None else settings.max_retries
        )
        self.headers = {
            "Accept": "application/json",
            "Authorization": f"Bearer {settings.api_key}",
            "User-Agent": settings.user_agent,
        }
        self.content: bytes | None = None
        if call.method != "GET":
            body = {} if call.body is None else call.body
            self.content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            self.headers["Content-Type"] = "application/json"
        self.idempotency_key: str | None = None
        if call.method == "POST":
            self.idempotency_key = options.idempotency_key or new_idempotency_key()
            self.headers["Idempotency-Key"] = self.idempotency_key

    def finish(self, response: httpx.Response, attempt: int) -> T:
        """The decoded answer of a 2xx; raises the `VeveeError` of anything else."""
        request_id = response.headers.get("request-id")
        data = _json(response.content)
        if response.is_success:
            if data is _NOT_JSON:
                raise VeveeAPIError(
                    f"vevee answered {response.status_code} with a body that is not JSON",
                    type="api_error",
                    status=response.status_code,
                    request_id=request_id,
                    body=response.text,
                    headers=response.headers,
                )
            result = self.call.decode(data)
            if isinstance(result, ApiObject):
                info = ResponseInfo(
                    status=response.status_code,
                    request_id=request_id,
                    idempotency_key=self.idempotency_key,
                    idempotent_replayed=response.headers.get("idempotent-replayed") == "true",
                    attempts=attempt,
                    headers=dict(response.headers),
                )
                object.__setattr__(result, "_last_response", info)
            return result
        raise error_from_response(
            response.status_code,
            response.text if data is _NOT_JSON else data,
            headers=response.headers,
            request_id=request_id,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )

    def retry_delay(self, error: VeveeError, attempt: int) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to raise `error` now."""
        s = self.settings
        if attempt > self.max_retries:
            return None
        if isinstance(error, VeveeConnectionError):
            return backoff(attempt - 1, s.initial_retry_delay, s.max_retry_delay)
        status = error.status
        retryable = status is not None and (
            status == 429
            or status >= 500
            or (status == 409 and error.code == "idempotency_key_in_use")
        )
        if not retryable:
            return None
        retry_after = (
            error.retry_after
            if isinstance(error, (VeveeRateLimitError, VeveeUnavailableError))
            else None
        )
        if retry_after is not None:
            return retry_after if retry_after <= s.max_retry_after else None
        return backoff(attempt - 1, s.initial_retry_delay, s.max_retry_delay)

    def failure(self, exc: httpx.TransportError, attempts: int) -> tuple[VeveeError, bool]:
        """The error for an attempt that got no answer, and whether another attempt may help
        (not for a malformed URL or an unsupported scheme)."""
        where = f"{self.call.method} {self.call.path}"
        tries = f"{attempts} attempt{'' if attempts == 1 else 's'}"
        if isinstance(exc, httpx.TimeoutException):
            timeout = VeveeTimeoutError(
                f"no answer from vevee within {self.timeout} s ({where}, {tries})",
                type="timeout",
                code="timeout",
            )
            return timeout, True
        retryable = isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError))
        error = VeveeConnectionError(
            f"could not reach vevee at {self.settings.base_url} ({where}, {tries}): "
            f"{type(exc).__name__}: {exc}",
            type="connection",
            code="connection_failed",
        )
        return error, retryable


class SyncTransport:
    """Sends calls over one pooled `httpx.Client`."""

    def __init__(self, settings: Settings, http_client: httpx.Client | None) -> None:
        self.settings = settings
        self._owns_client = http_client is None
        self._client = http_client or httpx.Client(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def send(self, call: Call[T], options: RequestOptions | None = None) -> T:
        p = _Prepared(self.settings, call, options)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._client.request(
                    call.method,
                    p.url,
                    params=p.params,
                    content=p.content,
                    headers=p.headers,
                    timeout=p.timeout,
                )
                return p.finish(response, attempt)
            except VeveeError as error:
                delay = p.retry_delay(error, attempt)
                if delay is None:
                    raise
            except httpx.TransportError as exc:
                failure, retryable = p.failure(exc, attempt)
                delay = p.retry_delay(failure, attempt) if retryable else None
                if delay is None:
                    raise failure from exc
            time.sleep(delay)


class AsyncTransport:
    """Sends calls over one pooled `httpx.AsyncClient`."""

    def __init__(self, settings: Settings, http_client: httpx.AsyncClient | None) -> None:
        self.settings = settings
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def send(self, call: Call[T], options: RequestOptions | None = None) -> T:
        p = _Prepared(self.settings, call, options)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._client.request(
                    call.method,
                    p.url,
                    params=p.params,
                    content=p.content,
                    headers=p.headers,
                    timeout=p.timeout,
                )
                return p.finish(response, attempt)
            except VeveeError as error:
                delay = p.retry_delay(error, attempt)
                if delay is None:
                    raise
            except httpx.TransportError as exc:
                failure, retryable = p.failure(exc, attempt)
                delay = p.retry_delay(failure, attempt) if retryable else None
                if delay is None:
                    raise failure from exc
            await asyncio.sleep(delay)


_NOT_JSON: Any = object()


def _json(content: bytes) -> Any:
    if not content:
        return _NOT_JSON
    try:
        return json.loads(content)
    except ValueError:
        return _NOT_JSON


def _query(query: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (query or {}).items():
        if value is None:
            continue
        out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out
