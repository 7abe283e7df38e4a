#!/usr/bin/env python3
"""Where a cold create -> first command spends its time, step by step, beside the raw runtime.

    .venv/bin/python bench/cold_profile.py [--runtime gvisor|container] [--runs N]

Each step of `Node.create` (and the first `run`) is wrapped with a timer for
this process only; the table gives each step's median start and duration from
the create's start, over `--runs` cold creates of busybox (no warm pool),
interleaved with raw `<runtime> run true` on the same image as the baseline.
A profiling aid: the figures that count come from `core.py` and `bench/run`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from lib import IMAGE_CACHE, RawRuntime

from sandlot.node import Node, NodeConfig, SandboxSpec
from sandlot.node import node as node_mod

#: (name, t_start, t_end) of the current create, relative to nothing (perf_counter)
_spans: list[tuple[str, float, float]] = []


def _wrap(owner: Any, attr: str, name: str | None = None) -> None:
    fn = getattr(owner, attr)
    label = name or attr
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapped(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*a, **k)
            finally:
                _spans.append((label, t0, time.perf_counter()))

        setattr(owner, attr, awrapped)
    else:

        @functools.wraps(fn)
        def wrapped(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                _spans.append((label, t0, time.perf_counter()))

        setattr(owner, attr, wrapped)


def instrument(node: Node, runtime: str) -> None:
    from sandlot.agent import client
    from sandlot.node import rootfs
    from sandlot.node.runtimes import base

    rt = type(node.runtime(runtime))
    from sandlot.node import limits, metrics, sandbox

    _wrap(Node, "create")
    _wrap(Node, "_start")
    _wrap(Node, "_start_now")
    _wrap(Node, "_refill_spares")
    _wrap(limits.LimitMonitor, "watch", "limit_monitor.watch")
    _wrap(metrics.MetricsSampler, "ensure_running", "metrics.ensure_running")
    _wrap(sandbox.Sandbox, "start", "sbx.start (first command)")
    _wrap(Node, "_provision")
    _wrap(Node, "boot")
    _wrap(Node, "wait_agent")
    _wrap(Node, "_attach_network")
    _wrap(type(node.network), "setup", "network.setup")
    _wrap(type(node.images), "ensure", "images.ensure")
    _wrap(type(node.disks), "ensure", "disks.ensure")
    _wrap(type(node.disks), "check_room", "disks.check_room")
    _wrap(rootfs.WritableLayer, "mount", "layer.mount")
    _wrap(rootfs.WritableLayer, "_mount_disk", "layer._mount_disk")
    _wrap(rootfs.SpareDisks, "take", "spares.take")
    _wrap(rootfs, "mount_overlay", "mount_overlay")
    _wrap(rootfs, "mount_image", "mount_image")
    _wrap(rootfs, "is_mountpoint", "is_mountpoint")
    _wrap(node_mod, "oci_config")
    _wrap(node_mod.safepath, "ensure_dir", "safepath.ensure_dir")
    _wrap(Path, "write_text", "Path.write_text")
    _wrap(Path, "mkdir", "Path.mkdir")
    _wrap(node_mod.p.AgentConfig, "model_dump_json", "AgentConfig.model_dump_json")
    _wrap(node_mod, "_add_preload")
    _wrap(client.AgentConnection, "listen", "conn.listen")
    dispatch = client.AgentConnection._dispatch

    def hello_seen(self: client.AgentConnection, frame: Any) -> None:
        if frame.stream == 0 and not self.connected:
            now = time.perf_counter()
            _spans.append(("hello received", now, now))
        dispatch(self, frame)

    client.AgentConnection._dispatch = hello_seen  # type: ignore[method-assign]
    _wrap(rt, "start", "runtime.start")
    _wrap(base, "start_detached")
    _wrap(rt, "host_pids", "runtime.host_pids")
    _wrap(rt, "adjust", "runtime.adjust")


async def bench(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="slcc-", dir="/var/tmp"))
    node = Node(NodeConfig(data_dir=data, images_dir=IMAGE_CACHE))
    await node.bundle()
    image = await asyncio.to_thread(node.images.ensure, "busybox")
    raw = RawRuntime(args.runtime, image.rootfs, data / "raw-state")
    instrument(node, args.runtime)
    spec = SandboxSpec(image="busybox", runtime=args.runtime, network=args.network)
    starts: dict[str, list[float]] = defaultdict(list)
    durs: dict[str, list[float]] = defaultdict(list)
    totals, created, raws = [], [], []
    try:
        sbx = await node.create(spec)
        await sbx.run(["/bin/true"])
        await node.kill(sbx.id)
        raw.run_true()
        for _ in range(args.runs):
            _spans.clear()
            wall0 = time.time()
            t0 = time.perf_counter()
            sbx = await node.create(spec)
            t1 = time.perf_counter()
            await sbx.run(["/bin/true"])
            t2 = time.perf_counter()
            spans = list(_spans)
            t3 = time.perf_counter()
            await sbx.run(["/bin/true"])
            starts["second command"].append(time.perf_counter() - t0)
            durs["second command"].append(time.perf_counter() - t3)
            await node.kill(sbx.id)
            totals.append(t2 - t0)
            created.append(t1 - t0)
            seen: dict[str, int] = defaultdict(int)
            for name, a, b in spans:
                if a < t0 or a > t2:
                    continue
                seen[name] += 1
                key = name if seen[name] == 1 else f"{name}#{seen[name]}"
                starts[key].append(a - t0)
                durs[key].append(b - a)
            hello = sbx.conn.hello
            if hello is not None:  # the agent's own clock (ms): when its main() began
                starts["agent main() began"].append(hello.started_at_ms / 1000 - wall0)
                durs["agent main() began"].append(0.0)
            starts["first command"].append(t1 - t0)
            durs["first command"].append(t2 - t1)
            raws.append(await asyncio.to_thread(raw.run_true))
    finally:
        await node.close()
        raw.close()
        shutil.rmtree(data, ignore_errors=True)
    ms = 1000.0
    med = statistics.median
    print(f"\ncold create -> first command, {args.runtime}, {args.runs} runs (medians, ms from the create's start)")
    print(f"| {'step':28} | {'start':>7} | {'took':>7} | {'n':>3} |")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 9}|{'-' * 5}|")
    for key in sorted(starts, key=lambda k: med(starts[k])):
        print(f"| {key:28} | {med(starts[key]) * ms:7.2f} | {med(durs[key]) * ms:7.2f} | {len(durs[key]):3} |")
    name = raw.name
    q = statistics.quantiles
    print(
        f"\ncreate (returned) p50 {med(created) * ms:.1f} ms; create -> first command p50 {med(totals) * ms:.1f} ms "
        f"(quartiles {', '.join(f'{x * ms:.1f}' for x in q(totals, n=4))}); raw `{name} run true` p50 "
        f"{med(raws) * ms:.1f} ms (quartiles {', '.join(f'{x * ms:.1f}' for x in q(raws, n=4))}); "
        f"ratio {med(totals) / med(raws):.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--runtime", default="container", choices=["gvisor", "container"])
    parser.add_argument("--network", default="none", help="the sandboxes' network mode (none, egress, full)")
    asyncio.run(bench(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
