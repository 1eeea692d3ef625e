"""The SDK's calls, written once for the sync and the async client ("sans-IO").

An operation is a generator that yields *effects* (send this request, sleep, read a chunk of a
streamed body, hand an item to the caller) and is sent back their results, or has their
exceptions thrown into it. `Client` performs effects with httpx.Client and time.sleep,
`AsyncClient` with httpx.AsyncClient and asyncio.sleep (`tunery.client`); request building,
response parsing, pagination, retries, uploads, downloads and streams exist only here.
"""

import itertools
import random
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from tunery.errors import APIConnectionError, error_from, retry_after
from tunery.types import Page

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 (an item's type)
M = TypeVar("M", bound=BaseModel)

# Errors after which the same request may succeed; others (a bad URL, say) are raised at once.
TRANSIENT = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Made afresh for each attempt, so that a retry sends the whole body again.
    body: Callable[[], Iterator[bytes]] | None = None
    stream: bool = False  # leave the response body unread, for ReadChunk
    timeout: httpx.Timeout | None = None
    # None: decided by the method, or by an Idempotency-Key (the server replays, not repeats).
    idempotent: bool | None = None

    @property
    def safe_to_repeat(self) -> bool:
        if self.idempotent is not None:
            return self.idempotent
        keyed = any(name.lower() == "idempotency-key" for name in self.headers)
        return keyed or self.method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")

    def to_httpx(self, http: httpx.Client | httpx.AsyncClient, content: Any) -> httpx.Request:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        return http.build_request(
            self.method,
            self.path,
            params=params,
            json=self.json,
            headers=dict(self.headers),
            content=content,
            timeout=self.timeout or httpx.USE_CLIENT_DEFAULT,
        )


@dataclass(frozen=True)
class Send:
    """-> the httpx.Response, whatever its status."""

    request: Request


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class ReadChunk:
    """-> the next bytes of a streamed response; b"" at its end."""

    response: httpx.Response


@dataclass(frozen=True)
class ReadAll:
    """Reads the rest of a streamed response into `response.content`."""

    response: httpx.Response


@dataclass(frozen=True)
class Close:
    response: httpx.Response


@dataclass(frozen=True)
class Emit(Generic[I]):
    """An item for the caller of an iterating operation (`jobs.list`, `jobs.stream`)."""

    item: I


Effect = Send | Sleep | ReadChunk | ReadAll | Close
Op = Generator[Effect, Any, T]
Items = Generator[Effect | Emit[I], Any, None]

_DONE = object()


class Trampoline:
    """Steps an operation for a driver: the driver performs each effect and hands back its
    result (`resolve`) or its exception (`fail`); the operation's return value is `result`."""

    def __init__(self, op: Generator[Any, Any, Any]) -> None:
        self._op = op
        self._value: Any = None
        self._error: BaseException | None = None
        self.result: Any = None

    def next(self) -> Any:
        """The next effect or Emit, or `_DONE`."""
        try:
            if self._error is not None:
                error, self._error = self._error, None
                return self._op.throw(error)
            value, self._value = self._value, None
            return self._op.send(value)
        except StopIteration as stop:
            self.result = stop.value
            return _DONE

    def resolve(self, value: Any = None) -> None:
        self._value = value

    def fail(self, error: BaseException) -> None:
        self._error = error

    def close(self) -> None:
        self._op.close()


def done(step: Any) -> bool:
    return step is _DONE


@dataclass(frozen=True)
class RetryPolicy:
    """When a request is sent again. `429` always (the server refused before doing anything);
    `503` and broken connections only for requests safe to repeat: reads, predictions, and
    POSTs with an Idempotency-Key (which `jobs.create` and `datasets.upload` always send).
    A `Retry-After` is waited in full, plus jitter; without one the wait doubles from
    `backoff` up to `max_backoff`, half of it random, so that clients refused together do not
    come back together. A `Retry-After` past `max_wait` is raised at once instead."""

    max_retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_wait: float = 60.0

    def backoff_delay(self, attempt: int) -> float:
        step = min(self.max_backoff, self.backoff * 2**attempt)
        return step / 2 + random.uniform(0, step / 2)

    def delay(self, attempt: int, request: Request, response: httpx.Response) -> float | None:
        """Seconds to wait before attempt `attempt + 1`; None: raise the error now."""
        status = response.status_code
        if attempt >= self.max_retries:
            return None
        if not (status == 429 or (status == 503 and request.safe_to_repeat)):
            return None
        after = retry_after(response.headers)
        if after is None:
            return self.backoff_delay(attempt)
        if after > self.max_wait:
            return None
        return after + random.uniform(0, self.backoff / 2)


def route(*parts: str) -> str:
    """`/v1/jobs/<id>`, an id quoted so that it cannot change the route."""
    return "/".join(quote(p, safe="") if i else p for i, p in enumerate(parts))


def _unreachable(request: Request, error: httpx.TransportError) -> APIConnectionError:
    try:
        where = str(error.request.url)
    except RuntimeError:  # raised before a request was made
        where = request.path
    return APIConnectionError(f"{request.method} {where}: {error or type(error).__name__}")


class Operations:
    """What every resource's operations share: sending with retries, parsing, pagination."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def send(self, request: Request) -> Op[httpx.Response]:
        """The response to `request`, after retries; an APIError for an error answer."""
        for attempt in itertools.count():
            try:
                response = yield Send(request)
            except TRANSIENT as error:
                if attempt >= self.policy.max_retries or not request.safe_to_repeat:
                    raise _unreachable(request, error) from error
                yield Sleep(self.policy.backoff_delay(attempt))
                continue
            except httpx.TransportError as error:
                raise _unreachable(request, error) from error
            if not response.is_error:
                return response
            if request.stream:
                yield ReadAll(response)  # the problem details are in the body
            wait = self.policy.delay(attempt, request, response)
            if wait is None:
                raise error_from(response)
            yield Sleep(wait)

    def fetch(self, request: Request, model: type[M]) -> Op[M]:
        response = yield from self.send(request)
        return model.model_validate_json(response.content)

    def paginate(
        self, url: str, model: type[M], page_size: int, params: Mapping[str, Any] | None = None
    ) -> Items[M]:
        """Every item, page after page, following `next_cursor`."""
        cursor = None
        while True:
            query = {**(params or {}), "limit": page_size, "cursor": cursor}
            page = yield from self.fetch(Request("GET", url, params=query), Page[model])
            for item in page.data:
                yield Emit(item)
            if not page.next_cursor:
                return
            cursor = page.next_cursor
