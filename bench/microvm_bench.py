"""microvm figures, each beside a baseline of the same run (and the gVisor and crun rows of the report).

- cold create → first command vs the raw QEMU boot of the same kernel and
  initramfs (the same machine and accelerator) to its first userspace
  instruction: init.c's `sandlot.probe` prints a marker and powers off;
- warm-pool create → first command vs that cold create;
- command round trip vs gVisor's, idle memory (PSS of QEMU) vs gVisor's;
- checkpoint (guest freeze + clone) and restore → first command (a reboot on
  the checkpoint's disk) vs the cold create;
- pause / resume with memory (QEMU's migration to a file and back) of a VM
  whose process holds 100 MB, vs gVisor's pause with memory.

Runs are few (a TCG boot is seconds): `--quick` makes two of each. On its own,

    .venv/bin/python bench/microvm_bench.py [--quick]

it also measures gVisor and crun the same way (cold create, round trip, idle
memory; gVisor's checkpoint, restore and pause with memory of the same busybox
process) and prints them side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

from baselines import Plan
from lib import arepeat, pss_kb, summary

from sandlot.node import Limits, Node, SandboxSpec
from sandlot.node.microvm import guest
from sandlot.node.microvm.accel import PROBE_OK, Accel
from sandlot.node.runtimes.microvm import QEMU, MicroVMRuntime, accel_args

__all__ = ["microvm_figures", "microvm_rows"]

HELD_MB = 100
HOLD = f"""awk 'BEGIN {{ s = sprintf("%1048576s", ""); for (i = 0; i < {HELD_MB}; i++) a[i] = s; print "held";
  system("sleep 100000") }}'"""
SPEC = SandboxSpec(image="busybox", runtime="microvm", limits=Limits(memory_mb=256))


