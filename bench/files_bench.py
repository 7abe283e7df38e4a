"""100 MB in and out of a sandbox, alone: the file rows of `bench/run` without the rest of the suite.

    .venv/bin/python bench/files_bench.py [--runs N] [--runtime gvisor|container ...]

Measured in one run, each figure a p50 of N (default 5):
- the host's disk: the same 100 MB written to / read back from a file under /var/tmp (the
  suite's baseline, `baselines.host_files`);
- the runtime's floor: `runsc exec` (or `crun exec`) of `cat > file` / `cat file` in the same
  sandbox, the bytes on its stdin / stdout (what the sandbox imposes before any Sandlot code);
- Sandlot through the core `Node` (`sbx.agent.write` / `.read`) and through HTTP and the SDK.

It prints a table with each figure's ratio to the host disk, and for HTTP+SDK the CPU time
each process spent per transfer (the sandbox's runsc processes, the API server, this client):
on a host of few cores their sum bounds the transfer's time. It fails only on a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from api_server import Server
from baselines import Plan, host_files
from density import cpu_ns
from lib import summary
from measure import FILE_MB, _create, files, http_files, make_node

from sandlot.node.bundle import ensure_bundle
from sandlot.node.node import Node
from sandlot.node.runtimes.gvisor import GVisorRuntime

BUNDLE_CACHE = Path("/var/tmp/sandlot-bench-cache/bundle")


def _runtime_cli(node: Node, runtime: str, sandbox_id: str, *args: str) -> list[str]:
    rt = node.runtime(runtime)
    if runtime == "gvisor":
        return ["runsc", "--root", str(rt.state_dir / "runsc"), "--platform", "ptrace", "exec", sandbox_id, *args]
    return ["crun", "--root", str(rt.state_dir / "crun"), "exec", sandbox_id, *args]


def runtime_floor(node: Node, runtime: str, sandbox_id: str, data: bytes, runs: int) -> dict[str, Any]:
    """`<runtime> exec cat` in and out of the sandbox: the bytes cross its stdio, no Sandlot code."""
    writes: list[float] = []
    reads: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        cli = _runtime_cli(node, runtime, sandbox_id, "/bin/sh", "-c", "cat > /root/rawblob")
        subprocess.run(cli, input=data, check=True, timeout=120)
        writes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = subprocess.run(_runtime_cli(node, runtime, sandbox_id, "/bin/cat", "/root/rawblob"), capture_output=True)
        reads.append(time.perf_counter() - t0)
        assert got.stdout == data, f"raw read back {len(got.stdout)} of {len(data)} bytes"
    return {"write": summary(writes), "read": summary(reads)}


async def core(work: Path, plan: Plan, runtimes: list[str]) -> dict[str, Any]:
    node = make_node(work / "node", BUNDLE_CACHE)
    out: dict[str, Any] = {}
    try:
        data = os.urandom(FILE_MB << 20)
        for runtime in runtimes:
            sbx = await _create(node, runtime)
            try:
                out[f"{runtime} floor"] = await asyncio.to_thread(
                    runtime_floor, node, runtime, sbx.id, data, plan.file_runs
                )
            finally:
                await node.kill(sbx.id)
            out[f"{runtime} core"] = await files(node, plan, runtime)
    finally:
        await node.close()
    return out


async def http(work: Path, plan: Plan) -> dict[str, Any]:
    from sandlot.sdk import AsyncSandbox

    built = ensure_bundle(BUNDLE_CACHE)
    shutil.copytree(built.path, work / "api" / "bundle" / built.path.name, symlinks=True, dirs_exist_ok=True)
    server = Server(work / "api").start()
    try:
        conn = {"api_url": server.url, "api_key": server.admin_key, "request_timeout": 120.0}
        sbx = await AsyncSandbox.create(template="busybox", **conn)
        assert server.proc is not None
        api, sandbox_id = server.proc.pid, sbx.sandbox_id
        runtime = GVisorRuntime(server.data_dir / "runtime")  # (its host processes, as density.py finds them)

        def cpu() -> dict[str, float]:
            return {
                "sandbox (sentry, gofer)": cpu_ns(runtime.host_pids(sandbox_id)) / 1e9,
                "API server": cpu_ns([api]) / 1e9,
                "client (SDK)": time.process_time(),
            }

        try:
            figures = await http_files(sbx, plan, cpu)
        finally:
            await sbx.kill()
            await sbx.close()
    finally:
        server.stop()
    return {"gvisor http": figures}


def _spread(fig: dict[str, Any]) -> str:
    return f"{min(fig['samples_ms']):.1f}-{max(fig['samples_ms']):.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--runtime", action="append", choices=["gvisor", "container"])
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("files_bench needs root (mounts, cgroups, runsc)", file=sys.stderr)
        return 2
    plan = Plan(quick=False)
    plan.file_runs = args.runs
    work = Path(tempfile.mkdtemp(prefix="slf-", dir="/var/tmp"))
    try:
        host = host_files(plan)
        figures = asyncio.run(core(work, plan, args.runtime or ["gvisor", "container"]))
        if not args.no_http:
            figures.update(asyncio.run(http(work, plan)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{FILE_MB} MB, p50 of {args.runs} (min-max); ratio to the host disk in the same run")
    for op in ("write", "read"):
        base = host[f"host file {op} 100 MB"]
        print(f"host disk {op}: {base['p50_ms']:.1f} ms ({_spread(base)})")
        for name, fig in figures.items():
            f = fig[op]
            print(f"  {name:16} {op:5} {f['p50_ms']:7.1f} ms ({_spread(f)})  {f['p50_ms'] / base['p50_ms']:.2f}x")
            for who, ms in fig.get("cpu_ms", {}).get(op, {}).items():
                print(f"      CPU of the {who}: {ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
