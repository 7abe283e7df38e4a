"""Which node gets a create: live, active nodes that can run its runtime and carry its labels,
least loaded first, a node that already caches its template before one that would fetch it.

Load is the node's active sandboxes per CPU (from the records, and the reservations of
creates being placed: two creates a moment apart, through any replicas, see each other),
then its free memory; a node short of memory or disk for the sandbox's limits (what its
last heartbeat said is free, less what creates being placed on it reserve) is not a
candidate. A node whose heartbeats stopped never is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from sandlot.api.fleet.registry import NodeRecord
from sandlot.node.protocol import SandboxSpec

__all__ = ["NodeTaken", "fits", "rank"]


class NodeTaken(Exception):
    """A node no longer has room for a create (concurrent creates reserved it first)."""


#: a template missing on a node costs about as much as this many sandboxes of load (it is copied first)
UNCACHED_PENALTY = 2.0


def fits(rec: NodeRecord, spec: SandboxSpec, labels: Mapping[str, str]) -> bool:
    info = rec.info
    if info is None or rec.state != "active":
        return False
    if spec.runtime not in info.runtimes and spec.runtime != info.default_runtime:
        return False
    if any(rec.labels.get(k) != v for k, v in labels.items()):
        return False
    return rec.memory_free_bytes >= spec.limits.memory_mb << 20 and rec.disk_free_bytes >= spec.limits.disk_mb << 20


def rank(
    nodes: list[NodeRecord], spec: SandboxSpec, labels: Mapping[str, str] | None = None, *, timeout: float = 30.0
) -> list[NodeRecord]:
    """The candidates for `spec`, best first."""
    now = time.time()
    ok = [n for n in nodes if n.live(timeout, now) and fits(n, spec, labels or {})]

    def score(n: NodeRecord) -> tuple[float, int]:
        assert n.info is not None
        load = n.sandboxes / max(n.info.cpus, 1)
        if spec.image and spec.image not in n.info.templates:
            load += UNCACHED_PENALTY / max(n.info.cpus, 1)
        return load, -n.memory_free_bytes

    return sorted(ok, key=score)
