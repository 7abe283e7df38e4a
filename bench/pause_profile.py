#!/usr/bin/env python3
"""Where a pause and a resume with memory spend their time, beside raw runsc on the same process.

    .venv/bin/python bench/pause_profile.py [--runs N]

One Debian sandbox holds HELD_MB in Python (as in the memory pause rows of `bench/run`,
lifecycle.py) and goes through `--runs` pause/resume cycles with memory; then raw runsc
checkpoints and restores the same Python, run as its sandbox's init (no agent), as often.
For each side the table gives medians of:

- the whole operation: `Node.pause(memory=True)` / `Node.resume`, and the raw
  `runsc checkpoint` / `runsc restore`;
- inside Sandlot's: the `runsc checkpoint` / `runsc restore` call itself, and the rest
  (Sandlot's own steps: the listener check, the agent link's close, the image's commit;
  the network and disk before a restore, the agent's redial after it);
- the sentry's own phases, read from runsc's debug log: kernel state and memory saved,
  kernel state and memory loaded, the whole load once its asynchronous work is done.

Both sides run with runsc's debug log on (it slows runsc a little), so they compare with
each other, not with `bench/run`'s rows. It also prints the memory image's size and what
the sandbox's agent holds (its resident memory, its threads). A profiling aid, as
cold_profile.py is for creates: the figures that count come from `bench/run`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from cold_profile import _spans as spans
from cold_profile import _wrap as wrap
from lib import IMAGE_CACHE, RawRuntime
from lifecycle import HELD_MB, HOLD, raw_checkpoint_restore

from sandlot.node import Limits, Node, NodeConfig, SandboxSpec, memory_pause
from sandlot.node.runtimes.gvisor import GVisorRuntime

__all__ = ["sentry_phases"]

#: The sentry's own timings, as this runsc release logs them (kernel.go).
_PHASE = re.compile(
    r"^I(\d{4} \d\d:\d\d:\d\d\.\d+)\s+\d+ kernel\.go:\d+\] "
    r"(Kernel save|Memory save|Kernel load|Memory load|Overall load) took \[([^\]]+)\]( after async work)?"
)
_UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0}
_DURATION = re.compile(r"([\d.]+)(ns|µs|us|ms|s)")


def _ms(duration: str) -> float:
    """A Go duration as runsc prints it ("21.198204ms", "997.797µs", "1.5s"), in ms."""
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(duration))


def sentry_phases(log_dir: Path) -> list[tuple[str, float]]:
    """(phase, ms) of every save and load the sentry logged under `log_dir`, in time order."""
    found: list[tuple[str, str, float]] = []
    for path in log_dir.iterdir():
        for line in path.read_text(errors="replace").splitlines():
            m = _PHASE.match(line)
            if m is None:
                continue
            what = m.group(2).lower()
            if what == "overall load":
                if not m.group(4):
                    continue  # (the load before its asynchronous work: the one after it is the whole)
                what = "load, async work done"
            found.append((m.group(1), what, _ms(m.group(3))))
    return [(what, ms) for _, what, ms in sorted(found)]


async def sandlot_side(node: Node, runs: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Pause/resume cycles of one sandbox; returns the timings (the sentry's phases among them) and
    what its agent holds."""
    took: dict[str, list[float]] = defaultdict(list)
    wrap(GVisorRuntime, "_checkpoint", "runsc checkpoint")
    wrap(GVisorRuntime, "restore_memory", "runsc restore")
    node.runtime("gvisor").debug_log = True  # type: ignore[attr-defined]
    sbx = await node.create(SandboxSpec(image="debian", runtime="gvisor", limits=Limits(memory_mb=1024)))
    held: dict[str, str] = {}
    try:
        proc = await sbx.start(["python3", "-c", HOLD])
        async for _fd, data in proc.output():
            if b"held" in data:
                break
        status = await sbx.run(["sh", "-c", "grep -E '^(VmRSS|Threads):' /proc/1/status"])
        for line in status.stdout.splitlines():
            key, _, value = line.partition(":")
            held[f"agent {key}"] = value.strip()
        for _ in range(runs):
            t0 = time.perf_counter()
            await node.pause(sbx.id, memory=True)
            took["pause"].append((time.perf_counter() - t0) * 1000)
            held["image bytes"] = str((memory_pause.image_dir(sbx) / "checkpoint.img").stat().st_size)
            await node.settle()  # (the killed processes' exit, behind the pause: untimed, as in lifecycle.py)
            t0 = time.perf_counter()
            await node.resume(sbx.id)
            took["resume"].append((time.perf_counter() - t0) * 1000)
        _phases(took, sbx.dir / "runsc-debug")  # (read before the kill removes them)
    finally:
        await node.kill(sbx.id)
    for label, t0, t1 in spans:
        took[label].append((t1 - t0) * 1000)
    return took, held


