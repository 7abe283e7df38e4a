"""Placement: which node of a fleet gets a create (api/fleet/placement.py)."""

from __future__ import annotations

import time

from sandlot.api.fleet.placement import rank
from sandlot.api.fleet.registry import NodeRecord
from sandlot.node.protocol import Limits, NodeInfo, SandboxSpec

GIB = 1 << 30


def node(
    name: str, *, sandboxes: int = 0, cpus: int = 4, templates: tuple[str, ...] = ("base",), **kw: object
) -> NodeRecord:
    info = NodeInfo(
        name=name, version="1", default_runtime="gvisor", runtimes=["gvisor", "container"], sandboxes=sandboxes,
        cpus=cpus, memory_total_bytes=16 * GIB, memory_available_bytes=int(kw.pop("memory", 8 * GIB)),  # type: ignore[call-overload]
        disk_total_bytes=100 * GIB, disk_free_bytes=50 * GIB, templates=list(templates),
    )  # fmt: skip
    return NodeRecord(
        name=name, url=f"http://{name}", state=str(kw.pop("state", "active")), labels=dict(kw.pop("labels", {})),  # type: ignore[call-overload]
        info=info, joined_at=0, last_seen=float(kw.pop("last_seen", time.time())), sandboxes=sandboxes,  # type: ignore[arg-type]
    )  # fmt: skip


def names(nodes: list[NodeRecord]) -> list[str]:
    return [n.name for n in nodes]


def test_least_loaded_first_per_cpu() -> None:
    spec = SandboxSpec(image="base")
    assert names(rank([node("a", sandboxes=4), node("b", sandboxes=1), node("c", sandboxes=6, cpus=16)], spec)) == [
        "b", "c", "a",
    ]  # fmt: skip


def test_never_a_dead_draining_or_unfit_node() -> None:
    spec = SandboxSpec(image="base", runtime="microvm")
    assert rank([node("a")], spec) == []  # no such runtime there
    spec = SandboxSpec(image="base", limits=Limits(memory_mb=4096))
    nodes = [node("dead", last_seen=time.time() - 60), node("drain", state="draining"), node("small", memory=GIB),
             node("ok")]  # fmt: skip
    assert names(rank(nodes, spec)) == ["ok"]


def test_a_cached_template_wins_a_tie_and_labels_must_match() -> None:
    spec = SandboxSpec(image="app")
    nodes = [node("cold"), node("warm", templates=("base", "app")), node("gpu", labels={"gpu": "true"})]
    assert names(rank(nodes, spec))[0] == "warm"
    assert names(rank(nodes, spec, {"gpu": "true"})) == ["gpu"]
    assert rank(nodes, spec, {"gpu": "false"}) == []
