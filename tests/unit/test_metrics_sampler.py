"""The node's metrics sampler on fake cgroup files: what a sample reads, the window, bounded retention."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sandlot.node import metrics
from sandlot.node.spec import Limits


def _v1(root: Path) -> dict[str, Path]:
    d = {c: root / c for c in ("cpuacct", "memory", "pids")}
    for p in d.values():
        p.mkdir()
    (d["cpuacct"] / "cpuacct.usage").write_text("0\n")
    (d["memory"] / "memory.usage_in_bytes").write_text(str(300 << 20))
    (d["memory"] / "memory.stat").write_text(
        f"cache {1 << 20}\ntotal_cache {100 << 20}\ntotal_inactive_file {60 << 20}\n"
    )
    (d["memory"] / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (d["pids"] / "pids.current").write_text("12\n")
    return d


def _sandbox(sid: str, tmp: Path) -> Any:
    state = SimpleNamespace(value="running")
    conn = SimpleNamespace(oom_kills=1, pids_limit_hits=3)
    layer = SimpleNamespace(layer=tmp / "not-mounted", image_file=tmp / "disk.img")
    (tmp / "disk.img").write_bytes(b"x" * 8192)
    return SimpleNamespace(
        id=sid, pooled=False, state=state, generation=0, created_at=0.0,
        spec=SimpleNamespace(limits=Limits(cpu=0.5, memory_mb=512)), conn=conn, layer=layer, net=None,
    )  # fmt: skip


def test_a_sample_reads_cgroups_disk_and_limit_kills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = _v1(tmp_path)
    monkeypatch.setattr(metrics.cgroups, "controllers", lambda sid: dirs)
    clock = iter([1000.0, 1005.0])
    monkeypatch.setattr(metrics.time, "time", lambda: next(clock))
    sbx = _sandbox("sb-a", tmp_path)
    sampler = metrics.MetricsSampler(lambda: [sbx])
    assert sampler.sample_all() == 1
    (dirs["cpuacct"] / "cpuacct.usage").write_text(str(2_000_000_000))  # 2 s of CPU in 5 s, of half a core
    sampler.sample_all()
    first, second = sampler.samples("sb-a")
    assert first.cpu_used_pct == 0 and second.cpu_used_pct == 80.0 and second.cpu_count == 0.5
    assert second.mem_used == 240 << 20 and second.mem_cache == 100 << 20 and second.mem_total == 512 << 20
    assert second.pids == 12 and second.oom_kills == 3 and second.pids_limit_hits == 3
    assert second.disk_used >= 8192 and second.disk_total == 1024 << 20  # unmounted here: its image, its limit
    assert [m.timestamp for m in sampler.samples("sb-a", start=1001)] == [1005.0]
    assert [m.timestamp for m in sampler.samples("sb-a", end=1004)] == [1000.0]
    assert sampler.samples("sb-other") == []


def test_retention_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics.cgroups, "controllers", lambda sid: {})
    now = [0.0]
    monkeypatch.setattr(metrics.time, "time", lambda: now[0])
    live = [_sandbox("sb-a", tmp_path)]
    sampler = metrics.MetricsSampler(lambda: live, keep=3, retention_s=60)
    for t in range(5):
        now[0] = float(t)
        sampler.sample_all()
    assert [m.timestamp for m in sampler.samples("sb-a")] == [2.0, 3.0, 4.0]  # the newest `keep`
    live.clear()  # it ended: kept for retention_s, then dropped
    now[0] = 10.0
    sampler.sample_all()
    now[0] = 65.0
    sampler.sample_all()
    assert len(sampler.samples("sb-a")) == 3
    now[0] = 71.0
    assert sampler.sample_all() == 0 and sampler.samples("sb-a") == []
