"""Per-sandbox metrics: ONE loop per node samples every sandbox every `INTERVAL_S` from the host side.

What a sample reads, per sandbox, never waking it (idle sandboxes cost nothing,
issue 12): its host cgroup's files (CPU time, memory, tasks, OOM kills), the
statfs of its mounted writable disk, its host-side veth's byte counters, and the
limit kills its agent reported as their processes' exits passed through the
node's connection (`AgentConnection.oom_kills`). About ten small reads of
pseudo-files per sandbox, done on the loop in one pass: no task, thread or
process per sandbox. Where the cgroup directories are is found once per boot of
a sandbox's runtime (`cgroups.controllers`, as the limit monitor does).

Retention is bounded: each sandbox keeps its last `KEEP` samples (an hour at
5 s), and a sandbox that ended keeps them for `RETENTION_S` more, so that a
caller still sees how it ended; then they are dropped.

Invariant: `_series` holds one entry per sandbox sampled and not yet expired;
the loop runs while the node holds a running sandbox or a series is kept.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sandlot.models import METRICS_INTERVAL_S, SandboxMetric
from sandlot.node import cgroups

if TYPE_CHECKING:
    from sandlot.node.sandbox import Sandbox

__all__ = ["INTERVAL_S", "KEEP", "RETENTION_S", "MetricsSampler"]

log = logging.getLogger("sandlot.node.metrics")

INTERVAL_S = METRICS_INTERVAL_S
#: Samples kept per sandbox (the newest): an hour at INTERVAL_S.
KEEP = 720
#: Seconds an ended sandbox's samples are kept after it ended.
RETENTION_S = 3600.0


@dataclass
class _Files:
    """A sandbox's cgroup files, opened once per boot of its runtime and read with one `pread`
    each (kernfs renders a file afresh at each read from offset 0): no path lookups per sample.
    -1: not there."""

    v2: bool = False
    cpu: int = -1  # v1 cpuacct.usage (ns); v2 cpu.stat (usage_usec)
    mem: int = -1  # v1 memory.usage_in_bytes; v2 memory.current
    stat: int = -1  # memory.stat
    oom: int = -1  # v1 memory.oom_control; v2 memory.events
    pids: int = -1  # pids.current
    #: its veth's host end and that end's byte counters (sysfs, read like the cgroup files)
    host_if: str | None = None
    rx: int = -1
    tx: int = -1
    #: whether the host mounts its disk (statvfs of it) or not (a microvm's: its image's blocks)
    disk_mounted: bool | None = None

    @classmethod
    def open(cls, dirs: dict[str, Path]) -> _Files:
        mem = dirs.get("memory")
        v2 = mem is not None and not (mem / "memory.usage_in_bytes").exists()
        f = cls(v2=v2)
        if (d := dirs.get("cpuacct")) is not None and (d / "cpuacct.usage").exists():
            f.cpu = cgroups.open_file(d / "cpuacct.usage")
        elif (d := dirs.get("cpu")) is not None:
            f.cpu, f.v2 = cgroups.open_file(d / "cpu.stat"), True
        if mem is not None:
            f.mem = cgroups.open_file(mem / ("memory.current" if v2 else "memory.usage_in_bytes"))
            f.stat = cgroups.open_file(mem / "memory.stat")
            f.oom = cgroups.open_file(mem / ("memory.events" if v2 else "memory.oom_control"))
        if (d := dirs.get("pids")) is not None:
            f.pids = cgroups.open_file(d / "pids.current")
        return f

    def close(self) -> None:
        for fd in (self.cpu, self.mem, self.stat, self.oom, self.pids, self.rx, self.tx):
            if fd >= 0:
                os.close(fd)
        self.cpu = self.mem = self.stat = self.oom = self.pids = self.rx = self.tx = -1

    def net(self, host_if: str | None) -> tuple[int, int]:
        """(received, sent) bytes of the sandbox: its veth's host end counts them the other way round."""
        if host_if != self.host_if:  # first sight, or its network was made again
            for fd in (self.rx, self.tx):
                if fd >= 0:
                    os.close(fd)
            stats = f"/sys/class/net/{host_if}/statistics/"
            self.host_if = host_if
            self.rx, self.tx = (
                (-1, -1)
                if host_if is None
                else (
                    cgroups.open_file(stats + "tx_bytes"),
                    cgroups.open_file(stats + "rx_bytes"),
                )
            )
        return cgroups.pread_int(self.rx) or 0, cgroups.pread_int(self.tx) or 0

    def disk(self, mounted: Path, image: Path) -> tuple[int, int]:
        """(used, total) bytes of the sandbox's disk: of its filesystem where the host mounts it, else
        (a microvm's disk, mounted in its guest) the blocks its image file holds (total: unknown, 0)."""
        try:
            if self.disk_mounted is None:  # once per boot of its runtime: two stats fewer each sample
                self.disk_mounted = os.path.ismount(mounted)
            if self.disk_mounted:
                st = os.statvfs(mounted)
                return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize
            return os.stat(image).st_blocks * 512, 0
        except OSError:
            return 0, 0

    def cpu_ns(self) -> int:
        if self.v2:
            return cgroups.field(cgroups.pread(self.cpu), b"usage_usec") * 1000
        return cgroups.pread_int(self.cpu) or 0

    def memory(self) -> tuple[int, int, int]:
        """(used without reclaimable page cache, page cache, OOM kills)."""
        stat = cgroups.pread(self.stat, 8192)
        usage, oom = cgroups.pread_int(self.mem) or 0, cgroups.field(cgroups.pread(self.oom), b"oom_kill")
        if self.v2:
            return max(0, usage - cgroups.field(stat, b"inactive_file")), cgroups.field(stat, b"file"), oom
        return max(0, usage - cgroups.field(stat, b"total_inactive_file")), cgroups.field(stat, b"total_cache"), oom


