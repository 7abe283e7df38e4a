"""Placement: which node of a fleet gets a create (api/fleet/placement.py), and what the node
registry counts as committed on each node (api/fleet/registry.py, on SQLite)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sandlot import errors
from sandlot.api.fleet.fleet import Fleet, NodeTaken
from sandlot.api.fleet.placement import Overcommit, fits, rank, refusal
from sandlot.api.fleet.registry import NodeRecord, NodeRegistry
from sandlot.api.store import SandboxRecord, Store
from sandlot.node.protocol import Limits, NodeInfo, SandboxSpec

GIB = 1 << 30


def info(name: str, *, cpus: int = 4, memory: int = 8 * GIB, templates: tuple[str, ...] = ("base",)) -> NodeInfo:
    return NodeInfo(
        name=name, version="1", default_runtime="gvisor", runtimes=["gvisor", "container"], sandboxes=0,
        cpus=cpus, memory_total_bytes=16 * GIB, memory_available_bytes=memory,
        disk_total_bytes=100 * GIB, disk_free_bytes=50 * GIB, templates=list(templates),
    )  # fmt: skip


def node(
    name: str,
    *,
    sandboxes: int = 0,
    cpus: int = 4,
    templates: tuple[str, ...] = ("base",),
    cpu: float | None = None,
    memory_mb: int | None = None,
    **kw: object,
) -> NodeRecord:
    """A node whose records hold `sandboxes` sandboxes of 1 cpu and 512 MiB each, unless `cpu` and
    `memory_mb` say what they commit."""
    return NodeRecord(
        name=name, url=f"http://{name}", state=str(kw.pop("state", "active")), labels=dict(kw.pop("labels", {})),  # type: ignore[call-overload]
        info=info(name, cpus=cpus, memory=int(kw.pop("memory", 8 * GIB)), templates=templates),  # type: ignore[call-overload]
        joined_at=0, last_seen=float(kw.pop("last_seen", time.time())), sandboxes=sandboxes,  # type: ignore[arg-type]
        committed_cpu=sandboxes * 1.0 if cpu is None else cpu,
        committed_memory_mb=sandboxes * 512 if memory_mb is None else memory_mb,
    )  # fmt: skip


def names(nodes: list[NodeRecord]) -> list[str]:
    return [n.name for n in nodes]


def test_least_committed_first() -> None:
    spec = SandboxSpec(image="base")
    assert names(rank([node("a", sandboxes=4), node("b", sandboxes=1), node("c", sandboxes=6, cpus=16)], spec)) == [
        "b", "c", "a",
    ]  # fmt: skip
    # one big sandbox commits more than several small ones: committed limits count, not sandboxes
    big, small = node("big", sandboxes=1, cpu=8, memory_mb=8192), node("small", sandboxes=5, cpu=1.25, memory_mb=640)
    assert names(rank([big, small], spec)) == ["small", "big"]
    # memory counts as much as cpu: the larger of the two shares ranks
    assert names(rank([node("m", cpu=0, memory_mb=20_000), node("c", cpu=10, memory_mb=0)], spec)) == ["c", "m"]


def test_never_a_dead_draining_or_unfit_node() -> None:
    spec = SandboxSpec(image="base", runtime="microvm")
    assert rank([node("a")], spec) == []  # no such runtime there
    assert refusal(node("a"), spec, {}) == "cannot run microvm sandboxes (it runs gvisor, container)"
    spec = SandboxSpec(image="base", limits=Limits(memory_mb=4096))
    nodes = [node("dead", last_seen=time.time() - 60), node("drain", state="draining"), node("small", memory=GIB),
             node("ok")]  # fmt: skip
    assert names(rank(nodes, spec)) == ["ok"]
    assert refusal(nodes[1], spec, {}) == "is draining"
    assert refusal(nodes[2], spec, {}) == "has 1024 MiB of memory free, less than the 4096 MiB asked"


def test_committed_memory_stops_at_the_overcommit_ratio() -> None:
    spec = SandboxSpec(image="base", limits=Limits(memory_mb=1024))
    full = node("full", cpu=0, memory_mb=24 * 1024 - 1000)  # 16 GiB x 1.5 = 24 GiB: 1024 MiB more does not fit
    why = refusal(full, spec, {})
    assert why is not None and "23576 MiB of memory committed" in why and "24576 MiB" in why, why
    assert "1.5x its memory, --memory-overcommit" in why
    assert rank([full], spec) == []
    assert fits(full, spec, {}, Overcommit(memory=2.0))  # a replica that lets nodes commit more
    assert fits(node("n", cpu=0, memory_mb=15 * 1024), spec, {}, Overcommit(memory=1.0))  # exactly full
    assert not fits(node("n", cpu=0, memory_mb=15 * 1024 + 1), spec, {}, Overcommit(memory=1.0))


def test_committed_cpu_stops_at_the_overcommit_ratio() -> None:
    spec = SandboxSpec(image="base", limits=Limits(cpu=1.0, memory_mb=64))
    assert fits(node("n", cpus=4, cpu=15.0, memory_mb=0), spec, {})  # 4 cores x 4 = 16: exactly full
    why = refusal(node("n", cpus=4, cpu=15.5, memory_mb=0), spec, {})
    assert (
        why
        == "has 15.5 cores committed to its sandboxes' limits; 1 more is past its 16 (4x its 4 cores, --cpu-overcommit)"
    )
    assert fits(node("n", cpus=4, cpu=2.9, memory_mb=0), spec, {}, Overcommit(cpu=1.0))
    assert not fits(node("n", cpus=4, cpu=3.1, memory_mb=0), spec, {}, Overcommit(cpu=1.0))
    with pytest.raises(errors.InvalidArgumentError, match="cpu overcommit ratio must be above 0"):
        Overcommit(cpu=0)


def test_a_cached_template_wins_a_tie_and_labels_must_match() -> None:
    spec = SandboxSpec(image="app")
    nodes = [node("cold"), node("warm", templates=("base", "app")), node("gpu", labels={"gpu": "true"})]
    assert names(rank(nodes, spec))[0] == "warm"
    assert names(rank(nodes, spec, {"gpu": "true"})) == ["gpu"]
    assert rank(nodes, spec, {"gpu": "false"}) == []
    assert refusal(nodes[2], spec, {"gpu": "false", "zone": "b"}) == "lacks the labels gpu=false, zone=b"
    # a missing template costs about two more sandboxes like this one: less than a busy node's load
    assert names(rank([node("cold"), node("warm", sandboxes=1, templates=("app",))], spec)) == ["warm", "cold"]
    assert names(rank([node("cold"), node("warm", sandboxes=3, templates=("app",))], spec)) == ["cold", "warm"]


def test_the_registry_commits_what_holds_compute_and_what_is_being_placed(tmp_path: Path) -> None:
    """Running, starting and paused sandboxes commit their limits; hibernated ones count as
    sandboxes but released their compute; killed ones count for nothing; a create being placed
    commits its limits until it is made."""

    async def main() -> None:
        store = Store(f"sqlite:///{tmp_path / 'db'}")
        await store.init()
        registry = NodeRegistry(store)
        await registry.join("n", "http://127.0.0.1:9", {}, info("n"))
        await registry.heartbeat("n", info("n"))
        now = time.time()
        held = [("running", 1.0, 512), ("paused", 0.5, 256), ("starting", 2.0, 1024), ("hibernated", 4.0, 4096)]
        for i, (state, cpu, memory_mb) in enumerate([*held, ("killed", 8.0, 8192)]):
            rec = SandboxRecord(
                sandbox_id=f"sb-{i:016d}", team="t", template="base", runtime="gvisor", cpu=cpu, memory_mb=memory_mb,
                disk_mb=1024, state=state, created_at=now, ends_at=now + 60, node="n",
            )  # fmt: skip
            await store.add_sandbox(rec)
        (rec,) = await registry.list()
        assert (rec.sandboxes, rec.committed_cpu, rec.committed_memory_mb) == (4, 3.5, 1792)
        fleet = Fleet(store, "token", lambda *_: None)  # type: ignore[arg-type,return-value]
        async with fleet.reserve("n", SandboxSpec(image="base", limits=Limits(cpu=2.0, memory_mb=2048))):
            (rec,) = await registry.list()
            assert (rec.sandboxes, rec.committed_cpu, rec.committed_memory_mb) == (5, 5.5, 3840)
        (rec,) = await registry.list()
        assert (rec.sandboxes, rec.committed_cpu, rec.committed_memory_mb) == (4, 3.5, 1792)
        # what the node may still take is checked against the records too: 16 cores in all, 3.5 committed
        async with fleet.reserve("n", SandboxSpec(image="base", limits=Limits(cpu=12.5, memory_mb=64))):
            pass
        with pytest.raises(NodeTaken):
            async with fleet.reserve("n", SandboxSpec(image="base", limits=Limits(cpu=12.6, memory_mb=64))):
                pass
        await store.close()

    asyncio.run(main())
