#!/usr/bin/env python3
"""What the metrics sampler costs with many idle sandboxes (it must not undo density, issue 12).

An in-process node (as `sandlot run` embeds one) starts N idle gVisor sandboxes
from the `busybox` template, lets them settle, then over one window measures:

- the sampler's own CPU: the thread CPU time of its passes (one pass reads every
  sandbox's cgroup files, disk and veth counters), per pass and in % of one core;
- the baseline, in the same window: the CPU of the N idle sandboxes themselves
  (their host cgroups' cpuacct), what density already pays for them.

    .venv/bin/python bench/metrics_sampler.py [-n 100] [--window 30]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import IMAGE_CACHE

from sandlot.node import (
    Node,
    NodeConfig,
    cgroups,
)
from sandlot.node.spec import Limits, SandboxSpec


def _sandboxes_cpu_ns(ids: list[str]) -> int:
    total = 0
    for sid in ids:
        d = cgroups.controllers(sid).get("cpuacct")
        if d is not None:
            total += int((d / "cpuacct.usage").read_text())
    return total


async def main(n: int, window_s: float, settle_s: float) -> None:
    data = Path(tempfile.mkdtemp(prefix="sandlot-bench-metrics-", dir="/var/tmp"))
    node = Node(NodeConfig(data_dir=data, images_dir=IMAGE_CACHE))
    try:
        gate = asyncio.Semaphore(4)

        async def one() -> str:
            async with gate:
                sbx = await node.create(SandboxSpec(image="busybox", limits=Limits(memory_mb=64, disk_mb=64)))
                await sbx.run("true")
                return sbx.id

        t0 = time.monotonic()
        ids = list(await asyncio.gather(*(one() for _ in range(n))))
        print(f"{n} sandboxes started in {time.monotonic() - t0:.0f}s; settling {settle_s:.0f}s", flush=True)
        await asyncio.sleep(settle_s)
        s = node.metrics
        cpu0, passes0, sbx0, t0 = s.cpu_s, s.passes, _sandboxes_cpu_ns(ids), time.monotonic()
        await asyncio.sleep(window_s)
        cpu1, passes1, sbx1, t1 = s.cpu_s, s.passes, _sandboxes_cpu_ns(ids), time.monotonic()
        wall, passes = t1 - t0, passes1 - passes0
        sampler_pct = 100 * (cpu1 - cpu0) / wall
        idle_pct = 100 * (sbx1 - sbx0) / 1e9 / wall
        per_pass_ms = 1000 * (cpu1 - cpu0) / max(passes, 1)
        samples = sum(len(s.samples(i)) for i in ids)
        print(f"window {wall:.1f}s, {passes} sampling passes, {samples} samples kept")
        print("| figure | value |")
        print("| --- | --- |")
        print(f"| sampler CPU per pass ({n} sandboxes) | {per_pass_ms:.2f} ms |")
        print(f"| sampler CPU, % of one core | {sampler_pct:.3f}% |")
        print(f"| baseline: the {n} idle sandboxes' own CPU, % of one core | {idle_pct:.3f}% |")
        print(f"| ratio sampler / idle sandboxes | {sampler_pct / idle_pct:.3f} |" if idle_pct else "")
    finally:
        await node.close()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=10.0)
    a = ap.parse_args()
    asyncio.run(main(a.n, a.window, a.settle))
