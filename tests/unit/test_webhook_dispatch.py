"""The webhook dispatcher on a real SQLite store and a real receiver: it gives up after MAX_ATTEMPTS,
and two dispatchers (two API replicas) deliver each event once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import sqlalchemy as sa

from sandlot.api import webhooks
from sandlot.api.events import EventLog
from sandlot.api.store import SandboxRecord, Store
from sandlot.models import WebhookDelivery
from tests.api.test_webhooks import Receiver

Done = Callable[[list[WebhookDelivery]], bool]


def _rec(sid: str) -> SandboxRecord:
    return SandboxRecord(sid, "t", "busybox", "gvisor", 1.0, 512, 1024, "running", 0.0, 1e12)


def _scenario(
    tmp_path: Path,
    receiver: Receiver,
    types: list[str],
    make: Callable[[Store], Awaitable[None]],
    replicas: int,
    done: Done,
) -> list[WebhookDelivery]:
    """Make events with `make`, then run `replicas` dispatchers until `done(delivery log)`."""

    async def main() -> list[WebhookDelivery]:
        store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
        await store.init()
        log = EventLog(store)
        await log.init()
        hooks = webhooks.Webhooks(store, log)
        await hooks.init()
        hook = await hooks.create("t", receiver.url, types)
        await make(store)
        dispatchers = [webhooks.Dispatcher(store, backoff_s=0.01) for _ in range(replicas)]
        try:
            while not done(entries := await hooks.deliveries("t", hook.webhook_id)):
                for d in dispatchers:
                    await d.tick()
                await asyncio.sleep(0.02)
            return entries
        finally:
            for d in dispatchers:
                await d.close()
            await store.close()

    try:
        return asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        receiver.close()


def test_gives_up_after_max_attempts(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=1000)

    async def make(store: Store) -> None:
        await store.add_sandbox(_rec("sb-1"))

    (entry,) = _scenario(tmp_path, receiver, ["created"], make, 1, lambda log: bool(log) and log[0].status == "failed")
    assert entry.attempts == webhooks.MAX_ATTEMPTS and entry.last_status_code == 500
    assert "HTTP 500" in (entry.last_error or "")
    assert len(receiver.got) == webhooks.MAX_ATTEMPTS


def test_two_replicas_deliver_each_event_once(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=0)

    async def make(store: Store) -> None:
        for i in range(5):
            await store.add_sandbox(_rec(f"sb-{i}"))
            await store.set_state(f"sb-{i}", "killed", "killed by request")

    log = _scenario(
        tmp_path, receiver, [], make, 2, lambda log: len(log) == 10 and all(e.status == "delivered" for e in log)
    )
    assert sorted(e.type for e in log) == ["created"] * 5 + ["killed"] * 5
    assert len(receiver.got) == 10


def test_old_events_and_their_deliveries_are_pruned(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=0)

    async def make(store: Store) -> None:
        await store.add_sandbox(_rec("sb-1"))

    _scenario(tmp_path, receiver, [], make, 1, lambda log: bool(log) and log[0].status == "delivered")

    async def prune() -> tuple[int, int]:
        store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
        log = EventLog(store)
        d = webhooks.Dispatcher(store)
        await d.prune(time.time() + 1)
        left = await store._run(
            lambda c: (
                c.execute(sa.select(sa.func.count()).select_from(webhooks.events)).scalar_one(),
                c.execute(sa.select(sa.func.count()).select_from(webhooks.deliveries)).scalar_one(),
            )
        )
        assert await log.list(None) == []
        await d.close()
        await store.close()
        return left

    assert asyncio.run(prune()) == (0, 0)
