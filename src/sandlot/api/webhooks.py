"""Webhooks per team: lifecycle events POSTed to a URL, signed with HMAC, retried with backoff, logged.

A webhook (POST /webhooks) names a URL and the event types it wants (api/events.py).
Every API process runs one `Dispatcher` loop that, every `POLL_S` while any webhook
exists (every `IDLE_POLL_S` while none does, or at once when one is made here), in one
transaction:

- reads each webhook's new events from the store (after the webhook's cursor) and
  claims each one by inserting its delivery row: (webhook, event) is the row's
  key, so with several API replicas exactly one of them sends it;
- sends due deliveries: a POST of the event's JSON with `X-Sandlot-Signature:
  t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` (what to check, and
  reject old `t` to stop replays), `X-Sandlot-Event` and `X-Sandlot-Delivery`. A
  2xx delivers it; anything else is retried after BACKOFF_S * 2**(attempts-1)
  (capped at MAX_BACKOFF_S), MAX_ATTEMPTS in all, then it is failed. A retry is
  claimed by moving its `next_at` with a conditional UPDATE (one replica wins).

The delivery rows are the log (GET /webhooks/{id}/deliveries): attempts, the
last status or error, when the next attempt is due. A webhook starts with the
events recorded after it was made; deleting it deletes its log.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandlot import errors
from sandlot.api.events import RETENTION_S, EventLog, events
from sandlot.api.store import Store, metadata_obj
from sandlot.models import EventInfo, WebhookCreated, WebhookDelivery, WebhookInfo

__all__ = ["BACKOFF_S", "MAX_ATTEMPTS", "Dispatcher", "Webhooks", "sign"]

log = logging.getLogger("sandlot.api.webhooks")

POLL_S = 1.0
#: how often a process with no webhook looks for one made through another replica (an idle server's
#: database is left alone otherwise: density)
IDLE_POLL_S = 10.0
BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
MAX_ATTEMPTS = 6
#: a delivery's request gives up after this long (then it is retried like any failure)
SEND_TIMEOUT_S = 10.0
#: webhooks a team may have
MAX_PER_TEAM = 20
#: how often old events and their deliveries are deleted (events.RETENTION_S)
PRUNE_EVERY_S = 3600.0

webhooks = sa.Table(
    "webhooks",
    metadata_obj,
    sa.Column("webhook_id", sa.String(64), primary_key=True),
    sa.Column("team", sa.String(128), nullable=False, index=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("events", sa.Text, nullable=False),  # space-separated types; "" = every type
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # the last event id whose delivery was claimed (by any replica)
    sa.Column("cursor", sa.Integer, nullable=False),
)

deliveries = sa.Table(
    "webhook_deliveries",
    metadata_obj,
    sa.Column("webhook_id", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.Integer, primary_key=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, delivered, failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_attempt_at", sa.Float, nullable=True),
    sa.Column("next_at", sa.Float, nullable=True),
    sa.Index("ix_webhook_deliveries_due", "status", "next_at"),
)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Sandlot-Signature` header of `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _info(m: Mapping[Any, Any]) -> WebhookInfo:
    return WebhookInfo(
        webhook_id=str(m["webhook_id"]),
        team=str(m["team"]),
        url=str(m["url"]),
        events=str(m["events"]).split(),
        created_at=float(m["created_at"]),
    )


class Webhooks:
    """The webhooks' records (through the store) and their delivery log."""

    def __init__(self, store: Store, event_log: EventLog) -> None:
        self.store = store
        self.events = event_log

    async def init(self) -> None:
        await asyncio.to_thread(metadata_obj.create_all, self.store.engine, [webhooks, deliveries])

    async def create(self, team: str, url: str, types: list[str]) -> WebhookCreated:
        cursor = await self.events.last_id()
        row = {
            "webhook_id": "wh-" + secrets.token_hex(8),
            "team": team,
            "url": url,
            "events": " ".join(sorted(set(types))),
            "secret": "whsec_" + secrets.token_hex(24),
            "created_at": time.time(),
            "cursor": cursor,
        }

        def q(c: Connection) -> None:
            have = c.execute(sa.select(sa.func.count()).where(webhooks.c.team == team)).scalar_one()
            if have >= MAX_PER_TEAM:
                raise errors.LimitReachedError(f"team {team!r} has {have} webhooks, the most it may have")
            c.execute(webhooks.insert().values(**row))

        await self.store._run(q)
        return WebhookCreated(**_info(row).model_dump(), secret=str(row["secret"]))

    async def list(self, team: str | None) -> builtins.list[WebhookInfo]:
        stmt = sa.select(webhooks).order_by(webhooks.c.created_at)
        if team is not None:
            stmt = stmt.where(webhooks.c.team == team)
        return await self.store._run(lambda c: [_info(r._mapping) for r in c.execute(stmt)])

    async def get(self, team: str | None, webhook_id: str) -> WebhookInfo:
        where = [webhooks.c.webhook_id == webhook_id] + ([webhooks.c.team == team] if team is not None else [])
        row = await self.store._run(lambda c: c.execute(sa.select(webhooks).where(*where)).first())
        if row is None:
            raise errors.NotFoundError(f"webhook {webhook_id} not found")
        return _info(row._mapping)

    async def delete(self, team: str | None, webhook_id: str) -> None:
        await self.get(team, webhook_id)

        def q(c: Connection) -> None:
            c.execute(deliveries.delete().where(deliveries.c.webhook_id == webhook_id))
            c.execute(webhooks.delete().where(webhooks.c.webhook_id == webhook_id))

        await self.store._run(q)

    async def deliveries(self, team: str | None, webhook_id: str, limit: int = 100) -> builtins.list[WebhookDelivery]:
        await self.get(team, webhook_id)
        stmt = (
            sa.select(deliveries)
            .where(deliveries.c.webhook_id == webhook_id)
            .order_by(deliveries.c.event_id.desc())
            .limit(limit)
        )

        def q(c: Connection) -> list[WebhookDelivery]:
            out = []
            for r in c.execute(stmt):
                m = dict(r._mapping)
                m["next_attempt_at"] = m.pop("next_at") if m["status"] == "pending" else None
                out.append(WebhookDelivery(**m))
            return out

        return await self.store._run(q)


