"""Lifecycle events: every sandbox's transitions, recorded in the store, listed and streamed.

Kinds (`EVENT_TYPES`): created, paused, resumed, hibernated, woken, checkpointed,
restored, forked (on the checkpoint's sandbox; each fork is also `created`),
killed (`detail`: why: by request, its timeout, it died, lost at a restart), and
oom (a kill for memory, recorded just before its `killed`).

Where they come from: the store calls `on_transition` in the transaction of every
record it makes and every state it sets (api/store.py), so no path that changes
a sandbox's state can forget its event, and an event exists exactly when its
change was committed. Checkpoints, restores and forks, which change no state,
are added by api/checkpoints.py.

Because they live in the store (SQLite or PostgreSQL), any API replica lists them
and streams them (`stream` polls the table every `POLL_S`, from a cursor: the
event id), and webhooks are delivered from the table (api/webhooks.py).

Event ids are given at insert: under PostgreSQL two transactions committing in the
other order could hand a stream a later id first and the earlier one after its
cursor passed it (each transaction here is one short statement group: a window of
milliseconds, not closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandlot.api.store import Store, metadata_obj
from sandlot.models import EVENT_TYPES, EventInfo

__all__ = ["EVENT_TYPES", "POLL_S", "RETENTION_S", "EventLog", "kinds_of"]

log = logging.getLogger("sandlot.api.events")

#: how often a stream looks for new events
POLL_S = 1.0
#: how long events are kept (the webhook dispatcher deletes older ones, with their deliveries)
RETENTION_S = 30 * 24 * 3600.0

events = sa.Table(
    "events",
    metadata_obj,
    sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("team", sa.String(128), nullable=False),
    sa.Column("sandbox_id", sa.String(64), nullable=False, index=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Index("ix_events_team_id", "team", "event_id"),
)


def kinds_of(old: str | None, new: str, reason: str | None) -> list[str]:
    """The events of a record made (`old` None) or moved from `old` to `new`."""
    if old is None:
        return ["created"]
    if old == new:
        return []
    if new == "killed":
        return ["oom", "killed"] if reason == "out of memory" else ["killed"]
    if new in ("paused", "hibernated"):
        return [new]
    if new == "running":
        return ["woken"] if old == "hibernated" else ["resumed"] if old == "paused" else []
    return []


class EventLog:
    """The store's events; install it once per process (it hooks the store's transitions)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.on_transition = self._on_transition

    async def init(self) -> None:
        await asyncio.to_thread(metadata_obj.create_all, self.store.engine, [events])

    def _on_transition(
        self, c: Connection, sandbox_id: str, team: str, old: str | None, new: str, reason: str | None
    ) -> None:
        for kind in kinds_of(old, new, reason):
            self._insert(c, team, sandbox_id, kind, reason if kind in ("killed", "oom") else None)

    def _insert(self, c: Connection, team: str, sandbox_id: str, kind: str, detail: str | None) -> None:
        row = {"at": time.time(), "team": team, "sandbox_id": sandbox_id, "type": kind, "detail": detail}
        c.execute(events.insert().values(**row))

    async def add(self, team: str, sandbox_id: str, kind: str, detail: str | None = None) -> None:
        """An event that changes no state (checkpointed, restored, forked)."""
        assert kind in EVENT_TYPES, kind
        await self.store._run(lambda c: self._insert(c, team, sandbox_id, kind, detail))

    async def list(
        self,
        team: str | None,
        *,
        sandbox_id: str | None = None,
        types: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[EventInfo]:
        """Events oldest first; `team` None: every team's (an admin)."""
        where = []
        if team is not None:
            where.append(events.c.team == team)
        if sandbox_id is not None:
            where.append(events.c.sandbox_id == sandbox_id)
        if types:
            where.append(events.c.type.in_(list(types)))
        if since is not None:
            where.append(events.c.at >= since)
        if until is not None:
            where.append(events.c.at <= until)
        if after is not None:
            where.append(events.c.event_id > after)
        stmt = sa.select(events).where(*where).order_by(events.c.event_id).limit(limit)

        def q(c: Connection) -> list[EventInfo]:
            return [EventInfo(**dict(r._mapping)) for r in c.execute(stmt)]

        return await self.store._run(q)

    async def last_id(self) -> int:
        return int(await self.store._run(lambda c: c.execute(sa.select(sa.func.max(events.c.event_id))).scalar() or 0))

    async def stream(
        self, team: str | None, *, after: int | None, sandbox_id: str | None = None, types: Sequence[str] = ()
    ) -> AsyncIterator[EventInfo]:
        """Events after `after` (None: from now on), as they are recorded by any replica; never ends."""
        cursor = await self.last_id() if after is None else after
        while True:
            batch = await self.list(team, sandbox_id=sandbox_id, types=types, after=cursor, limit=500)
            for event in batch:
                cursor = event.event_id
                yield event
            if len(batch) < 500:
                await asyncio.sleep(POLL_S)
