"""Warm pools: started sandboxes handed out once each, refilled in the background."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from sandlot.node import Limits, SandboxSpec
from sandlot.node.pool import pool_key

pytestmark = pytest.mark.integration


def _wait(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_warm_pool_hands_out_each_sandbox_once(node: Any, aio: Any) -> None:
    spec = SandboxSpec(image="busybox", limits=Limits(memory_mb=200))  # a key no other test uses
    key = pool_key(spec)

    async def set_size(n: int) -> None:
        node.pool.set_size(spec, n)

    aio(set_size(2))
    _wait(lambda: node.pool.idle(key) == 2, "the pool to fill")
    pooled_ids = {s.id for s in node._sandboxes.values() if s.pooled}
    assert len(pooled_ids) == 2 and not pooled_ids & {s.id for s in node.list_sandboxes()}
    hits = node.pool.hits
    taken = []
    try:
        for i in range(3):
            sbx = aio(node.create(SandboxSpec(image="busybox", limits=Limits(memory_mb=200), env={"N": str(i)})))
            taken.append(sbx)
            # The requested env applies although the sandbox booted before the request.
            assert aio(sbx.run("echo $N; ls /tmp | wc -l")).stdout.split() == [str(i), "0"]
            _wait(lambda: node.pool.idle(key) == 2, "the pool to refill")
        assert len({s.id for s in taken}) == 3  # never the same sandbox twice
        assert node.pool.hits - hits == 3
        assert {s.id for s in taken} <= {s.id for s in node.list_sandboxes()}
        # A different spec is not served from this pool.
        other = aio(node.create(SandboxSpec(image="busybox", limits=Limits(memory_mb=300))))
        taken.append(other)
        assert node.pool.hits - hits == 3
        idle_ids = {s.id for s in node._sandboxes.values() if s.pooled}
        aio(set_size(0))
        _wait(lambda: not idle_ids & set(node._sandboxes), "the emptied pool's sandboxes to be killed")
    finally:
        aio(set_size(0))
        for sbx in taken:
            aio(node.kill(sbx.id))
