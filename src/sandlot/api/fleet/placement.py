"""Which node gets a create: live, active nodes that can run its runtime and carry its labels,
least committed first, a node that already caches its template before one that would fetch it.

A node takes a sandbox when two things hold:

- what is free: its last heartbeat's free memory and disk, less what creates being placed on
  it reserve, cover the sandbox's limits;
- what is committed: the cpu and memory limits of the sandboxes it holds (the records' running,
  starting and paused ones: a hibernated sandbox released its compute) and of the creates being
  placed on it, plus this sandbox's, stay within its cores and memory times the replica's
  `Overcommit` ratios. A limit is a ceiling that sandboxes seldom all reach at once, so a node
  may promise more than it has, but only so much more.

Load is the larger of the two committed shares (cpu, memory) the node would have with the
sandbox; ties go to the node with fewer sandboxes per CPU, then the most free memory. A node
whose heartbeats stopped is never a candidate. `refusal` says why a node is not one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from sandlot import errors
from sandlot.api.fleet.registry import NodeRecord
from sandlot.node.protocol import SandboxSpec

__all__ = ["DEFAULT_OVERCOMMIT", "NodeTaken", "Overcommit", "fits", "load", "rank", "refusal"]


class NodeTaken(Exception):
    """A node no longer has room for a create (concurrent creates reserved it first)."""


#: a template missing on a node costs about as much as this many more sandboxes like the one
#: being placed (it is copied there first)
UNCACHED_PENALTY = 2.0


@dataclass(frozen=True)
class Overcommit:
    """How far a node's committed limits may go past what it has: the sum of its sandboxes' memory
    limits up to `memory` x its memory, of their cpu limits up to `cpu` x its cores (OpenStack's
    long-standing defaults: 1.5 for memory, cpu oversubscribed more since idle cores cost nothing)."""

    memory: float = 1.5
    cpu: float = 4.0

    def __post_init__(self) -> None:
        for name in ("memory", "cpu"):
            ratio = getattr(self, name)
            if not 0 < ratio <= 1000:
                raise errors.InvalidArgumentError(
                    f"the {name} overcommit ratio must be above 0 and at most 1000, got {ratio}",
                    field=f"{name}_overcommit",
                )

    def memory_mb(self, rec: NodeRecord) -> int:
        """The memory (MiB) the node may commit."""
        return int((rec.info.memory_total_bytes if rec.info else 0) * self.memory) >> 20

    def cpus(self, rec: NodeRecord) -> float:
        """The cores the node may commit."""
        return (rec.info.cpus if rec.info else 0) * self.cpu


DEFAULT_OVERCOMMIT = Overcommit()


def refusal(
    rec: NodeRecord, spec: SandboxSpec, labels: Mapping[str, str], overcommit: Overcommit = DEFAULT_OVERCOMMIT
) -> str | None:
    """Why node `rec` cannot take `spec` now, as the end of "node NAME ..."; None when it can."""
    info = rec.info
    if info is None:
        return "has not reported its capacity yet"
    if rec.state != "active":
        return f"is {rec.state}"
    if spec.runtime not in info.runtimes and spec.runtime != info.default_runtime:
        return f"cannot run {spec.runtime} sandboxes (it runs {', '.join(info.runtimes) or 'none yet'})"
    missing = [f"{k}={v}" for k, v in sorted(labels.items()) if rec.labels.get(k) != v]
    if missing:
        return f"lacks the label{'s' * (len(missing) > 1)} {', '.join(missing)}"
    limits = spec.limits
    if rec.memory_free_bytes < limits.memory_mb << 20:
        return (
            f"has {max(rec.memory_free_bytes, 0) >> 20} MiB of memory free, less than the {limits.memory_mb} MiB asked"
        )
    if rec.disk_free_bytes < limits.disk_mb << 20:
        return f"has {max(rec.disk_free_bytes, 0) >> 20} MiB of disk free, less than the {limits.disk_mb} MiB asked"
    if rec.committed_memory_mb + limits.memory_mb > overcommit.memory_mb(rec):
        return (
            f"has {rec.committed_memory_mb} MiB of memory committed to its sandboxes' limits; "
            f"{limits.memory_mb} MiB more is past its {overcommit.memory_mb(rec)} MiB "
            f"({overcommit.memory:g}x its memory, --memory-overcommit)"
        )
    if rec.committed_cpu + limits.cpu > overcommit.cpus(rec) + 1e-9:
        return (
            f"has {rec.committed_cpu:g} cores committed to its sandboxes' limits; {limits.cpu:g} more is past "
            f"its {overcommit.cpus(rec):g} ({overcommit.cpu:g}x its {info.cpus} cores, --cpu-overcommit)"
        )
    return None


def fits(
    rec: NodeRecord, spec: SandboxSpec, labels: Mapping[str, str], overcommit: Overcommit = DEFAULT_OVERCOMMIT
) -> bool:
    return refusal(rec, spec, labels, overcommit) is None


def load(rec: NodeRecord, spec: SandboxSpec, overcommit: Overcommit = DEFAULT_OVERCOMMIT) -> float:
    """The larger of the committed shares (cpu, memory) node `rec` would have with `spec` placed on it,
    plus UNCACHED_PENALTY times the sandbox's own share where the node lacks its template."""
    cpus, memory_mb = max(overcommit.cpus(rec), 1e-9), max(overcommit.memory_mb(rec), 1)
    own = max(spec.limits.cpu / cpus, spec.limits.memory_mb / memory_mb)
    share = max(
        (rec.committed_cpu + spec.limits.cpu) / cpus, (rec.committed_memory_mb + spec.limits.memory_mb) / memory_mb
    )
    if spec.image and rec.info is not None and spec.image not in rec.info.templates:
        share += UNCACHED_PENALTY * own
    return share


def rank(
    nodes: list[NodeRecord],
    spec: SandboxSpec,
    labels: Mapping[str, str] | None = None,
    *,
    timeout: float = 30.0,
    overcommit: Overcommit = DEFAULT_OVERCOMMIT,
) -> list[NodeRecord]:
    """The candidates for `spec`, best first."""
    now = time.time()
    ok = [n for n in nodes if n.live(timeout, now) and fits(n, spec, labels or {}, overcommit)]

    def score(n: NodeRecord) -> tuple[float, float, int]:
        assert n.info is not None
        return load(n, spec, overcommit), n.sandboxes / max(n.info.cpus, 1), -n.memory_free_bytes

    return sorted(ok, key=score)
