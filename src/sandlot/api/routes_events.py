"""Lifecycle events: `GET /events` (a page, filtered) and `GET /events/stream` (SSE, live)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from sandlot import errors
from sandlot.api.auth import Principal
from sandlot.api.deps import Svc, Who
from sandlot.models import SSE, ErrorBody, EventList, EventType

__all__ = ["router"]

_ERRORS: dict[int | str, dict[str, object]] = {s: {"model": ErrorBody} for s in (400, 401, 403, 422)}
router = APIRouter(prefix="/events", tags=["events"], responses=_ERRORS)

#: the largest event id (a 64-bit column)
MAX_ID = (1 << 63) - 1
SandboxFilter = Annotated[str | None, Query(max_length=64, description="only this sandbox's")]
TypeFilter = Annotated[list[EventType], Query(description="only these types (repeatable)")]
TeamFilter = Annotated[str | None, Query(max_length=128, description="admin keys: only this team's (default: all)")]


def _team(who: Principal, team: str | None) -> str | None:
    """The team whose events the caller sees: its own; an admin every team's, or the one named."""
    if who.admin:
        return team
    if team is not None and team != who.team:
        raise errors.PermissionDeniedError("only an admin API key may read another team's events")
    return who.team


@router.get("", response_model=EventList)
async def list_events(
    who: Who,
    svc: Svc,
    sandbox_id: SandboxFilter = None,
    type: TypeFilter = [],  # noqa: B006 - the wire name
    since: Annotated[float | None, Query(ge=0, allow_inf_nan=False, description="Unix seconds")] = None,
    until: Annotated[float | None, Query(ge=0, allow_inf_nan=False, description="Unix seconds")] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="event_id: only later ones (a page's next_after)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    team: TeamFilter = None,
) -> EventList:
    """Sandboxes' lifecycle events, oldest first: created, paused, resumed, hibernated, woken,
    checkpointed, restored, forked, killed (with why), oom."""
    found = await svc.events.list(
        _team(who, team), sandbox_id=sandbox_id, types=type, since=since, until=until, after=after, limit=limit
    )
    return EventList(events=found, next_after=found[-1].event_id if len(found) == limit else None)


@router.get("/stream", response_class=StreamingResponse, responses={200: {"content": {SSE: {}}}})
async def stream_events(
    who: Who,
    svc: Svc,
    sandbox_id: SandboxFilter = None,
    type: TypeFilter = [],  # noqa: B006 - the wire name
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="event_id to resume after (default: from now on)")
    ] = None,
    team: TeamFilter = None,
    last_event_id: Annotated[
        int | None, Header(ge=0, le=MAX_ID, description="SSE reconnection: resume after it")
    ] = None,
) -> StreamingResponse:
    """Events as they happen, as Server-Sent Events (`id:` is the event_id, `event:` its type)."""
    stream = svc.events.stream(
        _team(who, team), after=last_event_id if last_event_id is not None else after, sandbox_id=sandbox_id, types=type
    )

    async def body() -> AsyncIterator[bytes]:
        yield b": sandlot events\n\n"  # headers out at once: a client sees the stream open
        async for event in stream:
            yield f"id: {event.event_id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n".encode()

    return StreamingResponse(body(), media_type=SSE, headers={"Cache-Control": "no-cache"})