def _raw_boot(rt: MicroVMRuntime, kernel: Path, initrd: Path, accel: Accel) -> float:
    """QEMU started → init's first line, with the runtime's own machine, CPU and command line."""
    argv = [QEMU, "-M", "microvm,x-option-roms=off,rtc=on", *accel_args(accel), "-m", "352M",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", rt.cmdline(accel) + " sandlot.probe"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if PROBE_OK.encode() in line:
                return time.perf_counter() - t0
        raise RuntimeError("the raw QEMU boot never reached init")
    finally:
        proc.kill()
        proc.wait()


async def _first_command(node: Node, spec: SandboxSpec) -> float:
    t0 = time.perf_counter()
    sbx = await node.create(spec)
    try:
        await sbx.run(["/bin/true"])
        return time.perf_counter() - t0
    finally:
        await node.kill(sbx.id)


async def _warm_pool(node: Node, runs: int) -> list[float]:
    from sandlot.node.pool import pool_key

    async def once() -> float:
        deadline = time.monotonic() + 300  # a refill is a boot
        while node.pool.idle(pool_key(SPEC)) < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return await _first_command(node, SPEC)

    node.pool.set_size(SPEC, 1)
    try:
        return await arepeat(once, runs, 0, min_runs=runs)
    finally:
        node.pool.set_size(SPEC, 0)


async def _lifecycle(node: Node, runs: int, spec: SandboxSpec = SPEC) -> dict[str, Any]:
    sbx = await node.create(spec)
    times: dict[str, list[float]] = {"checkpoint": [], "restore to command": [], "pause": [], "resume": []}
    cks: list[str] = []
    try:
        await sbx.run("head -c 20000000 /dev/urandom > /root/blob", timeout=300)
        for i in range(runs):
            await sbx.run("echo change >> /root/log")
            t0 = time.perf_counter()
            cks.append((await node.checkpoint(sbx.id, f"ck{i}")).id)
            times["checkpoint"].append(time.perf_counter() - t0)
        for _ in range(runs):
            t0 = time.perf_counter()
            await node.restore(sbx.id, cks[0])
            await sbx.run(["/bin/true"])
            times["restore to command"].append(time.perf_counter() - t0)
        proc = await sbx.start(HOLD)
        async for _fd, data in proc.output():
            if b"held" in data:
                break
        for _ in range(runs):
            t0 = time.perf_counter()
            await node.pause(sbx.id, memory=True)
            times["pause"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await node.resume(sbx.id)
            times["resume"].append(time.perf_counter() - t0)
    finally:
        await node.kill(sbx.id)
        for ck in cks:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(node.checkpoints.delete, ck)
    return {k: summary(v) for k, v in times.items()}


async def microvm_figures(node: Node, plan: Plan) -> dict[str, Any]:
    runs = 2 if plan.quick else 8
    rt = node.runtime("microvm")
    assert isinstance(rt, MicroVMRuntime)
    accel = await rt.ensure_accel()
    busybox = await asyncio.to_thread(node.images.ensure, "busybox")
    bundle = await node.bundle()
    kernel = await asyncio.to_thread(guest.ensure_vmlinux, rt.cache, guest.find_kernel())
    initrd = await asyncio.to_thread(guest.ensure_initrd, rt.cache, guest.find_kernel(), bundle.agent)
    await asyncio.to_thread(guest.ensure_rootfs_image, rt.cache, busybox.lowerdir)
    out: dict[str, Any] = {"accelerator": accel.name, "accelerator_reason": accel.why}
    print(f"sandlot microvm ({accel.name}): raw QEMU boot, cold creates", flush=True)
    out["raw boot"] = summary([await asyncio.to_thread(_raw_boot, rt, kernel, initrd, accel) for _ in range(runs)])
    await _first_command(node, SPEC)  # warm, unmeasured
    out["cold"] = summary(await arepeat(lambda: _first_command(node, SPEC), runs, 0, min_runs=runs))
    print("sandlot microvm: warm pool, round trips, idle memory", flush=True)
    out["warm pool"] = summary(await _warm_pool(node, runs))
    sbx = await node.create(SPEC)
    try:

        async def round_trip() -> None:
            await sbx.run(["/bin/true"])

        await round_trip()
        out["round trip"] = summary(await arepeat(round_trip, plan.medium, plan.budget))
        await asyncio.sleep(2)
        out["idle pss_mb"] = pss_kb(sbx.runtime.host_pids(sbx.id)) / 1024
    finally:
        await node.kill(sbx.id)
    print("sandlot microvm: checkpoint, restore, pause with memory", flush=True)
    out.update(await _lifecycle(node, runs))
    return out


def microvm_rows(s: dict[str, Any]) -> list[tuple[str, float, str, str, float, str]]:
    """Report rows: each microvm figure against its same-run baseline (NaN where it did not run)."""
    nan = float("nan")
    m = s.get("microvm", {})

    def get(d: dict[str, Any], *path: str) -> float:
        cur: Any = d
        for key in path:
            cur = cur.get(key, {}) if isinstance(cur, dict) else {}
        return float(cur) if isinstance(cur, (int, float)) else nan

    accel = m.get("accelerator", "n/a")
    cold, runs = get(m, "cold", "p50_ms"), f"{get(m, 'cold', 'runs'):.0f}"
    gv_mem = s.get("core memory pause", {})
    return [
        (f"microvm ({accel}) cold create → first command p50", cold, "ms",
         "raw QEMU boot of the same kernel + initramfs to init", get(m, "raw boot", "p50_ms"), runs),
        ("microvm create from a warm pool → first command p50", get(m, "warm pool", "p50_ms"), "ms",
         "microvm cold create → first command", cold, f"{get(m, 'warm pool', 'runs'):.0f}"),
        ("microvm command round trip p50", get(m, "round trip", "p50_ms"), "ms",
         "the same in gVisor", get(s, "core round trip gvisor", "p50_ms"), f"{get(m, 'round trip', 'runs'):.0f}"),
        ("microvm idle memory per VM (PSS of QEMU)", get(m, "idle pss_mb"), "MB",
         "idle gVisor sandbox", get(s, "core idle gvisor", "pss_mb"), "1"),
        ("microvm checkpoint p50 (guest freeze + clone)", get(m, "checkpoint", "p50_ms"), "ms",
         "gVisor checkpoint", get(s, "core checkpoints", "checkpoint", "p50_ms"),
         f"{get(m, 'checkpoint', 'runs'):.0f}"),
        ("microvm restore → first command p50 (a reboot)", get(m, "restore to command", "p50_ms"), "ms",
         "microvm cold create → first command", cold, f"{get(m, 'restore to command', 'runs'):.0f}"),
        (f"microvm pause with memory p50, {HELD_MB} MB held", get(m, "pause", "p50_ms"), "ms",
         "gVisor pause with memory (Python, 200 MB)", get(gv_mem, "pause", "p50_ms"), f"{get(m, 'pause', 'runs'):.0f}"),
        ("microvm resume from memory p50", get(m, "resume", "p50_ms"), "ms",
         "gVisor resume from memory", get(gv_mem, "resume", "p50_ms"), f"{get(m, 'resume', 'runs'):.0f}"),
    ]  # fmt: skip


async def _side_by_side(plan: Plan) -> None:
    import tempfile

    from measure import cold_starts, idle_pss, make_node, round_trips
    from suite import BUNDLE_CACHE

    node = make_node(Path(tempfile.mkdtemp(prefix="slb-mv-", dir="/var/tmp")), BUNDLE_CACHE)
    runs = 2 if plan.quick else 8
    try:
        vm = await microvm_figures(node, plan)
        rows = [(f"cold create → first command p50 ({vm['accelerator']})", "cold"),
                ("warm pool → first command p50", "warm pool"), ("command round trip p50", "round trip"),
                ("checkpoint p50", "checkpoint"),
                ("restore → first command p50", "restore to command"), ("pause with memory p50", "pause"),
                ("resume from memory p50", "resume")]  # fmt: skip
        other: dict[str, dict[str, Any]] = {}
        for name in ("gvisor", "container"):
            other[name] = {"cold": summary(await cold_starts(node, name, plan)),
                           "round trip": summary(await round_trips(node, name, plan)),
                           "idle": await idle_pss(node, name, 3)}  # fmt: skip
        gv = SandboxSpec(image="busybox", runtime="gvisor", limits=Limits(memory_mb=256))
        other["gvisor"].update(await _lifecycle(node, runs, gv))
    finally:
        await node.close()

    def ms(d: dict[str, Any], key: str) -> str:
        v = d.get(key, {}).get("p50_ms") if isinstance(d.get(key), dict) else None
        return "n/a" if v is None else f"{v:.0f} ms"

    print(f"\n| metric | microvm | gvisor | crun |\n| --- | --- | --- | --- |\n| raw QEMU boot to init p50 | "
          f"{ms(vm, 'raw boot')} | | |")  # fmt: skip
    for label, key in rows:
        print(f"| {label} | {ms(vm, key)} | {ms(other['gvisor'], key)} | {ms(other['container'], key)} |")
    idle = [
        f"{d:.1f} MB"
        for d in (vm["idle pss_mb"], other["gvisor"]["idle"]["pss_mb"], other["container"]["idle"]["pss_mb"])
    ]
    print(f"| idle memory (PSS) | {' | '.join(idle)} |")


if __name__ == "__main__":
    import argparse
    import os

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(f"load: {os.getloadavg()}", flush=True)
    asyncio.run(_side_by_side(Plan(args.quick)))
    print(f"load: {os.getloadavg()}", flush=True)
