"""Errors the SDK raises. An `APIError` carries the server's RFC 9457 problem details."""

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx


class TuneryError(Exception):
    """The base of every error the SDK raises."""


class APIConnectionError(TuneryError):
    """The server could not be reached (or the connection broke), after any retries."""


class WaitTimeout(TuneryError, TimeoutError):
    """`jobs.wait` or `sweeps.wait` gave up before the job or sweep was over; `last` is the
    last state seen (a Job or a Sweep), also named `job` or `sweep` (the other is None)."""

    def __init__(self, last: Any, timeout: float, what: str = "job") -> None:
        super().__init__(f"{what} {last.id} is still {last.status} after {timeout:g} s")
        self.last = last
        self.job = last if what == "job" else None
        self.sweep = last if what == "sweep" else None


class APIError(TuneryError):
    """An error answer. `problem` is the whole problem-details body; `errors` lists
    `{"field", "message"}` for each field at fault (empty when the problem names none)."""

    def __init__(self, status: int, problem: dict[str, Any], headers: httpx.Headers) -> None:
        self.status = status
        self.problem = problem
        self.title: str = problem.get("title") or _phrase(status)
        self.detail: str = problem.get("detail") or ""
        self.errors: list[dict[str, str]] = problem.get("errors") or []
        self.headers = headers
        super().__init__(f"{status} {self.title}: {self.detail}" if self.detail else self.title)


class InvalidRequest(APIError):
    """400 or 422: the request (a spec, an upload, inputs) is wrong; see `errors`."""


class Unauthorized(APIError):
    """401: no API key, or an unknown or revoked one."""


class Forbidden(APIError):
    """403: a read-only key asked for a change, or a quota that waiting does not lift."""


class NotFound(APIError):
    """404: no such job, dataset or model (or another tenant's)."""


class Conflict(APIError):
    """409: the request does not fit the resource's state (e.g. cancelling a finished job)."""


class RateLimited(APIError):
    """429: the request rate or queued-jobs quota; `retry_after` is the server's advice."""

    @property
    def retry_after(self) -> float | None:
        return retry_after(self.headers)


class ServerError(APIError):
    """5xx."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def error_from(response: httpx.Response) -> APIError:
    """The typed error for an error response; a body that is not problem JSON (a proxy's page,
    say) becomes the problem's detail, so nothing the server said is lost."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"status": response.status_code, "detail": response.text[:1000]}
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else APIError
    return cls(response.status_code, problem, response.headers)


def retry_after(headers: httpx.Headers) -> float | None:
    """`Retry-After` in seconds (the server sends seconds; an HTTP date is read too)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None
