"""The API's seam over a real node: LocalNode answers plain data and hands out the data plane.

What the API sees of a sandbox through `NodeClient`, against real gVisor: its
status, its agent (a command runs; a paused sandbox's agent refuses), its
network policy changed live, the node's capacity, and a kill after which the
node no longer knows it.
"""

from __future__ import annotations

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