@dataclass
class _Series:
    samples: collections.deque[SandboxMetric]
    generation: int = -1
    #: its cgroup files, open for `generation`
    files: _Files | None = None
    cpu_ns: int = -1
    at: float = 0.0
    ended_at: float | None = None

    def close_files(self) -> None:
        if self.files is not None:
            self.files.close()
            self.files = None


class MetricsSampler:
    """Samples the sandboxes `sandboxes()` answers; `samples(id)` answers what it kept."""

    def __init__(
        self,
        sandboxes: Callable[[], Iterable[Sandbox]],
        interval_s: float = INTERVAL_S,
        keep: int = KEEP,
        retention_s: float = RETENTION_S,
    ) -> None:
        self.interval_s = interval_s
        self.keep = keep
        self.retention_s = retention_s
        self._sandboxes = sandboxes
        self._series: dict[str, _Series] = {}
        self._task: asyncio.Task[None] | None = None
        #: CPU seconds the sampling passes took (for the benchmark), and how many ran
        self.cpu_s = 0.0
        self.passes = 0

    def ensure_running(self) -> None:
        """Start the loop if it is not running (the node calls it whenever a sandbox starts)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for series in self._series.values():
            series.close_files()

    def samples(self, sandbox_id: str, start: float | None = None, end: float | None = None) -> list[SandboxMetric]:
        """Its samples taken in [start, end] (either open), oldest first; [] for one never sampled."""
        series = self._series.get(sandbox_id)
        if series is None:
            return []
        return [
            m for m in series.samples if (start is None or m.timestamp >= start) and (end is None or m.timestamp <= end)
        ]

    # ------------------------------------------------------------ the loop

    async def _run(self) -> None:
        while True:
            cpu0 = time.thread_time()
            live = self.sample_all()
            self.cpu_s += time.thread_time() - cpu0
            self.passes += 1
            if not live and not self._series:
                return
            await asyncio.sleep(self.interval_s)

    def sample_all(self) -> int:
        """One pass over every sandbox; answers how many were sampled."""
        now = time.time()
        seen: set[str] = set()
        for sbx in self._sandboxes():
            if sbx.pooled or sbx.state.value not in ("running", "paused"):
                continue
            seen.add(sbx.id)
            try:
                self._sample(sbx, now)
            except Exception:  # one sandbox's odd state must not stop the others' metrics
                log.exception("sampling the metrics of sandbox %s", sbx.id)
        for sid, series in list(self._series.items()):
            if sid in seen:
                continue
            if series.ended_at is None:
                series.ended_at = now
                series.close_files()  # its cgroup is gone (or frozen away with it)
            elif now - series.ended_at > self.retention_s:
                del self._series[sid]
        return len(seen)

    def _sample(self, sbx: Sandbox, now: float) -> None:
        series = self._series.get(sbx.id)
        if series is None:
            series = self._series[sbx.id] = _Series(collections.deque(maxlen=self.keep))
        series.ended_at = None
        if series.generation != sbx.generation or series.files is None:
            series.close_files()
            series.generation, series.files, series.cpu_ns = (
                sbx.generation,
                _Files.open(cgroups.controllers(sbx.id)),
                -1,
            )
        files = series.files
        limits = sbx.spec.limits
        cpu_ns = files.cpu_ns()
        if series.cpu_ns < 0 or cpu_ns < series.cpu_ns:  # first sight (or a new cgroup): since it started
            used_ns, wall = cpu_ns, max(now - sbx.created_at, 1e-3)
        else:
            used_ns, wall = cpu_ns - series.cpu_ns, max(now - series.at, 1e-3)
        series.cpu_ns, series.at = cpu_ns, now
        pct = min(100.0, max(0.0, used_ns / 1e9 / wall / limits.cpu * 100))
        mem_used, mem_cache, oom = files.memory()
        disk_used, disk_total = files.disk(sbx.layer.layer, sbx.layer.image_file)
        rx, tx = files.net(sbx.net.host_if if sbx.net is not None else None)
        series.samples.append(
            SandboxMetric.model_construct(  # our own numbers: no validation (it is most of a sample's cost)
                timestamp=now,
                cpu_count=limits.cpu,
                cpu_used_pct=round(pct, 2),
                mem_used=mem_used,
                mem_total=limits.memory_mb << 20,
                mem_cache=mem_cache,
                disk_used=disk_used,
                disk_total=disk_total or limits.disk_mb << 20,
                net_rx_bytes=rx,
                net_tx_bytes=tx,
                pids=cgroups.pread_int(files.pids) or 0,
                oom_kills=sbx.conn.oom_kills + oom,
                pids_limit_hits=sbx.conn.pids_limit_hits,
            )
        )
