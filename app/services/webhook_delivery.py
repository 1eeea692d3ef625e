"""Sending webhooks from the outbox, at least once, from every API process.

Each API process polls for due deliveries (`deliver_forever`, started with the app). The API
rather than the Celery worker: every deployment runs an API process, with outbound network to
its tenants' pipelines, while workers may be GPU machines fenced off from it, and are busy
supervising trainers; a worker that dies holds back no webhook, since the API sends them.

A claim (`claim_due`) takes a lease on a due delivery and counts the attempt, in one
transaction that skips rows another process has locked: no two processes send at once, and a
process killed mid-send leaves a claim that lapses with its lease. Only the claim of the
current attempt may record its outcome. A receiver may then see a message twice (its sender
died after sending, before recording): each time with the same `webhook-id`, by which it
knows.

Each request: the URL's host resolved and checked (`outbound_addresses`), then the request made
to that very address, with the name in the Host header and in TLS (SNI and the certificate
check), so a name that resolves elsewhere a moment later reaches nothing it should not. No
redirect is followed, no proxy from the environment is used, and the whole attempt, name
lookup included, has `webhook_timeout_seconds`.
"""

import asyncio
import json
import logging
import math
import random
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from app.config import get_settings
from app.db import session_scope
from app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent, utcnow
from app.services import outbound_addresses

log = logging.getLogger(__name__)

BATCH = 32  # deliveries claimed, and sent concurrently, at a time
# A claim's lease, in request timeouts: a batch's requests run together, each cut off at the
# timeout, so a claim outlives its sender only when the sender died.
LEASE_TIMEOUTS = 4
USER_AGENT = "tunery-webhooks"
ERROR_CHARS = 1000  # as long as the log's `error` columns
# One TLS context for every request: making one reads the CA bundle (milliseconds).
_TLS = ssl.create_default_context()


@dataclass(frozen=True)
class Claim:
    delivery_id: str
    attempt: int
    url: str
    secret: str
    event_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    claim: Claim
    started_at: datetime
    duration_ms: float
    response_status: int | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.error is None


def claim_due(session: Session, now: datetime, limit: int = BATCH) -> list[Claim]:
    """Take up to `limit` due deliveries of enabled endpoints for one attempt each."""
    lease = timedelta(seconds=LEASE_TIMEOUTS * get_settings().webhook_timeout_seconds)
    claimable = (
        WebhookDelivery.status == "pending",
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now),
    )
    candidates = session.scalars(
        select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(*claimable, WebhookEndpoint.enabled)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    ).all()
    if not candidates:
        return []
    # Claimed only where still claimable: SQLite has no row locks, and two processes may have
    # read the same candidates; its writes, one at a time, let the second claim none of them.
    due = session.scalars(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(candidates), *claimable)
        .values(attempts=WebhookDelivery.attempts + 1, lease_expires_at=now + lease)
        .returning(WebhookDelivery.id)
    ).all()
    if not due:
        return []
    rows = session.execute(
        select(
            WebhookDelivery.id,
            WebhookDelivery.attempts,
            WebhookEndpoint.url,
            WebhookEndpoint.secret,
            WebhookEvent.id,
            WebhookEvent.payload,
        )
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id.in_(due))
    ).all()
    return [Claim(*row) for row in rows]


def retry_delay(attempt: int) -> float:
    """Seconds before the attempt after `attempt` (1, 2, ...): doubling from the first delay,
    at most the longest, each spread by a fifth either way so that the deliveries that failed
    together (a receiver down) do not all come back together."""
    settings = get_settings()
    delay = settings.webhook_retry_first_seconds * 2 ** min(attempt - 1, 60)
    return min(delay, settings.webhook_retry_longest_seconds) * random.uniform(0.8, 1.2)


