"""The benchmark suite behind `bench/run`: baselines and Sandlot, side by side, in one run.

    bench/run [--quick] [--out DIR]

Writes <out>/<date>.json, <date>.md, <date>-latency.png and <date>-density.png
and ends with one summary line. It fails only on a crash, never on a number.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import report
from baselines import Plan, measure_all
from compat import e2b_figures
from density import density_figures
from images_bench import image_figures
from lib import IMAGE_CACHE, ROOT
from measure import http_figures, make_node, node_figures
from microvm_bench import microvm_figures

from sandlot import errors

#: Kept between runs so that only the first run builds the Go agent.
BUNDLE_CACHE = Path("/var/tmp/sandlot-bench-cache/bundle")


async def run_sandlot(plan: Plan, work: Path) -> dict[str, Any]:
    node = make_node(work / "node", BUNDLE_CACHE)
    try:
        out = await node_figures(node, plan)
        out.update(await image_figures(node, plan, work / "images"))
        try:
            out["microvm"] = await microvm_figures(node, plan)
        except errors.RuntimeUnavailableError as exc:  # no QEMU or guest kernel here: say so, not a crash
            out["microvm"] = {"skipped": exc.message}
    finally:
        await node.close()
    out.update(await http_figures(work / "api", BUNDLE_CACHE, plan))
    out.update(await density_figures(work / "density", BUNDLE_CACHE, plan))
    out.update(await e2b_figures(work / "e2b", BUNDLE_CACHE, plan))
    return out


def _clean(x: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs, 10 concurrent creates (CI smoke)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--from-json", type=Path, help="only redraw the table and plots of an earlier run")
    args = parser.parse_args()
    if args.from_json:
        return write_reports(json.loads(args.from_json.read_text()), args.out)
    if os.geteuid() != 0:
        print("bench/run needs root (mounts, cgroups, runsc)", file=sys.stderr)
        return 2
    plan = Plan(args.quick)
    t0 = time.monotonic()
    date = datetime.date.today().isoformat()
    # Short paths: a sandbox's agent socket path must fit in 107 bytes.
    work = Path(tempfile.mkdtemp(prefix="slb-", dir="/var/tmp"))
    try:
        rootfs = IMAGE_CACHE / "busybox" / "rootfs"
        if not rootfs.exists():
            from sandlot.node.images import ImageStore

            rootfs = ImageStore(IMAGE_CACHE).ensure("busybox").rootfs
        baselines = measure_all(plan, rootfs, work / "raw")
        sandlot = asyncio.run(run_sandlot(plan, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {
        "meta": {
            "date": date,
            "quick": args.quick,
            "wall_s": time.monotonic() - t0,
            "command": "bench/run" + (" --quick" if args.quick else ""),
            "host": f"{platform.node()}: {platform.platform()}, {os.cpu_count()} cores",
            "plan": vars(plan),
        },
        "baselines": baselines,
        "sandlot": sandlot,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{date}.json").write_text(json.dumps(_clean(results), indent=1) + "\n")
    return write_reports(results, args.out)


def write_reports(results: dict[str, Any], out: Path) -> int:
    date = results["meta"]["date"]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{date}.md").write_text(report.markdown(results))
    report.plots(results, out / f"{date}-latency.png", out / f"{date}-density.png")
    print()
    print(report.markdown(results))
    print(f"wrote {out}/{date}.json, .md, -latency.png, -density.png")
    print(report.summary_line(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
