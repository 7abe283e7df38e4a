#!/usr/bin/env python3
"""Benchmark of the sandbox core against raw runsc, measured in the same run.

    .venv/bin/python bench/core.py [--runs N] [--runtime gvisor|container] [--json FILE]

Figures (each printed with its baseline and the ratio):
- cold create -> first command (`true`) done, p50/p99, vs raw `runsc run true`
  (crun: `crun run true`) on the same image;
- command round trip (`true`) in a running sandbox, p50/p99, vs `runsc exec true`
  and vs spawning `true` from a process already inside the sandbox;
- idle memory per sandbox (PSS of every host process it adds), vs a raw runsc
  sandbox running `sleep`.
Needs root; uses the busybox image (and Debian for the in-sandbox spawn baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lib import IMAGE_CACHE, RawRuntime, pss_kb, summary

from sandlot.node import Node, NodeConfig, SandboxSpec

INSIDE_SPAWN = """
import subprocess, time, statistics
xs = []
for _ in range(%d):
    t0 = time.perf_counter(); subprocess.run(["/bin/true"]); xs.append(time.perf_counter() - t0)
print(statistics.median(xs))
"""


async def bench(args: argparse.Namespace) -> dict[str, object]:
    data = Path(tempfile.mkdtemp(prefix="sandlot-bench-", dir="/var/tmp"))
    node = Node(NodeConfig(data_dir=data, images_dir=IMAGE_CACHE))
    await node.bundle()
    image = await asyncio.to_thread(node.images.ensure, "busybox")
    await asyncio.to_thread(node.images.ensure, "debian")
    raw = RawRuntime(args.runtime, image.rootfs, data / "raw-state")
    results: dict[str, object] = {"runtime": args.runtime, "runs": args.runs}
    try:
        # Warm the page cache and the bundle once, unmeasured.
        sbx = await node.create(SandboxSpec(image="busybox", runtime=args.runtime))
        await sbx.run(["/bin/true"])
        await node.kill(sbx.id)
        raw.run_true()

        cold, raw_cold = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            sbx = await node.create(SandboxSpec(image="busybox", runtime=args.runtime))
            await sbx.run(["/bin/true"])
            cold.append(time.perf_counter() - t0)
            await node.kill(sbx.id)
            raw_cold.append(await asyncio.to_thread(raw.run_true))
        results["cold_start"] = summary(cold)
        results["raw_run"] = summary(raw_cold)

        sbx = await node.create(SandboxSpec(image="debian", runtime=args.runtime))
        rt = []
        for _ in range(args.runs * 10):
            t0 = time.perf_counter()
            await sbx.run(["/bin/true"])
            rt.append(time.perf_counter() - t0)
        results["round_trip"] = summary(rt)
        inside = await sbx.run(["python3", "-c", INSIDE_SPAWN % (args.runs * 5)])
        results["inside_spawn"] = {"p50_ms": float(inside.stdout) * 1000}
        await node.kill(sbx.id)

        cid = await asyncio.to_thread(raw.start_sleeper)
        time.sleep(0.5)
        raw_exec = [await asyncio.to_thread(raw.exec_true, cid) for _ in range(args.runs)]
        results["raw_exec"] = summary(raw_exec)
        time.sleep(2)
        results["raw_idle_pss_mb"] = pss_kb(raw.pids(cid)) / 1024
        raw.remove(cid)

        idle = [await node.create(SandboxSpec(image="busybox", runtime=args.runtime)) for _ in range(5)]
        time.sleep(3)
        per = [pss_kb(s.runtime.host_pids(s.id)) / 1024 for s in idle]
        results["idle_pss_mb"] = statistics.median(per)
        for s in idle:
            await node.kill(s.id)
    finally:
        await node.close()
        raw.close()
        shutil.rmtree(data, ignore_errors=True)
    return results


def report(r: dict[str, object]) -> None:
    cs, rr, rt, rx = (r[k] for k in ("cold_start", "raw_run", "round_trip", "raw_exec"))
    inside = r["inside_spawn"]["p50_ms"]  # type: ignore[index]
    raw_name = "runsc" if r["runtime"] == "gvisor" else "crun"
    rows = [
        ("cold create -> first command p50", cs["p50_ms"], f"raw `{raw_name} run true`", rr["p50_ms"]),  # type: ignore[index]
        ("cold create -> first command p99", cs["p99_ms"], f"raw `{raw_name} run true`", rr["p99_ms"]),  # type: ignore[index]
        ("command round trip p50", rt["p50_ms"], f"`{raw_name} exec true`", rx["p50_ms"]),  # type: ignore[index]
        ("command round trip p99", rt["p99_ms"], f"`{raw_name} exec true`", rx["p99_ms"]),  # type: ignore[index]
        ("command round trip p50", rt["p50_ms"], "spawn `true` inside", inside),  # type: ignore[index]
        ("idle memory per sandbox (MB PSS)", r["idle_pss_mb"], f"raw {raw_name} sandbox, sleep", r["raw_idle_pss_mb"]),
    ]
    print(f"\nSandlot core, runtime {r['runtime']}, {r['runs']} cold starts, {r['runs'] * 10} round trips")
    print(f"| {'metric':36} | {'sandlot':>9} | {'baseline':32} | {'base':>9} | {'ratio':>6} |")
    print(f"|{'-' * 38}|{'-' * 11}|{'-' * 34}|{'-' * 11}|{'-' * 8}|")
    for name, ours, base_name, base in rows:
        ratio = float(ours) / float(base) if base else float("nan")  # type: ignore[arg-type]
        print(f"| {name:36} | {float(ours):9.2f} | {base_name:32} | {float(base):9.2f} | {ratio:5.2f}x |")  # type: ignore[arg-type]
    target_rt = 1.5 * inside + 1.0
    print(
        f"\ntargets: cold start <= 1.2x raw run ({1.2 * rr['p50_ms']:.0f} ms); "  # type: ignore[index]
        f"round trip p50 <= 1.5x inside spawn + 1 ms ({target_rt:.2f} ms)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--runtime", default="gvisor", choices=["gvisor", "container"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
