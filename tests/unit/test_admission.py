"""The start queue: FIFO, bounded, refuses with a retry hint, forgets waiters that leave."""

from __future__ import annotations

import asyncio

import pytest

from sandlot import errors
from sandlot.node.admission import Admission


async def _hold(adm: Admission, name: str, order: list[str], release: asyncio.Event, **kw: bool) -> None:
    async with adm.slot(**kw):
        order.append(name)
        await release.wait()


def test_starts_are_admitted_in_arrival_order() -> None:
    async def go() -> list[str]:
        adm = Admission(slots=2, max_queued=10)
        order: list[str] = []
        release = asyncio.Event()
        tasks = []
        for i in range(6):
            tasks.append(asyncio.ensure_future(_hold(adm, f"s{i}", order, release)))
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert order == ["s0", "s1"] and adm.running == 2 and adm.queued == 4
        release.set()
        await asyncio.gather(*tasks)
        assert adm.running == 0 and adm.queued == 0
        return order

    assert asyncio.run(go()) == [f"s{i}" for i in range(6)]


def test_a_full_queue_refuses_at_once_with_a_retry_hint() -> None:
    async def go() -> None:
        adm = Admission(slots=1, max_queued=2)
        release = asyncio.Event()
        held = [asyncio.ensure_future(_hold(adm, str(i), [], release)) for i in range(3)]
        await asyncio.sleep(0.01)
        with pytest.raises(errors.ServerBusyError) as info:
            async with adm.slot():
                pass
        assert info.value.retry_after >= 1
        assert "2 sandbox starts are already queued" in str(info.value) and "retry in" in str(info.value)
        # Background starts (pool refills) are never refused; they wait behind everyone.
        order: list[str] = []
        bg = asyncio.ensure_future(_hold(adm, "bg", order, release, background=True))
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*held, bg)
        assert order == ["bg"]

    asyncio.run(go())


def test_a_waiter_that_gives_up_leaves_the_queue() -> None:
    async def go() -> None:
        adm = Admission(slots=1, max_queued=5)
        order: list[str] = []
        release = asyncio.Event()
        first = asyncio.ensure_future(_hold(adm, "first", order, release))
        gone = asyncio.ensure_future(_hold(adm, "gone", order, release))
        last = asyncio.ensure_future(_hold(adm, "last", order, release))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client went away
        await asyncio.sleep(0.01)
        assert adm.queued == 1
        release.set()
        await asyncio.gather(first, last)
        assert order == ["first", "last"] and adm.running == 0

    asyncio.run(go())


def test_a_start_that_waits_too_long_is_refused() -> None:
    async def go() -> None:
        adm = Admission(slots=1, max_queued=5, max_wait=0.05)
        release = asyncio.Event()
        first = asyncio.ensure_future(_hold(adm, "first", [], release))
        await asyncio.sleep(0.01)
        with pytest.raises(errors.ServerBusyError, match="waited 0s in the queue"):
            async with adm.slot():
                pass
        assert adm.queued == 0
        release.set()
        await first
        async with adm.slot():  # the slot came back
            assert adm.running == 1

    asyncio.run(go())
