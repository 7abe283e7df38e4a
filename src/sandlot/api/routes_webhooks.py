"""Webhooks per team (api/webhooks.py): create, list, get, delete, and each one's delivery log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from sandlot.api.deps import Who
from sandlot.api.webhooks import Webhooks
from sandlot.models import ErrorBody, WebhookCreate, WebhookCreated, WebhookDeliveryList, WebhookInfo, WebhookList

__all__ = ["router"]

_ERRORS: dict[int | str, dict[str, object]] = {s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422, 429)}
router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=_ERRORS)

WebhookId = Annotated[str, Path(min_length=1, max_length=64, description="wh-...")]


def _hooks(request: Request) -> Webhooks:
    hooks: Webhooks = request.app.state.webhooks
    return hooks


@router.post("", status_code=201, response_model=WebhookCreated)
async def create_webhook(body: WebhookCreate, who: Who, request: Request) -> WebhookCreated:
    """POST the team's lifecycle events (those of `events`, or all) to `url`, signed with the
    secret in this answer (the only time it is shown); retried with backoff until a 2xx."""
    made = await _hooks(request).create(who.team, body.url, list(body.events))
    request.app.state.dispatcher.wake()  # an idle dispatcher polls only every IDLE_POLL_S
    return made


@router.get("", response_model=WebhookList)
async def list_webhooks(who: Who, request: Request) -> WebhookList:
    """The team's webhooks (an admin key: every team's)."""
    return WebhookList(webhooks=await _hooks(request).list(None if who.admin else who.team))


@router.get("/{webhook_id}", response_model=WebhookInfo)
async def get_webhook(webhook_id: WebhookId, who: Who, request: Request) -> WebhookInfo:
    return await _hooks(request).get(None if who.admin else who.team, webhook_id)


@router.delete("/{webhook_id}", status_code=204, response_class=Response)
async def delete_webhook(webhook_id: WebhookId, who: Who, request: Request) -> Response:
    """Stop delivering to it (its delivery log goes with it)."""
    await _hooks(request).delete(None if who.admin else who.team, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryList)
async def list_deliveries(
    webhook_id: WebhookId, who: Who, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> WebhookDeliveryList:
    """Its delivery log, newest event first: attempts, the last status or error, the next attempt."""
    found = await _hooks(request).deliveries(None if who.admin else who.team, webhook_id, limit)
    return WebhookDeliveryList(deliveries=found)