def raw_side(rootfs: Path, work: Path, runs: int) -> tuple[dict[str, list[float]], str]:
    """The same cycles through raw runsc (lifecycle.py's baseline), the Python as the sandbox's init."""
    raw = RawRuntime("gvisor", rootfs, work / "raw-state")
    raw.set_args(["/usr/bin/python3", "-c", HOLD])
    logs = work / "raw-logs"
    logs.mkdir()
    try:
        out = raw_checkpoint_restore(raw, runs, debug_log=logs)
    finally:
        raw.close()
    took: dict[str, list[float]] = defaultdict(list)
    took["pause"], took["resume"] = out["raw checkpoint"]["samples_ms"], out["raw restore"]["samples_ms"]
    _phases(took, logs)
    return took, str(out["raw image bytes"])


def _phases(took: dict[str, list[float]], logs: Path) -> None:
    for what, ms in sentry_phases(logs):
        took[f"sentry: {what}"].append(ms)


def report(ours: dict[str, list[float]], raw: dict[str, list[float]], held: dict[str, str], raw_size: str) -> None:
    for op, call in (("pause", "runsc checkpoint"), ("resume", "runsc restore")):
        ours[f"{op}: Sandlot's own steps"] = [a - b for a, b in zip(ours[op], ours[call], strict=False)]
    rows = [  # (label, Sandlot's figure, raw runsc's figure)
        ("pause with memory (whole)", "pause", "pause"),
        ("  runsc checkpoint, inside it", "runsc checkpoint", None),
        ("  Sandlot's own steps", "pause: Sandlot's own steps", None),
        ("  sentry: kernel state saved", "sentry: kernel save", "sentry: kernel save"),
        ("  sentry: memory saved", "sentry: memory save", "sentry: memory save"),
        ("resume from memory (whole)", "resume", "resume"),
        ("  runsc restore, inside it", "runsc restore", None),
        ("  Sandlot's own steps", "resume: Sandlot's own steps", None),
        ("  sentry: kernel state loaded", "sentry: kernel load", "sentry: kernel load"),
        ("  sentry: memory loaded", "sentry: memory load", "sentry: memory load"),
        ("  sentry: load, async work done", "sentry: load, async work done", "sentry: load, async work done"),
    ]

    def cell(fig: dict[str, list[float]], key: str | None) -> str:
        return f"{statistics.median(fig[key]):9.1f}" if key and fig.get(key) else f"{'-':>9}"

    print(f"\npause/resume with memory, Python holding {HELD_MB} MB (medians, ms; runsc's debug log on for both)")
    print(f"| {'step':32} | {'Sandlot':>9} | {'raw runsc':>9} |")
    print(f"|{'-' * 34}|{'-' * 11}|{'-' * 11}|")
    for label, mine, theirs in rows:
        print(f"| {label:32} | {cell(ours, mine)} | {cell(raw, theirs)} |")
    print(f"\nmemory image: Sandlot {held.get('image bytes', '?')} bytes, raw {raw_size or '?'} bytes (compressed)")
    agent = [f"{k.removeprefix('agent ')} {v}" for k, v in held.items() if k.startswith("agent ")]
    print("the sandbox's agent: " + ", ".join(agent))


async def bench(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="slpp-", dir="/var/tmp"))  # short: agent socket paths
    node = Node(NodeConfig(data_dir=work / "node", images_dir=IMAGE_CACHE))
    try:
        await node.bundle()
        debian = await asyncio.to_thread(node.images.ensure, "debian")
        ours, held = await sandlot_side(node, args.runs)
        raw, raw_size = await asyncio.to_thread(raw_side, debian.rootfs, work, args.runs)
    finally:
        await node.close()
        shutil.rmtree(work, ignore_errors=True)
    report(ours, raw, held, raw_size)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    asyncio.run(bench(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
