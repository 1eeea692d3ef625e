"""Webhooks: a tenant's endpoints, the events written for them, and the log of deliveries.

An event is written to the outbox (`webhook_events`, one `webhook_deliveries` row for each
endpoint subscribed to it) in the transaction of the change it tells of: committed together or
not at all, so no event is lost and none tells of a change that did not happen. The API
processes send them (`app.services.webhook_delivery`).

To tell of something new, one call in the transaction that changes it:
`webhooks.emit(session, tenant_id, "model.alias_moved", data)`; for a job's or a sweep's new
status, `emit_job(session, job_id)` or `emit_sweep(session, sweep_id)`.
"""

import base64
import secrets
from datetime import datetime, timedelta
from typing import Any, get_args

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import (
    Job,
    Sweep,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    new_id,
    utcnow,
)
from app.problems import InvalidInput, NotFound
from app.schemas import (
    Page,
    WebhookAttemptOut,
    WebhookCreate,
    WebhookDeliveryOut,
    WebhookEventType,
    WebhookOut,
    WebhookUpdate,
)
from app.services import outbound_addresses, pagination
from trainer.spec import SpecIssue

EVENT_TYPES: tuple[str, ...] = get_args(WebhookEventType)
# Sent to one endpoint on request (`POST /v1/webhooks/{id}/ping`), whatever it subscribes to.
PING = "webhook.ping"


def _secret() -> str:
    """`whsec_` and 32 random bytes in base64, as the Standard Webhooks specification has it."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_url(url: str) -> None:
    """422 on `url` unless it is an https URL at public addresses (or in an allowed range)."""
    try:
        outbound_addresses.resolve(outbound_addresses.parse(url), get_settings().webhook_allow)
    except outbound_addresses.ForbiddenAddress as error:
        raise InvalidInput([SpecIssue("url", str(error))]) from error


def create_endpoint(
    session: Session, tenant_id: str, body: WebhookCreate
) -> tuple[WebhookEndpoint, str]:
    """The new endpoint and its secret."""
    check_url(body.url)
    endpoint = WebhookEndpoint(
        id=new_id("wh"), tenant_id=tenant_id, url=body.url, events=body.events, secret=_secret()
    )
    session.add(endpoint)
    session.flush()
    return endpoint, endpoint.secret


def get_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id, WebhookEndpoint.tenant_id == tenant_id
        )
    )
    if endpoint is None:
        raise NotFound("webhook", endpoint_id)
    return endpoint


def list_endpoints(
    session: Session, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[WebhookEndpoint], str | None]:
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    return pagination.newest_first(session, stmt, WebhookEndpoint, limit, cursor)


def update_endpoint(
    session: Session, tenant_id: str, endpoint_id: str, body: WebhookUpdate
) -> WebhookEndpoint:
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    if body.url is not None:
        check_url(body.url)
        endpoint.url = body.url
    if body.events is not None:
        endpoint.events = body.events
    if body.enabled is not None:
        endpoint.enabled = body.enabled
    session.flush()
    return endpoint


def delete_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> None:
    """The endpoint and its deliveries, those still to send included."""
    session.delete(get_endpoint(session, tenant_id, endpoint_id))


def to_out(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        events=endpoint.events,
        enabled=endpoint.enabled,
        created_at=endpoint.created_at,
    )


# Writing events


def _write(
    session: Session, tenant_id: str, type_: str, data: dict[str, Any], endpoint_ids: list[str]
) -> tuple[WebhookEvent, list[WebhookDelivery]]:
    now = utcnow()
    event = WebhookEvent(
        id=new_id("msg"),
        tenant_id=tenant_id,
        type=type_,
        # The body of every delivery: Standard Webhooks' recommended envelope.
        payload={"type": type_, "timestamp": now.isoformat(), "data": data},
        created_at=now,
    )
    deliveries = [
        WebhookDelivery(
            id=new_id("whd"),
            event_id=event.id,
            endpoint_id=endpoint_id,
            status="pending",
            next_attempt_at=now,
            retry_until=_retry_until(now),
            created_at=now,
        )
        for endpoint_id in endpoint_ids
    ]
    session.add(event)
    session.flush()  # the event before the rows that reference it
    session.add_all(deliveries)
    return event, deliveries


def emit(session: Session, tenant_id: str, type_: str, data: dict[str, Any]) -> str | None:
    """Write an event for each enabled endpoint of the tenant subscribed to `type_`, in the
    caller's transaction; its id, or None when no endpoint wants it (then nothing is kept)."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"{type_!r} is not a webhook event type")
    endpoints = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.events).where(
            WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.enabled
        )
    ).all()
    subscribed = [id_ for id_, events in endpoints if type_ in events]
    if not subscribed:
        return None
    event, _ = _write(session, tenant_id, type_, data, subscribed)
    return event.id


