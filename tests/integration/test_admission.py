"""Under load: starts queue in order, a full queue refuses at once, kills never wait behind
starts, a runtime command that times out during a cleanup is retried until done, and a start
that runsc fails transiently is cleaned up and retried."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandlot import errors, failpoints
from sandlot.node import SandboxSpec, cgroups, reaper
from sandlot.node.admission import Admission
from tests.leftovers import assert_clean

pytestmark = pytest.mark.integration


@pytest.fixture
def one_slot(node: Any) -> Iterator[Admission]:
    """The node admits one start at a time for the test (its usual queue comes back after)."""
    saved = node.admission
    node.admission = Admission(slots=1, max_queued=3)
    yield node.admission
    node.admission = saved


async def _wait_for(cond: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_creates_queue_in_order_and_a_full_queue_refuses(node: Any, aio: Any, one_slot: Admission) -> None:
    async def go() -> list[int]:
        finished: list[int] = []

        async def one(i: int) -> Any:
            sbx = await node.create(SandboxSpec(image="busybox"))
            finished.append(i)
            return sbx

        tasks = []
        for i in range(4):  # one starts, three wait: the queue is full
            tasks.append(asyncio.ensure_future(one(i)))
            await asyncio.sleep(0)
        await _wait_for(lambda: one_slot.queued == 3, "three queued starts")
        with pytest.raises(errors.ServerBusyError) as refused:
            await node.create(SandboxSpec(image="busybox"))
        assert refused.value.retry_after >= 1 and "already queued" in str(refused.value)
        made = await asyncio.gather(*tasks)
        for sbx in made:
            await node.kill(sbx.id)
        return finished

    assert aio(go()) == [0, 1, 2, 3]


def test_a_kill_does_not_wait_behind_queued_starts(node: Any, aio: Any, one_slot: Admission) -> None:
    one_slot.max_queued = 50
    victim = aio(node.create(SandboxSpec(image="busybox")))
    pids = victim.runtime.host_pids(victim.id)
    assert pids

    async def go() -> int:
        burst = [asyncio.ensure_future(node.create(SandboxSpec(image="busybox"))) for _ in range(8)]
        try:
            await _wait_for(lambda: one_slot.queued >= 5, "a queue of starts")
            kill = asyncio.ensure_future(node.kill(victim.id))
            # Its processes die at once (SIGKILL, no runtime CLI first), while starts still wait.
            await _wait_for(lambda: not any(reaper.is_live(p) for p in pids), "the victim's processes to die")
            still_queued = one_slot.queued
            await kill
            return still_queued
        finally:
            for sbx in await asyncio.gather(*burst, return_exceptions=True):
                if not isinstance(sbx, BaseException):
                    await node.kill(sbx.id)

    assert aio(go()) > 0
    assert victim.killed and not node.knows(victim.id)


def test_a_runtime_command_that_times_out_in_a_cleanup_is_retried(node: Any, aio: Any) -> None:
    sbx = aio(node.create(SandboxSpec(image="busybox")))
    pids = sbx.runtime.host_pids(sbx.id)
    runtime = node.runtime("gvisor")
    state_files = node.state_dir / "runsc"
    runtime.cleanup_timeout_s = 0.001  # `runsc delete` is killed before it can finish: it times out
    # The node removes runsc's two state files itself when nothing else is kept (`_forget_stopped`);
    # here it finds more, as with another runsc release, so the cleanup must go through `runsc delete`.
    runtime._forget_stopped = lambda sandbox_id: False
    try:
        aio(node.kill(sbx.id))  # the sandbox is dead at once; its cleanup failed and goes on
        assert sbx.killed and not any(reaper.is_live(p) for p in pids)
        assert any(state_files.glob(f"*{sbx.id}*")), "runsc's state should outlive the timed-out delete"
    finally:
        runtime.cleanup_timeout_s = 30.0
        del runtime._forget_stopped

    def cleaned() -> bool:
        return (
            not sbx.dir.exists()
            and not cgroups.paths(sbx.id)
            and not any(state_files.glob(f"*{sbx.id}*"))
            and str(sbx.dir) not in Path("/proc/mounts").read_text()
        )

    aio(_wait_for(cleaned, "the retried cleanup"))


def test_a_start_that_runsc_fails_transiently_is_cleaned_up_and_retried(
    node: Any, aio: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first start fails as runsc's do under load ("cannot read client sync file"), after
    # runsc made everything: processes, state, cgroup; the sandbox has a network namespace.
    monkeypatch.setattr(failpoints, "_points", {"runsc.start.after_run": "error"})
    failed: list[list[int]] = []
    undo = node._undo_start

    async def spy(sbx: Any) -> None:
        failed.append(sbx.runtime.host_pids(sbx.id))
        await undo(sbx)

    monkeypatch.setattr(node, "_undo_start", spy)
    sbx = aio(node.create(SandboxSpec(image="busybox", network="egress")))
    try:
        assert failpoints.armed() == {} and len(failed) == 1 and failed[0], "the first start should have failed"
        assert not any(reaper.is_live(p) for p in failed[0]), "the failed start's processes should be gone"
        assert not set(failed[0]) & set(sbx.runtime.host_pids(sbx.id))
        state_files = list((node.state_dir / "runsc").glob(f"*{sbx.id}*.state"))
        assert len(state_files) == 1, state_files
        out = aio(sbx.run(["ip", "-4", "-o", "addr", "show", "eth0"]))
        assert out.exit_code == 0 and sbx.net.address in out.stdout, out
    finally:
        aio(node.kill(sbx.id))

    def cleaned() -> bool:
        return not sbx.dir.exists() and not cgroups.paths(sbx.id)

    aio(_wait_for(cleaned, "the cleanup"))
    assert_clean(node.config.data_dir, live=node.known_ids(), gone=[sbx.id])
