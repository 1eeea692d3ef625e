"""The API's front door, as ASGI middleware: an API key on every `/v1` request, checked before
any of the body is read; the tenant's request rate; and security headers on every response.

Doing it here rather than in each route means a route cannot be added without it: every path
under `/v1` (even one that does not exist) answers `401` to a request without a valid key.
"""

import math
import re
import time

from anyio import to_thread
from limits import RateLimitItemPerMinute, storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.problems import (
    DatabaseUnavailable,
    Forbidden,
    Problem,
    TooManyRequests,
    Unauthorized,
    is_unreachable,
    response_of,
)
from app.services import auth

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POSTs that change nothing: read-only keys may call them too. A model by any reference
# (`app.services.registry`): `name/versions/N` holds slashes.
READING_POSTS = re.compile(
    r"^/v1/models/[^/]+(/versions/[^/]+)?/(predict|generate|transferability)$"
    r"|^/v1/datasets/[^/]+/rank-models$"
    r"|^/v1/chat/completions$"
)


def rate_limiter(storage_url: str) -> SlidingWindowCounterRateLimiter:
    """Counts requests in `memory://` (one process) or Redis (shared by every API process)."""
    options = {"implementation": "redispy"} if storage_url.startswith("redis") else {}
    return SlidingWindowCounterRateLimiter(
        storage.storage_from_string(f"async+{storage_url}", **options)
    )


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, rate_limit_storage_url: str) -> None:
        self.app = app
        self.limiter = rate_limiter(rate_limit_storage_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/v1" or path.startswith("/v1/")):
            return await self.app(scope, receive, send)
        try:
            scope.setdefault("state", {})["caller"] = await self._caller(scope)
        except Problem as problem:
            return await response_of(problem, path)(scope, receive, send)
        except DBAPIError as error:  # a key not cached while the database is down
            if not is_unreachable(error):
                raise
            return await response_of(DatabaseUnavailable(), path)(scope, receive, send)
        await self.app(scope, receive, send)

    async def _caller(self, scope: Scope) -> auth.Caller:
        scheme, _, secret = Headers(scope=scope).get("authorization", "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Unauthorized("send an API key: `Authorization: Bearer <key>`")
        caller = auth.cached_caller(secret) or await to_thread.run_sync(auth.authenticate, secret)
        if caller is None:
            raise Unauthorized("the API key is unknown or revoked")
        if (
            caller.read_only
            and scope["method"] not in SAFE_METHODS
            and not READING_POSTS.match(scope["path"])
        ):
            raise Forbidden(
                "this API key is read-only: it may read, predict, generate and score, not change"
            )
        limit = RateLimitItemPerMinute(caller.requests_per_minute)
        if not await self.limiter.hit(limit, caller.tenant_id):
            stats = await self.limiter.get_window_stats(limit, caller.tenant_id)
            raise TooManyRequests(
                f"rate limit: more than {caller.requests_per_minute} requests a minute",
                retry_after_seconds=max(1, math.ceil(stats.reset_time - time.time())),
            )
        return caller


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
# The API's own answers are data, never pages: nothing in them may run or be framed.
API_ONLY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]


# The dashboard's pages: code, styles and API calls from this origin only, nothing inline, no
# framing; images from here or `data:` (the favicon); `form-action 'none'` so that the key form
# can never be sent as a URL. Revalidated on every load, so a new release's scripts are never
# mixed with cached old ones.
UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
UI_HEADERS = [
    (b"content-security-policy", UI_CSP.encode()),
    (b"cache-control", b"no-cache"),
]


def _extra_headers(path: str) -> list[tuple[bytes, bytes]]:
    if path.startswith("/v1"):
        return SECURITY_HEADERS + API_ONLY_HEADERS
    if path == "/ui" or path.startswith("/ui/"):
        return SECURITY_HEADERS + UI_HEADERS
    return SECURITY_HEADERS


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = _extra_headers(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
