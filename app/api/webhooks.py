from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from app.deps import CallerDep, SessionDep
from app.schemas import (
    Page,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryOut,
    WebhookOut,
    WebhookUpdate,
)
from app.services import webhooks

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post("", status_code=201)
def create_webhook(
    body: Annotated[WebhookCreate, Body()], session: SessionDep, caller: CallerDep
) -> WebhookCreated:
    """Events of these types are POSTed to the URL, signed with the secret answered here, and
    only here (docs/WEBHOOKS.md)."""
    endpoint, secret = webhooks.create_endpoint(session, caller.tenant_id, body)
    return WebhookCreated(**webhooks.to_out(endpoint).model_dump(), secret=secret)


@router.get("")
def list_webhooks(
    session: SessionDep, caller: CallerDep, limit: Limit = 20, cursor: str | None = None
) -> Page[WebhookOut]:
    rows, next_cursor = webhooks.list_endpoints(session, caller.tenant_id, limit, cursor)
    return Page(data=[webhooks.to_out(row) for row in rows], next_cursor=next_cursor)


@router.get("/{webhook_id}")
def get_webhook(webhook_id: str, session: SessionDep, caller: CallerDep) -> WebhookOut:
    return webhooks.to_out(webhooks.get_endpoint(session, caller.tenant_id, webhook_id))


@router.patch("/{webhook_id}")
def update_webhook(
    webhook_id: str,
    body: Annotated[WebhookUpdate, Body()],
    session: SessionDep,
    caller: CallerDep,
) -> WebhookOut:
    endpoint = webhooks.update_endpoint(session, caller.tenant_id, webhook_id, body)
    return webhooks.to_out(endpoint)


@router.delete("/{webhook_id}", status_code=204)
def delete_webhook(webhook_id: str, session: SessionDep, caller: CallerDep) -> Response:
    """The webhook and its delivery log; what was still to be sent is not sent."""
    webhooks.delete_endpoint(session, caller.tenant_id, webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/ping", status_code=202)
def ping_webhook(webhook_id: str, session: SessionDep, caller: CallerDep) -> WebhookDeliveryOut:
    """Send a `webhook.ping` event to this webhook, to try it; its delivery."""
    return webhooks.ping(session, caller.tenant_id, webhook_id)


@router.get("/{webhook_id}/deliveries")
def list_deliveries(
    webhook_id: str,
    session: SessionDep,
    caller: CallerDep,
    limit: Limit = 20,
    cursor: str | None = None,
) -> Page[WebhookDeliveryOut]:
    """Each event sent to this webhook, newest first, with every attempt made."""
    return webhooks.list_deliveries(session, caller.tenant_id, webhook_id, limit, cursor)


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202)
def redeliver(
    webhook_id: str, delivery_id: str, session: SessionDep, caller: CallerDep
) -> WebhookDeliveryOut:
    """Send a delivery again now, with the same `webhook-id` (docs/WEBHOOKS.md)."""
    return webhooks.redeliver(session, caller.tenant_id, webhook_id, delivery_id)
