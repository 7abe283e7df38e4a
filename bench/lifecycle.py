"""Lifecycle figures: checkpoint, restore and fork of a sandbox that wrote 100 MB since its image.

Each beside a baseline measured in the same run:
- checkpoint and restore vs `cp -a` of the same writable layer (the upper
  directory the sandbox wrote), the copy a checkpoint would make without clones;
- restore also vs raw `runsc run true` elsewhere in the report (a restore boots
  the sandbox again: the filesystem is the checkpoint's, the processes are new);
- fork x N (until every new sandbox ran a command) vs N fresh creates started
  together (until each ran a command);
- pause with memory to disk and resume (until the agent is back) of a sandbox
  whose Python process holds 200 MB, vs raw `runsc checkpoint` / `runsc
  restore` of a raw runsc sandbox running the same Python.

Standalone (the same figures without the rest of the suite; needs root):

    .venv/bin/python bench/lifecycle.py [--runs N] [--fork-runs N] [--quick] [--no-memory]
        [--network MODE] [--json FILE]

There each restore is measured right after a raw `runsc run true` (the floor a
restore, which boots the sandbox again, can approach) and each fork x10 right
after 10 fresh creates, in turns, so that on a shared host whose load comes and
goes both figures of a pair see the same load; it prints the per-pair ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from baselines import Plan
from lib import RawRuntime, arepeat, summary

from sandlot import errors
from sandlot.node import Limits, Node, SandboxSpec

__all__ = ["checkpoint_figures", "memory_pause_figures", "raw_checkpoint_restore"]

WRITTEN_MB = 100
HELD_MB = 200
# Every page touched: untouched pages would cost a memory image nothing.
HOLD = f"""
import time
b = bytearray({HELD_MB} << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print("held", flush=True)
time.sleep(100000)
"""


def _cp_a(src: Path) -> float:
    dest = Path(tempfile.mkdtemp(prefix="slb-cp-", dir="/var/tmp"))
    try:
        t0 = time.perf_counter()
        subprocess.run(["cp", "-a", f"{src}/.", str(dest)], check=True)
        subprocess.run(["sync", "-f", str(dest)], check=True)  # as a checkpoint flushes its copy
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(dest, ignore_errors=True)


async def _written_and_checkpointed(node: Node, spec: SandboxSpec) -> tuple[Any, Any, float]:
    """A sandbox that wrote WRITTEN_MB since its image, its first checkpoint, and how long that took."""
    sbx = await node.create(spec)
    try:
        res = await sbx.run(f"head -c {WRITTEN_MB << 20} /dev/urandom > /root/blob", timeout=300)
        assert res.exit_code == 0, res
        t0 = time.perf_counter()
        first = await node.checkpoint(sbx.id, "first")
        return sbx, first, time.perf_counter() - t0  # includes flushing the written MB
    except BaseException:
        await node.kill(sbx.id)
        raise


async def _fork_all(node: Node, checkpoint_id: str, n: int) -> float:
    """Fork `n` sandboxes; the time until every one ran a command (they are killed after)."""
    t0 = time.perf_counter()
    kids = await node.fork(checkpoint_id, n)
    try:
        await asyncio.gather(*(k.run(["/bin/true"]) for k in kids))
        return time.perf_counter() - t0
    finally:
        await asyncio.gather(*(node.kill(k.id) for k in kids))


async def _fresh_all(node: Node, spec: SandboxSpec, n: int) -> float:
    """Create `n` sandboxes at once; the time until every one ran a command (they are killed after)."""

    async def one() -> Any:
        s = await node.create(spec)
        await s.run(["/bin/true"])
        return s

    t0 = time.perf_counter()
    made = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    took = time.perf_counter() - t0
    await asyncio.gather(*(node.kill(s.id) for s in made if not isinstance(s, BaseException)))
    for s in made:
        if isinstance(s, BaseException):
            raise s
    return took


async def checkpoint_figures(node: Node, plan: Plan) -> dict[str, Any]:
    spec = SandboxSpec(image="busybox", runtime="gvisor")
    sbx, first, took = await _written_and_checkpointed(node, spec)
    out: dict[str, Any] = {"written_mb": WRITTEN_MB, "first checkpoint": summary([took])}
    cks: list[str] = [first.id]
    try:
        out["checkpoint size mb"] = first.size_bytes / (1 << 20)

        async def checkpoint() -> float:
            await sbx.run("echo change >> /root/log")
            t0 = time.perf_counter()
            ck = await node.checkpoint(sbx.id, f"ck{len(cks)}")
            took = time.perf_counter() - t0
            cks.append(ck.id)
            return took

        out["checkpoint"] = summary(await arepeat(checkpoint, plan.medium, plan.budget))

        async def restore() -> float:
            await sbx.run("echo change >> /root/log")
            t0 = time.perf_counter()
            await node.restore(sbx.id, first.id)
            return time.perf_counter() - t0

        out["restore"] = summary(await arepeat(restore, plan.slow, plan.budget))
        check = await sbx.run("ls -l /root/blob; cat /root/log 2>&1")
        assert str(WRITTEN_MB << 20) in check.stdout and "No such file" in check.stdout, check

        async def restore_then_command() -> float:
            t0 = time.perf_counter()
            await node.restore(sbx.id, first.id)
            await sbx.run(["/bin/true"])
            return time.perf_counter() - t0

        out["restore to command"] = summary(await arepeat(restore_then_command, plan.slow, plan.budget))
        out["cp -a upper"] = summary(
            [await asyncio.to_thread(_cp_a, sbx.layer.upper) for _ in range(max(3, plan.slow // 3))]
        )
        n, runs = 10, 1 if plan.quick else 3
        out["fork"] = summary(await arepeat(lambda: _fork_all(node, first.id, n), runs, plan.budget, min_runs=1))
        out["fresh creates"] = summary(await arepeat(lambda: _fresh_all(node, spec, n), runs, plan.budget, min_runs=1))
        out["fork n"] = n
    finally:
        await node.kill(sbx.id)
        for ck_id in cks:
            await asyncio.to_thread(node.checkpoints.delete, ck_id)
    return out


async def paired_figures(
    node: Node, raw: RawRuntime, runs: int, fork_runs: int, n: int = 10, network: str = "none"
) -> dict[str, Any]:
    """Restore and fork, each sample taken right after one of its floor, in turns: on a host whose
    load comes and goes, the two see the same load. Restore (until running again) vs raw `runsc
    run true`; fork xN (until all ran a command) vs N fresh creates at once. `network`: the sandboxes' mode."""
    spec = SandboxSpec(image="busybox", runtime="gvisor", network=network)
    sbx, first, _ = await _written_and_checkpointed(node, spec)
    times: dict[str, list[float]] = {"restore": [], "runsc run true": [], "fork": [], "fresh creates": []}
    try:
        for _ in range(runs):
            times["runsc run true"].append(await asyncio.to_thread(raw.run_true))
            await sbx.run("echo change >> /root/log")
            t0 = time.perf_counter()
            await node.restore(sbx.id, first.id)
            times["restore"].append(time.perf_counter() - t0)
        check = await sbx.run("ls -l /root/blob; cat /root/log 2>&1")
        assert str(WRITTEN_MB << 20) in check.stdout and "No such file" in check.stdout, check
        for _ in range(fork_runs):
            times["fresh creates"].append(await _fresh_all(node, spec, n))
            times["fork"].append(await _fork_all(node, first.id, n))
    finally:
        await node.kill(sbx.id)
        await asyncio.to_thread(node.checkpoints.delete, first.id)
    out: dict[str, Any] = {k: summary(v) for k, v in times.items()}
    out["fork n"] = n
    for ours, base in (("restore", "runsc run true"), ("fork", "fresh creates")):
        out[f"{ours} ratios"] = sorted(a / b for a, b in zip(times[ours], times[base], strict=True))
    return out


async def memory_pause_figures(node: Node, plan: Plan, rootfs: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"held_mb": HELD_MB}
    sbx = await node.create(SandboxSpec(image="debian", runtime="gvisor", limits=Limits(memory_mb=1024)))
    try:
        proc = await sbx.start(["python3", "-c", HOLD])
        async for _fd, data in proc.output():
            if b"held" in data:
                break
        times: dict[str, list[float]] = {"pause": [], "resume": []}

        async def once() -> None:
            t0 = time.perf_counter()
            await node.pause(sbx.id, memory=True)
            times["pause"].append(time.perf_counter() - t0)
            # Untimed, as the raw baseline's `runsc delete` between its checkpoint and restore: the
            # saved sandbox's killed processes exiting, which goes on behind the pause.
            await node.settle()
            t0 = time.perf_counter()
            await node.resume(sbx.id)
            times["resume"].append(time.perf_counter() - t0)

        try:
            await arepeat(once, plan.slow, plan.budget)
        except errors.SandlotError as exc:  # reported beside the runs that worked, not a crash of the suite
            out["error"] = f"after {len(times['resume'])} pause/resume cycles: {exc.message}"
            print(f"  pause with memory failed: {out['error']}", flush=True)
        out.update({k: summary(v) for k, v in times.items() if v})
    finally:
        await node.kill(sbx.id)
    raw = RawRuntime("gvisor", rootfs, node.config.data_dir / "raw-state")
    raw.set_args(["/usr/bin/python3", "-c", HOLD])
    try:
        out.update(await asyncio.to_thread(raw_checkpoint_restore, raw, max(3, plan.slow // 2)))
    finally:
        raw.close()
    return out


def raw_checkpoint_restore(raw: Any, runs: int, debug_log: Path | None = None) -> dict[str, Any]:
    """`runs` raw `runsc checkpoint` / `runsc restore` cycles of `raw`'s process; with `debug_log`,
    runsc logs each command there (a file each)."""
    from sandlot.node.spec import new_sandbox_id

    def cli(*args: str) -> list[str]:
        base = raw.cli(*args)
        return base if debug_log is None else [base[0], "--debug", "--debug-log", f"{debug_log}/", *base[1:]]

    cid = new_sandbox_id()
    image = Path(tempfile.mkdtemp(prefix="slb-img-", dir="/var/tmp"))
    bundle = str(raw.bundle)
    ckpt, rest = [], []
    size = 0
    try:
        # The sandbox inherits its stdio: no pipes, or waiting on them never ends.
        subprocess.run(cli("run", "--detach", "--bundle", bundle, cid), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        time.sleep(3)  # the python process touches its 200 MB
        for _ in range(runs):
            t0 = time.perf_counter()
            res = subprocess.run(cli("checkpoint", "--image-path", str(image), cid), capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"raw runsc checkpoint failed: {res.stdout} {res.stderr}")
            ckpt.append(time.perf_counter() - t0)
            size = (image / "checkpoint.img").stat().st_size
            subprocess.run(raw.cli("delete", "--force", cid), capture_output=True)
            t0 = time.perf_counter()
            subprocess.run(cli("restore", "--detach", "--image-path", str(image), "--bundle", bundle, cid),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)  # fmt: skip
            rest.append(time.perf_counter() - t0)
            for f in image.iterdir():
                f.unlink()
    finally:
        raw.remove(cid)
        shutil.rmtree(image, ignore_errors=True)
    return {"raw checkpoint": summary(ckpt), "raw restore": summary(rest), "raw image bytes": size}


def main() -> int:
    from measure import make_node
    from suite import BUNDLE_CACHE

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="restores, each beside a raw `runsc run true`")
    parser.add_argument("--fork-runs", type=int, default=3, help="forks x10, each beside 10 fresh creates")
    parser.add_argument("--quick", action="store_true", help="fewer pause with memory cycles")
    parser.add_argument("--no-memory", action="store_true", help="skip pause with memory")
    parser.add_argument("--network", default="none", help="the restored and forked sandboxes' network mode")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    plan = Plan(args.quick)
    work = Path(tempfile.mkdtemp(prefix="slb-", dir="/var/tmp"))  # short: agent socket paths
    try:
        node = make_node(work / "node", BUNDLE_CACHE)

        async def figures() -> dict[str, Any]:
            try:
                busybox = await asyncio.to_thread(node.images.ensure, "busybox")
                raw = RawRuntime("gvisor", busybox.rootfs, work / "raw")
                try:
                    out = {"paired": await paired_figures(node, raw, args.runs, args.fork_runs, network=args.network)}
                finally:
                    raw.close()
                if not args.no_memory:
                    debian = await asyncio.to_thread(node.images.ensure, "debian")
                    out["memory pause"] = await memory_pause_figures(node, plan, debian.rootfs)
                return out
            finally:
                await node.close()

        out = asyncio.run(figures())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    c = out["paired"]
    rows = [
        ("restore p50 (running again)", c["restore"]["p50_ms"], "raw `runsc run true`", c["runsc run true"]["p50_ms"]),
        (f"fork x{c['fork n']} -> all ran a command", c["fork"]["p50_ms"], f"{c['fork n']} fresh creates at once",
         c["fresh creates"]["p50_ms"]),
    ]  # fmt: skip
    m = out.get("memory pause", {})
    for op, raw_op in (("pause", "checkpoint"), ("resume", "restore")):
        if op in m and f"raw {raw_op}" in m:
            raw_ms = m[f"raw {raw_op}"]["p50_ms"]
            rows.append((f"{op} with memory p50", m[op]["p50_ms"], f"raw `runsc {raw_op}`", raw_ms))
    print(f"\n| {'figure':36} | {'ms':>8} | {'baseline (same run)':36} | {'ms':>8} | ratio |")
    for name, ours, base_name, base in rows:
        print(f"| {name:36} | {ours:8.1f} | {base_name:36} | {base:8.1f} | {ours / base:.2f}x |")
    for key in ("restore", "fork"):
        ratios = c[f"{key} ratios"]
        print(f"{key}: per-pair ratios min {ratios[0]:.2f} median {ratios[len(ratios) // 2]:.2f} max {ratios[-1]:.2f};"
              f" samples ms {c[key]['samples_ms']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
