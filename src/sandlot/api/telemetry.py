"""`GET /metrics`: the server in Prometheus' text format (prometheus_client), for admins.

Two kinds of figures:

- counted by this process as things happen (each API replica counts its own;
  Prometheus sums them): sandbox creates by template, failed creates by error
  code, kills by how (request, timeout, died), and the create latency histogram;
- read at scrape time, the same from any replica: records by team, template and
  state (one GROUP BY in the store), the warm pools, and the node's (or fleet's)
  CPU count, load, memory and disk (`NodeClient.info`).

Invariant: the scrape-time families are set and rendered with no await in
between, so concurrent scrapes never mix two snapshots.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sandlot import errors
from sandlot.api.store import Store
from sandlot.node.client import NodeClient
from sandlot.node.protocol import NodeInfo, PoolInfo

__all__ = ["CONTENT_TYPE", "Telemetry"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: create latency buckets (seconds): a warm-pool create is milliseconds, a cold one seconds
_CREATE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60)


class _Snapshot(Collector):
    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class Telemetry:
    """One per API process: its counters, and `render` for a scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.creates = Counter("sandlot_sandbox_creates", "Sandboxes created, by template", ["template"], registry=r)
        self.create_errors = Counter(
            "sandlot_sandbox_create_errors", "Creates that failed, by error code", ["code"], registry=r
        )
        self.kills = Counter(
            "sandlot_sandbox_kills", "Sandboxes ended, by how: request, timeout, died, lost", ["how"], registry=r
        )
        self.create_seconds = Histogram(
            "sandlot_sandbox_create_seconds", "Time to create a sandbox", buckets=_CREATE_BUCKETS, registry=r
        )
        self._snapshot = _Snapshot()
        r.register(self._snapshot)

    def created(self, template: str, started: float) -> None:
        self.creates.labels(template).inc()
        self.create_seconds.observe(time.monotonic() - started)

    def create_failed(self, exc: BaseException) -> None:
        code = exc.code if isinstance(exc, errors.SandlotError) else "internal"
        self.create_errors.labels(code).inc()

    def killed(self, reason: str) -> None:
        how = (
            "request"
            if reason == "killed by request"
            else "timeout"
            if reason == "its timeout passed"
            else "lost"
            if reason.startswith("lost")
            else "died"
        )
        self.kills.labels(how).inc()

    async def render(self, store: Store, node: NodeClient) -> bytes:
        counts = await store.sandbox_counts()
        pools = await node.list_pools()
        try:
            info = await node.info()
        except errors.SandlotError:  # no node up (a fleet): the rest still answers
            info = None
        self._snapshot.families = _families(counts, pools, info)
        return generate_latest(self.registry)


def _families(counts: list[tuple[str, str, str, int]], pools: list[PoolInfo], info: NodeInfo | None) -> list[Metric]:
    by_state = GaugeMetricFamily(
        "sandlot_sandboxes", "Sandbox records by state and template", labels=["state", "template"]
    )
    by_team = GaugeMetricFamily("sandlot_team_sandboxes", "Sandbox records by team and state", labels=["team", "state"])
    states: dict[tuple[str, str], int] = {}
    teams: dict[tuple[str, str], int] = {}
    for team, template, state, n in counts:
        states[(state, template)] = states.get((state, template), 0) + n
        teams[(team, state)] = teams.get((team, state), 0) + n
    for labels, n in sorted(states.items()):
        by_state.add_metric(list(labels), n)
    for labels, n in sorted(teams.items()):
        by_team.add_metric(list(labels), n)
    size = GaugeMetricFamily("sandlot_pool_size", "Warm pool size wanted", labels=["template", "runtime"])
    idle = GaugeMetricFamily("sandlot_pool_idle", "Warm pool sandboxes ready now", labels=["template", "runtime"])
    for p in pools:
        size.add_metric([p.template, p.runtime], p.size)
        idle.add_metric([p.template, p.runtime], p.idle)
    out: list[Metric] = [by_state, by_team, size, idle]
    if info is not None:
        for name, doc, value in (
            ("sandlot_node_cpus", "CPUs of the node (a fleet: of its live nodes)", info.cpus),
            ("sandlot_node_load1", "Load average over one minute", info.load_1m),
            ("sandlot_node_memory_total_bytes", "Memory of the node", info.memory_total_bytes),
            ("sandlot_node_memory_available_bytes", "Memory available for new sandboxes", info.memory_available_bytes),
            ("sandlot_node_disk_total_bytes", "Disk of the node's data directory", info.disk_total_bytes),
            ("sandlot_node_disk_free_bytes", "Free disk of the node's data directory", info.disk_free_bytes),
            ("sandlot_node_sandboxes", "Sandboxes the node holds (warm pools' idle ones aside)", info.sandboxes),
        ):
            family = GaugeMetricFamily(name, doc, labels=["node"])
            family.add_metric([info.name], value)
            out.append(family)
    return out
