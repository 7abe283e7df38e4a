"""A fleet's creates that mount volumes (api/fleet/fleet.py), on SQLite: where each volume is
comes from its node's heartbeat in the registry, so a create that cannot go there fails at once,
before any node is asked (the nodes here are registry rows only; tests/fleet runs real ones)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sandlot import errors
from sandlot.api.fleet.fleet import Fleet
from sandlot.api.store import SandboxRecord, Store
from sandlot.node.protocol import Limits, NodeInfo, NodeVolume, SandboxSpec, VolumeMount
from sandlot.node.spec import new_sandbox_id

GIB = 1 << 30
VOL_A, VOL_B = "vol-aaaaaaaaaaaaaaaa", "vol-bbbbbbbbbbbbbbbb"


def info(name: str, *volumes: tuple[str, str]) -> NodeInfo:
    return NodeInfo(
        name=name, version="1", default_runtime="gvisor", runtimes=["gvisor"], sandboxes=0, cpus=2,
        memory_total_bytes=8 * GIB, memory_available_bytes=4 * GIB, disk_total_bytes=100 * GIB,
        disk_free_bytes=50 * GIB, volumes=[NodeVolume(volume_id=v, team="t", name=n) for v, n in volumes],
    )  # fmt: skip


def spec(*volume_ids: str, **limits: int) -> SandboxSpec:
    mounts = [VolumeMount(v, f"/v{i}") for i, v in enumerate(volume_ids)]
    return SandboxSpec(image="busybox", volumes=mounts, limits=Limits(**limits))  # type: ignore[arg-type]


def test_a_create_with_volumes_fails_at_once_where_their_node_cannot_take_it(tmp_path: Path) -> None:
    async def main() -> None:
        store = Store(f"sqlite:///{tmp_path / 'db'}")
        await store.init()
        fleet = Fleet(store, "token", lambda *_: None, node_timeout_s=30)  # type: ignore[arg-type,return-value]
        for name, vols in (("n1", [(VOL_A, "a")]), ("n2", [(VOL_B, "b")])):
            await fleet.registry.join(name, f"http://{name}", {}, info(name, *vols))
            await fleet.registry.heartbeat(name, info(name, *vols))
        await fleet.registry.join("n3", "http://n3", {}, info("n3", ("vol-cccccccccccccccc", "c")))  # no heartbeat

        with pytest.raises(errors.InvalidArgumentError) as split:
            await fleet.create(spec(VOL_A, VOL_B))
        assert split.value.field == "volumes"
        assert "on different nodes: 'a' on node n1; 'b' on node n2" in str(split.value)
        await fleet.registry.set_state("n1", "draining")
        with pytest.raises(errors.RuntimeUnavailableError, match="volume 'a' is on node n1, which is draining"):
            await fleet.create(spec(VOL_A))
        await fleet.registry.set_state("n1", "active")
        with pytest.raises(errors.RuntimeUnavailableError, match=r"volume 'a' is on node n1, which has 4096 MiB"):
            await fleet.create(spec(VOL_A, memory_mb=8192))
        now = time.time()  # sandboxes on n2 with 7.5 of its 2 x 4 cores committed
        await store.add_sandbox(
            SandboxRecord(sandbox_id=new_sandbox_id(), team="t", template="busybox", runtime="gvisor", cpu=7.5,
                          memory_mb=512, disk_mb=1024, state="running", created_at=now, ends_at=now + 60, node="n2")
        )  # fmt: skip
        with pytest.raises(errors.RuntimeUnavailableError, match=r"volume 'b' is on node n2, which has 7.5 cores"):
            await fleet.create(spec(VOL_B, cpu=1))
        # a node that stopped heartbeating (n3 never started): its volume is known, and unusable
        with pytest.raises(errors.NodeUnreachableError, match="volume 'c' is on node n3, which is unreachable"):
            await fleet.find_volume("t", "c")
        with pytest.raises(errors.NodeUnreachableError, match="volume 'c' is on node n3, which is unreachable"):
            await fleet.create(spec("vol-cccccccccccccccc"))
        with pytest.raises(errors.ConflictError, match=r"volume 'c' already exists \(on node n3\)"):
            await fleet.create_volume("t", "c")
        with pytest.raises(errors.VolumeNotFoundError, match="vol-dddddddddddddddd is on no node"):
            await fleet.create(spec("vol-dddddddddddddddd"))
        await store.close()

    asyncio.run(main())