def record(session: Session, outcome: Outcome) -> None:
    """The attempt in the log, and what comes next: done, another attempt later, or failed
    once the next attempt would come after `retry_until`. Nothing if the claim was lost."""
    claim = outcome.claim
    delivery = session.scalar(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.id == claim.delivery_id,
            WebhookDelivery.attempts == claim.attempt,
            WebhookDelivery.status == "pending",
        )
        .with_for_update()
    )
    if delivery is None:
        return  # its lease ran out and another attempt began; or the endpoint was deleted
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            number=claim.attempt,
            response_status=outcome.response_status,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
            time=outcome.started_at,
        )
    )
    delivery.last_response_status, delivery.last_error = outcome.response_status, outcome.error
    delivery.lease_expires_at = None
    now = utcnow()
    next_attempt_at = now + timedelta(seconds=retry_delay(claim.attempt))
    if outcome.succeeded or next_attempt_at > delivery.retry_until:
        delivery.status = "succeeded" if outcome.succeeded else "failed"
        delivery.next_attempt_at, delivery.finished_at = None, now
    else:
        delivery.next_attempt_at = next_attempt_at


def signed_headers(claim: Claim, body: bytes, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers: id, timestamp and the signature of all three."""
    return {
        "webhook-id": claim.event_id,
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": Webhook(claim.secret).sign(claim.event_id, now, body),
    }


async def _request(client: httpx.AsyncClient, claim: Claim) -> int:
    """POST the event to an address the checked name resolved to, each in turn until one takes
    the connection; the answer's status."""
    url = outbound_addresses.parse(claim.url)
    allow = get_settings().webhook_allow
    addresses = await asyncio.to_thread(outbound_addresses.resolve, url, allow)
    body = json.dumps(claim.payload, separators=(",", ":")).encode()
    headers = {
        **signed_headers(claim, body, utcnow()),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": url.netloc.decode("ascii"),
    }
    for address in addresses[:-1]:
        try:
            return await _post(client, url, address, headers, body)
        except httpx.ConnectError:
            continue
    return await _post(client, url, addresses[-1], headers, body)


async def _post(
    client: httpx.AsyncClient,
    url: httpx.URL,
    address: outbound_addresses.IPAddress,
    headers: dict[str, str],
    body: bytes,
) -> int:
    request = client.build_request(
        "POST",
        url.copy_with(host=str(address)),
        headers=headers,
        content=body,
        # TLS to the name, not the address: the certificate is checked against the name.
        extensions={"sni_hostname": url.host} if url.scheme == "https" else {},
    )
    response = await client.send(request, stream=True)  # its status is all we read
    await response.aclose()
    return response.status_code


async def attempt(client: httpx.AsyncClient, claim: Claim) -> Outcome:
    """One request of the claimed delivery; its outcome, never an exception."""
    started_at, clock = utcnow(), time.monotonic()
    status, error = None, None
    timeout = get_settings().webhook_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            status = await _request(client, claim)
        if not 200 <= status < 300:
            error = f"answered {status}"
    except outbound_addresses.ForbiddenAddress as refused:
        error = f"refused: {refused}"
    except TimeoutError:
        error = f"no answer within {timeout:g} s"
    except httpx.HTTPError as failed:
        error = f"{type(failed).__name__}: {failed}"
    duration_ms = (time.monotonic() - clock) * 1000
    return Outcome(claim, started_at, duration_ms, status, error and error[:ERROR_CHARS])


def new_client() -> httpx.AsyncClient:
    # No kept connections: one to an address is not reused for another name (SNI, Host).
    return httpx.AsyncClient(
        verify=_TLS,
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def deliver_once() -> int:
    """Claim due deliveries, send them concurrently, record each outcome as soon as it is
    known; how many were sent. An outcome waits for no other request: a slow receiver, or
    this process killed while one waits, costs no other attempt its place in the log."""

    def claim() -> list[Claim]:
        with session_scope() as session:
            return claim_due(session, utcnow())

    def record_one(outcome: Outcome) -> None:
        with session_scope() as session:
            record(session, outcome)

    claims = await asyncio.to_thread(claim)
    if not claims:
        return 0
    async with new_client() as client:

        async def send(claim: Claim) -> None:
            await asyncio.to_thread(record_one, await attempt(client, claim))

        await asyncio.gather(*(send(c) for c in claims))
    return len(claims)


async def deliver_forever(interval_seconds: float) -> None:
    while True:
        try:
            sent = await deliver_once()
        except Exception:
            log.exception("sending webhooks failed; trying again in %.0f s", interval_seconds)
            sent = 0
        if sent < BATCH:  # a full batch: there may be more due at once
            await asyncio.sleep(interval_seconds)
