"""Reservations on SQLite (`sandlot serve`): concurrent holds see each other; released or expired room is back.
(On PostgreSQL, across two replicas: tests/fleet/test_fleet.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from sandlot import errors
from sandlot.api.reservations import Amount, Check, Reservations
from sandlot.api.store import Store


def _at_most(n: int) -> Check:
    def check(c: Connection, held: Amount) -> None:
        if held.sandboxes + 1 > n:
            raise errors.LimitReachedError(f"{held.sandboxes} held, {n} fit")

    return check


def test_concurrent_holds_never_overshoot_and_release_gives_room_back(tmp_path: Path) -> None:
    async def main() -> None:
        store = Store(f"sqlite:///{tmp_path / 'db'}")
        await store.init()
        res = Reservations(store)
        answers = await asyncio.gather(
            *(res.hold("team:t", Amount(sandboxes=1), _at_most(3)) for _ in range(8)),
            return_exceptions=True,
        )
        held = [a for a in answers if isinstance(a, str)]
        assert len(held) == 3 and all(isinstance(a, errors.LimitReachedError) for a in answers if a not in held)
        assert (await res.held("team:t")).sandboxes == 3 and (await res.held("team:u")).sandboxes == 0
        await res.release(held[0])
        await res.hold("team:t", Amount(sandboxes=1), _at_most(3))
        with pytest.raises(errors.LimitReachedError):
            await res.hold("team:t", Amount(sandboxes=1), _at_most(3))
        await store.close()

    asyncio.run(main())


def test_a_reservation_nobody_released_expires(tmp_path: Path) -> None:
    async def main() -> None:
        store = Store(f"sqlite:///{tmp_path / 'db'}")
        await store.init()
        res = Reservations(store, ttl_s=0.2)
        await res.hold("node:n", Amount(sandboxes=1, memory_mb=512), _at_most(1))
        with pytest.raises(errors.LimitReachedError):
            await res.hold("node:n", Amount(sandboxes=1), _at_most(1))
        await asyncio.sleep(0.3)  # its replica died midway: the room comes back once it expires
        await res.hold("node:n", Amount(sandboxes=1), _at_most(1))
        await store.close()

    asyncio.run(main())
