#!/usr/bin/env python3
"""Cold create -> first command, and nothing else: the figures of issue "Hot paths", in minutes.

    .venv/bin/python bench/cold.py [--runs N]

Each round makes, one after the other: a gVisor create through the core `Node`,
a raw `runsc run true`, a crun create through the core, a raw `crun run true`,
and a gVisor create through a real server and the async SDK (HTTP). Interleaved,
so that a noisy host weighs on Sandlot and its baselines alike. Cold: no warm
pool; each sandbox is killed before the next create. Prints p50, p99 and the
quartiles of each series and its ratio to the same-run baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from api_server import Server
from lib import IMAGE_CACHE, RawRuntime, pct
from measure import core_cold_start, http_cold_start

from sandlot.node import Node, NodeConfig
from sandlot.node.bundle import ensure_bundle

BUNDLE_CACHE = Path("/var/tmp/sandlot-bench-cache/bundle")


async def bench(runs: int) -> dict[str, list[float]]:
    # Short paths: a sandbox's agent socket path must fit in 107 bytes.
    work = Path(tempfile.mkdtemp(prefix="slc-", dir="/var/tmp"))
    built = ensure_bundle(BUNDLE_CACHE)
    for d in (work / "node", work / "api"):
        shutil.copytree(built.path, d / "bundle" / built.path.name, symlinks=True)
    node = Node(NodeConfig(data_dir=work / "node", images_dir=IMAGE_CACHE))
    await node.bundle()
    rootfs = (await asyncio.to_thread(node.images.ensure, "busybox")).rootfs
    raws = {rt: RawRuntime(rt, rootfs, work / f"raw-{rt}") for rt in ("gvisor", "container")}
    server = Server(work / "api").start()
    conn = {"api_url": server.url, "api_key": server.admin_key, "request_timeout": 120.0}
    names = ("core gvisor", "runsc run", "core crun", "crun run", "http gvisor")
    series: dict[str, list[float]] = {k: [] for k in names}
    try:
        for warm in (True, False):  # one unmeasured round warms the page cache and both runtimes
            for _ in range(1 if warm else runs):
                got = {
                    "core gvisor": await core_cold_start(node, "gvisor"),
                    "runsc run": await asyncio.to_thread(raws["gvisor"].run_true),
                    "core crun": await core_cold_start(node, "container"),
                    "crun run": await asyncio.to_thread(raws["container"].run_true),
                    "http gvisor": await http_cold_start(conn),
                }
                if not warm:
                    for k, v in got.items():
                        series[k].append(v)
    finally:
        server.stop()
        await node.close()
        for raw in raws.values():
            raw.close()
        shutil.rmtree(work, ignore_errors=True)
    return series


def report(series: dict[str, list[float]]) -> None:
    def ms(xs: list[float], q: float) -> float:
        return pct(xs, q) * 1000

    rows = [
        ("gVisor, core", "core gvisor", "runsc run"),
        ("crun, core", "core crun", "crun run"),
        ("gVisor, HTTP+SDK", "http gvisor", "runsc run"),
    ]
    print(f"\ncold create -> first command, {len(series['core gvisor'])} rounds (ms; quartiles in brackets)")
    for name, ours, base in rows:
        a, b = series[ours], series[base]
        quart = ", ".join(f"{x * 1000:.0f}" for x in statistics.quantiles(a, n=4))
        bquart = ", ".join(f"{x * 1000:.0f}" for x in statistics.quantiles(b, n=4))
        print(
            f"{name:17} p50 {ms(a, 50):6.1f} [{quart}] p99 {ms(a, 99):6.1f} | `{base} true` p50 {ms(b, 50):6.1f} "
            f"[{bquart}] p99 {ms(b, 99):6.1f} | ratio p50 {ms(a, 50) / ms(b, 50):.2f}x p99 {ms(a, 99) / ms(b, 99):.2f}x"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    report(asyncio.run(bench(args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