def emit_job(session: Session, job_id: str) -> str | None:
    """`job.<its status>`, with what a pipeline needs to go on: the model made, or the error."""
    job = session.execute(
        select(
            Job.id,
            Job.tenant_id,
            Job.kind,
            Job.name,
            Job.status,
            Job.sweep_id,
            Job.result_model_id,
            Job.error_type,
            Job.error_message,
            Job.metrics,
        ).where(Job.id == job_id)
    ).one()
    # An error of an earlier attempt stays on a job that then succeeded: only a failure says it.
    failed = job.status == "failed"
    error = {"type": job.error_type, "message": job.error_message} if failed else None
    data = {
        "id": job.id,
        "kind": job.kind,
        "name": job.name,
        "status": job.status,
        "sweep_id": job.sweep_id,
        "result_model_id": job.result_model_id,
        "error": error,
        "metrics": job.metrics,
    }
    return emit(session, job.tenant_id, f"job.{job.status}", data)


def emit_sweep(session: Session, sweep_id: str) -> str | None:
    """`sweep.<its status>`; its results are read from the API (`GET /v1/sweeps/{id}`)."""
    sweep = session.execute(
        select(Sweep.id, Sweep.tenant_id, Sweep.name, Sweep.status).where(Sweep.id == sweep_id)
    ).one()
    data = {"id": sweep.id, "name": sweep.name, "status": sweep.status}
    return emit(session, sweep.tenant_id, f"sweep.{sweep.status}", data)


def ping(session: Session, tenant_id: str, endpoint_id: str) -> WebhookDeliveryOut:
    """A `webhook.ping` event to this endpoint alone, whatever it subscribes to, to try it."""
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    _, deliveries = _write(session, tenant_id, PING, {"webhook_id": endpoint.id}, [endpoint.id])
    session.flush()
    return _deliveries_out(session, deliveries)[0]


# The delivery log


def _deliveries_out(
    session: Session, deliveries: list[WebhookDelivery]
) -> list[WebhookDeliveryOut]:
    ids = [d.id for d in deliveries]
    types = dict(
        session.execute(
            select(WebhookEvent.id, WebhookEvent.type).where(
                WebhookEvent.id.in_({d.event_id for d in deliveries})
            )
        ).all()
    )
    logs: dict[str, list[WebhookAttemptOut]] = {id_: [] for id_ in ids}
    for attempt in session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(ids))
        .order_by(WebhookAttempt.id)
    ):
        logs[attempt.delivery_id].append(
            WebhookAttemptOut(
                number=attempt.number,
                time=attempt.time,
                response_status=attempt.response_status,
                error=attempt.error,
                duration_ms=attempt.duration_ms,
            )
        )
    return [
        WebhookDeliveryOut(
            id=d.id,
            webhook_id=d.endpoint_id,
            event_id=d.event_id,
            event_type=types[d.event_id],
            status=d.status,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_response_status=d.last_response_status,
            last_error=d.last_error,
            created_at=d.created_at,
            finished_at=d.finished_at,
            attempt_log=logs[d.id],
        )
        for d in deliveries
    ]


def list_deliveries(
    session: Session, tenant_id: str, endpoint_id: str, limit: int, cursor: str | None
) -> Page[WebhookDeliveryOut]:
    get_endpoint(session, tenant_id, endpoint_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    rows, next_cursor = pagination.newest_first(session, stmt, WebhookDelivery, limit, cursor)
    return Page(data=_deliveries_out(session, rows), next_cursor=next_cursor)


def redeliver(
    session: Session, tenant_id: str, endpoint_id: str, delivery_id: str
) -> WebhookDeliveryOut:
    """Send a delivery again at once, with the same `webhook-id`: a finished one is retried as
    a new one is; a pending one is not kept waiting for its next retry (an attempt under way
    ends first)."""
    get_endpoint(session, tenant_id, endpoint_id)
    delivery = session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id)
        .with_for_update()
    )
    if delivery is None:
        raise NotFound("delivery", delivery_id)
    now = utcnow()
    if delivery.status != "pending":
        delivery.status, delivery.finished_at = "pending", None
        delivery.retry_until = _retry_until(now)
    delivery.next_attempt_at = now
    session.flush()
    return _deliveries_out(session, [delivery])[0]


def forget_old(session: Session, now: datetime) -> int:
    """Delete the events older than `webhook_log_days`, with their deliveries and attempts,
    but for those still being retried; how many."""
    before = now - timedelta(days=get_settings().webhook_log_days)
    pending = select(WebhookDelivery.id).where(
        WebhookDelivery.event_id == WebhookEvent.id, WebhookDelivery.status == "pending"
    )
    return session.execute(
        delete(WebhookEvent).where(WebhookEvent.created_at < before, ~pending.exists())
    ).rowcount


def _retry_until(now: datetime) -> datetime:
    return now + timedelta(seconds=get_settings().webhook_retry_for_seconds)
