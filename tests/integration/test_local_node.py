"""The API's seam over a real node: LocalNode answers plain data and hands out the data plane.

What the API sees of a sandbox through `NodeClient`, against real gVisor: its
status, its agent (a command runs; a paused sandbox's agent refuses), its
network policy changed live, the node's capacity, and a kill after which the
node no longer knows it; and the deaths it reports to the API's reaper.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from sandlot import errors
from sandlot.node.local import LocalNode
from sandlot.node.protocol import NetworkPolicy, SandboxSpec, SandboxStatus

pytestmark = pytest.mark.integration


def test_a_sandbox_through_the_seam(node: Any, aio: Any, busybox_image: Any) -> None:
    local = LocalNode(node)
    status = aio(local.create(SandboxSpec(image="busybox", env={"WHO": "seam"}, network="egress")))
    sid = status.sandbox_id
    try:
        assert isinstance(status, SandboxStatus)
        assert (status.node, status.state, status.runtime, status.template) == ("local", "running", "gvisor", "busybox")
        assert status.saves_memory and status.network["mode"] == "egress" and status.address

        agent = aio(local.agent(sid))
        assert aio(local.agent(sid)) is agent  # one per sandbox: callers key caches on it

        async def run() -> bytes:
            proc = await agent.start("echo $WHO-$EXTRA", env={"EXTRA": "ok"})
            return b"".join([data async for _, data in proc.output()])

        assert aio(run()) == b"seam-ok\n"  # the sandbox's env under the command's

        changed = aio(local.set_network(sid, NetworkPolicy.parse({"mode": "egress", "allow": ["10.9.8.0/24"]})))
        assert changed.network["allow"] == ["10.9.8.0/24"]

        aio(local.pause(sid))
        assert aio(local.status(sid)).state == "paused"  # type: ignore[union-attr]
        with pytest.raises(errors.SandboxStateError, match="paused"):
            agent.agent  # noqa: B018 (the property is the check)
        aio(local.resume(sid))
        assert aio(run()) == b"seam-ok\n"

        info = aio(local.info())
        assert info.name == "local" and info.sandboxes >= 1 and info.cpus >= 1
        assert 0 < info.memory_available_bytes <= info.memory_total_bytes
        assert 0 < info.disk_free_bytes <= info.disk_total_bytes
        assert "gvisor" in info.runtimes and "busybox" in info.templates
    finally:
        aio(local.kill(sid))
    assert aio(local.status(sid)) is None
    assert agent.gone
    with pytest.raises(errors.SandboxNotFoundError):
        aio(local.kill(sid))


def test_exited_reports_deaths_not_kills(node: Any, aio: Any, busybox_image: Any) -> None:
    """What the API's reaper reconciles each tick: a sandbox that died on its own, once; never a killed one."""
    local = LocalNode(node)
    crashed, killed = (aio(local.create(SandboxSpec(image="busybox"))).sandbox_id for _ in range(2))
    aio(local.kill(killed))
    for pid in node.get(crashed).runtime.host_pids(crashed):  # as a crash would
        os.kill(pid, signal.SIGKILL)
    seen: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while crashed not in seen and time.monotonic() < deadline:
        seen |= aio(local.exited())
        time.sleep(0.1)
    reason = "its agent (the sandbox's init) exited or was killed, and every process in it ended"
    assert seen.get(crashed) == reason and killed not in seen, seen
    assert crashed not in aio(local.exited())  # taken: reported once
    assert aio(local.status(crashed)) is None
