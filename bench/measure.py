"""Sandlot's own figures: through the core `Node`, and over HTTP through the API and SDK.

Every sandbox a measurement creates is killed in a `finally`; the node's
`close()` (and the server's kill-on-shutdown) is the backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api_server import Server
from baselines import Plan
from big_transfer import big_transfer_figures
from lib import IMAGE_CACHE, arepeat, pss_kb, summary
from lifecycle import checkpoint_figures, memory_pause_figures
from ports import port_proxy_figures

from sandlot.node import Node, NodeConfig, SandboxSpec
from sandlot.node.bundle import ensure_bundle
from sandlot.node.sandbox import Sandbox

__all__ = ["core_cold_start", "files", "http_cold_start", "http_figures", "http_files", "make_node", "node_figures"]

FILE_MB = 100


def make_node(data_dir: Path, bundle_cache: Path) -> Node:
    """A node whose agent bundle is copied from a cache kept between runs (no Go build each time)."""
    built = ensure_bundle(bundle_cache)
    dest = data_dir / "bundle" / built.path.name
    if not dest.exists():
        shutil.copytree(built.path, dest, symlinks=True)
    return Node(NodeConfig(data_dir=data_dir, images_dir=IMAGE_CACHE))


async def _create(node: Node, runtime: str, image: str = "busybox") -> Sandbox:
    return await node.create(SandboxSpec(image=image, runtime=runtime))


async def core_cold_start(node: Node, runtime: str) -> float:
    """One cold create -> first command (`true`) through the core, in seconds; the sandbox is killed after."""
    t0 = time.perf_counter()
    sbx = await _create(node, runtime)
    try:
        await sbx.run(["/bin/true"])
        return time.perf_counter() - t0
    finally:
        await node.kill(sbx.id)


async def http_cold_start(conn: dict[str, Any]) -> float:
    """The same through the server and the async SDK (`conn`: AsyncSandbox.create's connection arguments)."""
    from sandlot.sdk import AsyncSandbox

    t0 = time.perf_counter()
    sbx = await AsyncSandbox.create(template="busybox", **conn)
    try:
        await sbx.commands.run(["/bin/true"])
        return time.perf_counter() - t0
    finally:
        await sbx.kill()
        await sbx.close()


async def cold_starts(node: Node, runtime: str, plan: Plan) -> list[float]:
    async def once() -> float:
        return await core_cold_start(node, runtime)

    await once()  # warm, unmeasured
    return await arepeat(once, plan.slow, plan.budget)


async def round_trips(node: Node, runtime: str, plan: Plan) -> list[float]:
    sbx = await _create(node, runtime)
    try:

        async def once() -> None:
            await sbx.run(["/bin/true"])

        await once()
        return await arepeat(once, plan.round_trips, plan.budget)
    finally:
        await node.kill(sbx.id)


async def idle_pss(node: Node, runtime: str, n: int = 5) -> dict[str, Any]:
    sbxs: list[Sandbox] = []
    try:
        for _ in range(n):
            sbxs.append(await _create(node, runtime))
        await asyncio.sleep(2)
        per = [pss_kb(s.runtime.host_pids(s.id)) / 1024 for s in sbxs]
        return {"pss_mb": statistics.median(per), "sandboxes": n}
    finally:
        for s in sbxs:
            await node.kill(s.id)


async def files(node: Node, plan: Plan, runtime: str = "gvisor") -> dict[str, Any]:
    """Write then read back a 100 MB file through the agent, in a gVisor (or `runtime`) sandbox."""
    data = os.urandom(FILE_MB << 20)
    sbx = await _create(node, runtime)
    writes: list[float] = []
    reads: list[float] = []
    try:
        for _ in range(plan.file_runs):
            t0 = time.perf_counter()
            await sbx.agent.write("/root/blob", data)
            writes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = 0
            async for chunk in sbx.agent.read("/root/blob"):
                got += len(chunk)
            reads.append(time.perf_counter() - t0)
            assert got == len(data), f"read back {got} of {len(data)} bytes"
    finally:
        await node.kill(sbx.id)
    return {"write": summary(writes), "read": summary(reads), "mb": FILE_MB}


async def concurrent(node: Node, plan: Plan) -> dict[str, Any]:
    """`plan.concurrent` gVisor creates at once: total time, per-create latency, errors."""
    made: list[Sandbox] = []

    async def one() -> float:
        t0 = time.perf_counter()
        sbx = await asyncio.wait_for(_create(node, "gvisor"), 120)
        made.append(sbx)
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        got = await asyncio.gather(*(one() for _ in range(plan.concurrent)), return_exceptions=True)
        total = time.perf_counter() - t0
    finally:
        for sbx in made:
            with contextlib.suppress(Exception):
                await node.kill(sbx.id)
    ok = [x for x in got if isinstance(x, float)]
    errors = [repr(x)[:200] for x in got if not isinstance(x, float)]
    return {
        "n": plan.concurrent,
        "total_s": total,
        "create": summary(ok),
        "errors": len(errors),
        "error_samples": errors[:3],
    }


async def warm_pool_starts(node: Node, plan: Plan) -> list[float]:
    """Create -> first command with a warm pool of 2 (each measured once the pool is full again)."""
    from sandlot.node.pool import pool_key

    spec = SandboxSpec(image="busybox")
    node.pool.set_size(spec, 2)

    async def once() -> float:
        deadline = time.monotonic() + 30
        while node.pool.idle(pool_key(spec)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        sbx = await node.create(spec)
        try:
            await sbx.run(["/bin/true"])
            return time.perf_counter() - t0
        finally:
            await node.kill(sbx.id)

    try:
        return await arepeat(once, plan.slow, plan.budget)
    finally:
        node.pool.set_size(spec, 0)


async def pause_resume(node: Node, plan: Plan) -> dict[str, Any]:
    """`Node.pause` and `Node.resume` of an idle gVisor sandbox (freeze, no memory to disk)."""
    from sandlot.node.runtimes.base import run_tool

    sbx = await _create(node, "gvisor")
    rt = node.runtime("gvisor")
    times: dict[str, list[float]] = {"pause": [], "resume": [], "raw pause": [], "raw resume": []}
    try:

        async def once() -> None:
            for op, call in (("pause", node.pause), ("resume", node.resume)):
                t0 = time.perf_counter()
                await call(sbx.id)
                times[op].append(time.perf_counter() - t0)
            # The baseline: runsc itself on the same sandbox, in the same run.
            for op in ("pause", "resume"):
                t0 = time.perf_counter()
                await run_tool(*rt._cli(op, sbx.id))  # type: ignore[attr-defined]
                times[f"raw {op}"].append(time.perf_counter() - t0)

        await arepeat(once, plan.slow, plan.budget)
    finally:
        await node.kill(sbx.id)
    return {k: summary(v) for k, v in times.items()}


async def node_figures(node: Node, plan: Plan) -> dict[str, Any]:
    await node.bundle()
    for name in ("busybox", "debian"):
        await asyncio.to_thread(node.images.ensure, name)
    out: dict[str, Any] = {}
    for runtime in ("gvisor", "container"):
        print(f"sandlot core: {runtime}", flush=True)
        out[f"core cold {runtime}"] = summary(await cold_starts(node, runtime, plan))
        out[f"core round trip {runtime}"] = summary(await round_trips(node, runtime, plan))
        out[f"core idle {runtime}"] = await idle_pss(node, runtime)
    print("sandlot core: warm pool, pause/resume", flush=True)
    out["core warm pool gvisor"] = summary(await warm_pool_starts(node, plan))
    out["core pause resume"] = await pause_resume(node, plan)
    print("sandlot core: checkpoint, restore, fork", flush=True)
    out["core checkpoints"] = await checkpoint_figures(node, plan)
    print("sandlot core: pause with memory to disk", flush=True)
    debian = await asyncio.to_thread(node.images.ensure, "debian")
    out["core memory pause"] = await memory_pause_figures(node, plan, debian.rootfs)
    print("sandlot core: files", flush=True)
    out["core files"] = await files(node, plan)
    print(f"sandlot core: {plan.concurrent} concurrent creates", flush=True)
    out["core concurrent"] = await concurrent(node, plan)
    return out


async def http_files(sbx: Any, plan: Plan, cpu: Callable[[], dict[str, float]] | None = None) -> dict[str, Any]:
    """Write then read back a 100 MB file through HTTP and the SDK (`sbx`: an AsyncSandbox).

    `cpu`: the CPU seconds each process taking part has used so far, by name; each transfer's
    share of them is kept (`cpu_ms`: for each op and name, the median in ms)."""
    data = os.urandom(FILE_MB << 20)
    writes, reads = [], []
    used: dict[str, dict[str, list[float]]] = {"write": defaultdict(list), "read": defaultdict(list)}

    def account(op: str, before: dict[str, float]) -> None:
        if cpu is not None:
            for name, s in cpu().items():
                used[op][name].append((s - before.get(name, 0.0)) * 1000)

    for _ in range(plan.file_runs):
        before = cpu() if cpu else {}
        t0 = time.perf_counter()
        await sbx.files.write("/root/blob", data)
        writes.append(time.perf_counter() - t0)
        account("write", before)
        before = cpu() if cpu else {}
        t0 = time.perf_counter()
        got = await sbx.files.read("/root/blob", format="bytes")
        reads.append(time.perf_counter() - t0)
        account("read", before)
        assert got == data, f"read back {len(got)} of {len(data)} bytes, or other bytes"
    out: dict[str, Any] = {"write": summary(writes), "read": summary(reads), "mb": FILE_MB}
    if cpu is not None:
        out["cpu_ms"] = {op: {k: statistics.median(v) for k, v in by.items()} for op, by in used.items()}
    return out


async def http_figures(data_dir: Path, bundle_cache: Path, plan: Plan) -> dict[str, Any]:
    """The same through a real server subprocess and the async SDK."""
    from sandlot.sdk import AsyncSandbox

    built = ensure_bundle(bundle_cache)
    shutil.copytree(built.path, data_dir / "bundle" / built.path.name, symlinks=True, dirs_exist_ok=True)
    print("sandlot http: starting the server", flush=True)
    server = Server(data_dir).start()
    conn = {"api_url": server.url, "api_key": server.admin_key, "request_timeout": 120.0}
    out: dict[str, Any] = {}
    try:

        async def cold() -> float:
            return await http_cold_start(conn)

        await cold()
        print("sandlot http: cold starts", flush=True)
        out["http cold gvisor"] = summary(await arepeat(cold, plan.slow, plan.budget))
        sbx = await AsyncSandbox.create(template="busybox", **conn)
        try:

            async def rt() -> None:
                await sbx.commands.run(["/bin/true"])

            await rt()
            print("sandlot http: round trips, files", flush=True)
            out["http round trip gvisor"] = summary(await arepeat(rt, plan.round_trips, plan.budget))
            out["http files"] = await http_files(sbx, plan)
        finally:
            await sbx.kill()
            await sbx.close()
        out["http ports"] = await port_proxy_figures(conn, plan.quick)
        assert server.proc is not None
        out["http big transfer"] = await big_transfer_figures(conn, server.proc.pid, plan.quick)
    finally:
        server.stop()
    return out
