"""API keys: making them, and knowing who calls with one.

A key is `tunery_` + 256 random bits. Only its SHA-256 is stored, and it is looked up by that
hash, so neither the database nor the time a lookup takes says anything about the secret.
An authenticated key is trusted for `auth_cache_seconds` before the database is asked again:
a revoked key stops working within that time, and a warm request costs no query.
"""

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from cachetools import TTLCache
from sqlalchemy import select

from app.config import get_settings
from app.db import session_scope
from app.models import ApiKey, Tenant

KEY_PREFIX = "tunery_"


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who a request comes from."""

    tenant_id: str
    key_id: str
    read_only: bool
    requests_per_minute: int


# Keys known to be valid, each for `auth_cache_seconds`. Unknown keys are never remembered,
# so a key made a moment ago works at once.
_trusted: TTLCache[str, Caller] = TTLCache(
    maxsize=100_000, ttl=get_settings().auth_cache_seconds, timer=time.monotonic
)
_trusted_lock = threading.Lock()


def cached_caller(secret: str) -> Caller | None:
    """The caller of a key authenticated recently; None means: ask `authenticate`."""
    with _trusted_lock:
        return _trusted.get(secret_sha256(secret))


@dataclass
class _Lookup:
    done: threading.Event = field(default_factory=threading.Event)
    caller: Caller | None = None
    failed: bool = False


# The lookups in flight, by key digest. When a key's cache entry expires under load, every
# request in flight with it misses at once: they wait for one lookup and share its answer
# instead of each holding a pooled connection for the same query (32 of them at 32 clients).
_lookups: dict[str, _Lookup] = {}


def authenticate(secret: str) -> Caller | None:
    """The caller a key belongs to, or None for an unknown or revoked key."""
    digest = secret_sha256(secret)
    with _trusted_lock:
        if (caller := _trusted.get(digest)) is not None:
            return caller
        lookup = _lookups.get(digest)
        leading = lookup is None
        if leading:
            lookup = _lookups[digest] = _Lookup()
    if not leading:
        lookup.done.wait()
        # The one lookup failed (the database, say): try again, to fail with an error of
        # our own rather than answer that the key is unknown.
        return _look_up(digest) if lookup.failed else lookup.caller
    try:
        lookup.caller = _look_up(digest)
    except BaseException:
        lookup.failed = True
        raise
    finally:
        with _trusted_lock:
            del _lookups[digest]
        lookup.done.set()
    return lookup.caller


def _look_up(digest: str) -> Caller | None:
    with session_scope() as session:
        row = session.execute(
            select(ApiKey, Tenant)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.secret_sha256 == digest, ApiKey.revoked_at.is_(None))
        ).first()
    if row is None or not hmac.compare_digest(row.ApiKey.secret_sha256, digest):
        return None
    settings = get_settings()
    caller = Caller(
        tenant_id=row.Tenant.id,
        key_id=row.ApiKey.id,
        read_only=row.ApiKey.read_only,
        requests_per_minute=row.Tenant.requests_per_minute or settings.tenant_requests_per_minute,
    )
    with _trusted_lock:
        _trusted[digest] = caller
    return caller