class Dispatcher:
    """One per API process: claims new events for every webhook and sends due deliveries."""

    def __init__(
        self, store: Store, poll_s: float = POLL_S, backoff_s: float = BACKOFF_S, idle_poll_s: float = IDLE_POLL_S
    ) -> None:
        self.store = store
        self.poll_s = poll_s
        self.idle_poll_s = idle_poll_s
        self._woken = asyncio.Event()
        self.backoff_s = backoff_s
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(timeout=SEND_TIMEOUT_S, follow_redirects=False)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        for task in [self._task, *self._sending]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._http.aclose()

    def wake(self) -> None:
        """A webhook was made in this process: start polling now, not after the idle wait."""
        self._woken.set()

    async def _run(self) -> None:
        pruned_at = 0.0
        while True:
            active = True
            try:
                active = await self.tick()
                if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                    await self.prune(time.time() - RETENTION_S)
                    pruned_at = time.monotonic()
            except Exception:  # a database hiccup must not end deliveries
                log.exception("webhook dispatch failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.poll_s if active else self.idle_poll_s)
            self._woken.clear()

    async def prune(self, older_than: float) -> None:
        """Bounded storage: events recorded before `older_than`, and their deliveries, go."""

        def q(c: Connection) -> None:
            old = sa.select(events.c.event_id).where(events.c.at < older_than)
            c.execute(deliveries.delete().where(deliveries.c.event_id.in_(old)))
            c.execute(events.delete().where(events.c.at < older_than))

        await self.store._run(q)

    async def tick(self) -> bool:
        """Claim new events, then send every delivery due now (each in its own task), all read in
        one transaction; answers whether any webhook exists (or a delivery is still being sent)."""

        def q(c: Connection) -> tuple[bool, list[tuple[dict[str, object], EventInfo, int]]]:
            return (True, self._take_due(c)) if self._claim_new(c) else (False, [])

        hooks, due = await self.store._run(q)
        for hook, event, attempts in due:
            task = asyncio.create_task(self._send(hook, event, attempts))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return hooks or bool(self._sending)

    def _claim_new(self, c: Connection) -> int:
        """Claims every webhook's new events; answers how many webhooks there are."""
        now = time.time()
        hooks = c.execute(sa.select(webhooks)).all()
        for hook in hooks:
            m = hook._mapping
            where = [events.c.team == m["team"], events.c.event_id > m["cursor"]]
            if m["events"]:
                where.append(events.c.type.in_(str(m["events"]).split()))
            found = c.execute(sa.select(events).where(*where).order_by(events.c.event_id).limit(500)).all()
            if not found:
                continue
            for ev in found:
                # (webhook, event) is the key: another replica's claim of it makes this a no-op
                stmt = _insert_ignore(c, m["webhook_id"], ev.event_id, ev.type, now)
                c.execute(stmt)
            last = found[-1].event_id
            c.execute(
                webhooks.update()
                .where(webhooks.c.webhook_id == m["webhook_id"], webhooks.c.cursor < last)
                .values(cursor=last)
            )
        return len(hooks)

    def _take_due(self, c: Connection) -> list[tuple[dict[str, object], EventInfo, int]]:
        """Due deliveries, each claimed by moving its next_at (a conditional UPDATE: one replica wins)."""
        now = time.time()
        due = c.execute(
            sa.select(deliveries, webhooks.c.url, webhooks.c.secret)
            .join(webhooks, webhooks.c.webhook_id == deliveries.c.webhook_id)
            .where(deliveries.c.status == "pending", deliveries.c.next_at <= now)
            .limit(100)
        ).all()
        out = []
        for d in due:
            m = d._mapping
            won = c.execute(
                deliveries.update()
                .where(
                    deliveries.c.webhook_id == m["webhook_id"],
                    deliveries.c.event_id == m["event_id"],
                    deliveries.c.next_at == m["next_at"],
                )
                .values(next_at=now + SEND_TIMEOUT_S * 3)  # a lease: retried if this process dies sending
            ).rowcount
            ev = c.execute(sa.select(events).where(events.c.event_id == m["event_id"])).first()
            if won and ev is not None:
                hook = {"webhook_id": m["webhook_id"], "url": m["url"], "secret": m["secret"]}
                out.append((hook, EventInfo(**dict(ev._mapping)), int(m["attempts"])))
        return out

    async def _send(self, hook: dict[str, object], event: EventInfo, attempts: int) -> None:
        body = event.model_dump_json().encode()
        now = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "sandlot-webhooks",
            "x-sandlot-event": event.type,
            "x-sandlot-delivery": f"{hook['webhook_id']}:{event.event_id}",
            "x-sandlot-signature": sign(str(hook["secret"]), now, body),
        }
        code: int | None = None
        error: str | None = None
        try:
            resp = await self._http.post(str(hook["url"]), content=body, headers=headers)
            code = resp.status_code
            if not 200 <= code < 300:
                error = f"HTTP {code}: {resp.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts += 1
        if error is None:
            status, next_at = "delivered", None
        elif attempts >= MAX_ATTEMPTS:
            status, next_at = "failed", None
        else:
            status = "pending"
            next_at = time.time() + min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempts - 1))
        values = {
            "status": status,
            "attempts": attempts,
            "last_status_code": code,
            "last_error": error,
            "last_attempt_at": time.time(),
            "next_at": next_at,
        }
        await self.store._run(
            lambda c: c.execute(
                deliveries.update()
                .where(deliveries.c.webhook_id == hook["webhook_id"], deliveries.c.event_id == event.event_id)
                .values(**values)
            )
        )


def _insert_ignore(c: Connection, webhook_id: object, event_id: int, kind: str, now: float) -> sa.Insert:
    row = {
        "webhook_id": webhook_id,
        "event_id": event_id,
        "type": kind,
        "status": "pending",
        "attempts": 0,
        "next_at": now,
    }
    if c.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(deliveries).values(**row).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(deliveries).values(**row).on_conflict_do_nothing()
