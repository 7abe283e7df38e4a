"""Density: what an idle sandbox costs the host, how many one host holds, and a burst of creates.

Through a real server (bench/api_server.py) and the async SDK, gVisor sandboxes
from the `base` template, each created, then running one command, then left
alone, as a user would leave them:

- idle CPU: N idle Sandlot sandboxes and N raw `runsc run` sandboxes running
  `sleep` (the baseline), over one window: the CPU time of every host process
  each adds (sentry, gofer, ptrace stubs; per thread, from schedstat, in ns),
  and the server's own, shared out: Sandlot's figure per sandbox is its own
  processes' plus 1/N of the server's, against the raw sleeper's;
- the density curve: idle sandboxes added up to 200; at each step, create →
  first command p50 (probes made and killed one at a time), kill p50, host CPU
  (/proc/stat, every process of the host) and Sandlot's own CPU (the server and
  its sandboxes) over a window, memory;
- a burst of concurrent creates (each then runs a command and stays until all
  are done): errors, total time, p50/p99; then all are killed at once.

CPU figures are in % of ONE core (a 2-core host has 200%).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api_server import Server
from baselines import Plan
from lib import IMAGE_CACHE, RawRuntime, host_available_fraction, pss_kb, summary

from sandlot.node.bundle import ensure_bundle
from sandlot.node.runtimes.gvisor import GVisorRuntime

__all__ = ["cpu_ns", "density_figures", "density_markdown", "density_plot", "density_rows"]

TEMPLATE = "base"
#: Sandboxes being filled in at once between two steps of the curve (not measured).
FILL_CONCURRENCY = 4
#: Tries of each filling create before the curve goes on with fewer sandboxes than planned.
FILL_TRIES = 3


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


class DensityPlan:
    def __init__(self, quick: bool) -> None:
        self.idle_n = 3 if quick else 20
        self.window_s = 3.0 if quick else 15.0
        #: after sandboxes are made, before a window: their agents' watchdogs go back to sleep
        self.settle_s = 1.0 if quick else 3.0
        self.steps = [0, 5] if quick else [0, 50, 100, 150, 200]
        self.probes = 3 if quick else 10
        self.burst = 10 if quick else 100


def thread_cpu_ns(pids: list[int]) -> dict[tuple[int, int], int]:
    """CPU time (ns) so far of every live thread of `pids`, by (pid, tid) (schedstat: exact, unlike ticks)."""
    out: dict[tuple[int, int], int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    ns = int(Path(f"/proc/{pid}/task/{task.name}/schedstat").read_text().split()[0])
                    out[(pid, int(task.name))] = ns
    return out


def cpu_ns(pids: list[int]) -> int:
    """CPU time (ns) of every live thread of `pids` so far."""
    return sum(thread_cpu_ns(pids).values())


def _used_ns(before: dict[tuple[int, int], int], after: dict[tuple[int, int], int]) -> int:
    """CPU used between two snapshots by the threads alive at the end (a thread that exited
    meanwhile takes its whole total with it: summing totals could even go negative)."""
    return sum(ns - before.get(key, 0) for key, ns in after.items())


def _host_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole host, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f) - idle, sum(f)


async def measure_cpu(groups: dict[str, Callable[[], list[int]]], window_s: float) -> dict[str, float]:
    """% of one core each group's processes used over `window_s` (pids listed once, at the start),
    and the whole host's ("host")."""
    pids = {name: list_pids() for name, list_pids in groups.items()}
    before = {name: thread_cpu_ns(p) for name, p in pids.items()}
    busy0, total0 = _host_busy()
    t0 = time.monotonic()
    await asyncio.sleep(window_s)
    dt = time.monotonic() - t0
    busy1, total1 = _host_busy()
    out = {name: _used_ns(before[name], thread_cpu_ns(p)) / 1e9 / dt * 100 for name, p in pids.items()}
    cores = os.cpu_count() or 1
    out["host"] = (busy1 - busy0) / max(1, total1 - total0) * 100 * cores
    return out


class _Fleet:
    """The server and the SDK sandboxes it made, with their host processes."""

    def __init__(self, server: Server, conn: dict[str, Any]) -> None:
        self.server = server
        self.conn = conn
        self.runtime = GVisorRuntime(server.data_dir / "runtime")
        self.sandboxes: list[Any] = []

    def sandbox_pids(self) -> list[int]:
        return [pid for s in self.sandboxes for pid in self.runtime.host_pids(s.sandbox_id)]

    def server_pids(self) -> list[int]:
        return [self.server.proc.pid] if self.server.proc is not None else []

    async def create(self) -> tuple[Any, float]:
        """A sandbox that ran one command; and how long create → command done took."""
        from sandlot.sdk import AsyncSandbox

        t0 = time.perf_counter()
        sbx = await AsyncSandbox.create(template=TEMPLATE, **self.conn)
        try:
            await sbx.commands.run(["/bin/true"])
        except BaseException:
            with contextlib.suppress(Exception):
                await sbx.kill()
            raise
        return sbx, time.perf_counter() - t0

    async def fill(self, target: int) -> list[str]:
        """Idle sandboxes added up to `target`. A create that fails is retried (a busy host is a
        figure, not a crash); the failures are returned, for the report."""
        sem = asyncio.Semaphore(FILL_CONCURRENCY)
        failures: list[str] = []

        async def one() -> None:
            async with sem:
                for _ in range(FILL_TRIES):
                    try:
                        sbx, _ = await self.create()
                    except Exception as exc:  # reported, not hidden
                        failures.append(_error(exc))
                        continue
                    await sbx.close()
                    self.sandboxes.append(sbx)
                    return

        await asyncio.gather(*(one() for _ in range(target - len(self.sandboxes))))
        return failures

    async def kill_all(self) -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(_kill(s) for s in self.sandboxes), return_exceptions=True)
        self.sandboxes.clear()
        return time.perf_counter() - t0


async def _kill(sbx: Any) -> float:
    t0 = time.perf_counter()
    await sbx.kill()
    return time.perf_counter() - t0


async def idle_cpu(fleet: _Fleet, plan: DensityPlan, work: Path) -> dict[str, Any]:
    """N idle Sandlot sandboxes and N raw runsc sleepers, measured over the same window."""
    from sandlot.node.images import ImageStore

    rootfs = (await asyncio.to_thread(ImageStore(IMAGE_CACHE).ensure, "busybox")).rootfs
    raw = RawRuntime("gvisor", rootfs, work / "raw-runsc")
    cids: list[str] = []
    try:
        await fleet.fill(plan.idle_n)
        for _ in range(plan.idle_n):
            cids.append(await asyncio.to_thread(raw.start_sleeper))
        await asyncio.sleep(plan.settle_s)
        cpu = await measure_cpu(
            {
                "sandlot": fleet.sandbox_pids,
                "server": fleet.server_pids,
                "raw": lambda: [pid for c in cids for pid in raw.pids(c)],
            },
            plan.window_s,
        )
    finally:
        for c in cids:
            await asyncio.to_thread(raw.remove, c)
        raw.close()
    n = plan.idle_n
    return {
        "n": n,
        "window_s": plan.window_s,
        "sandlot_pct": cpu["sandlot"] / n,
        "server_pct": cpu["server"],
        "with_server_pct": (cpu["sandlot"] + cpu["server"]) / n,
        "raw_pct": cpu["raw"] / n,
        "host_pct": cpu["host"],
        "load": os.getloadavg()[0],
    }


async def curve(fleet: _Fleet, plan: DensityPlan) -> list[dict[str, Any]]:
    steps = []
    for target in plan.steps:
        failures = await fleet.fill(target)
        await asyncio.sleep(plan.settle_s)
        cpu = await measure_cpu({"sandlot": fleet.sandbox_pids, "server": fleet.server_pids}, plan.window_s)
        creates, kills = [], []
        for _ in range(plan.probes):
            try:
                sbx, took = await fleet.create()
            except Exception as exc:  # reported, not hidden
                failures.append(_error(exc))
                continue
            creates.append(took)
            kills.append(await _kill(sbx))
            await sbx.close()
        per = [pss_kb(fleet.runtime.host_pids(s.sandbox_id)) / 1024 for s in fleet.sandboxes]
        step = {
            "sandboxes": len(fleet.sandboxes),
            "create": summary(creates),
            "kill": summary(kills),
            "host_cpu_pct": cpu["host"],
            "sandlot_cpu_pct": cpu["sandlot"] + cpu["server"],
            "server_cpu_pct": cpu["server"],
            "idle_pss_mb": statistics.median(per) if per else float("nan"),
            "host_available": host_available_fraction(),
            "load": os.getloadavg()[0],
            "create_errors": len(failures),
            "error_samples": failures[:3],
        }
        steps.append(step)
        print(
            f"  density {step['sandboxes']}: create p50 {step['create']['p50_ms']:.0f} ms, "
            f"kill p50 {step['kill']['p50_ms']:.0f} ms, host CPU {cpu['host']:.0f}% of a core, "
            f"Sandlot {step['sandlot_cpu_pct']:.1f}%, load {step['load']:.1f}"
            + (f"; {len(failures)} creates failed, first: {failures[0]}" if failures else ""),
            flush=True,
        )
    return steps


async def burst(fleet: _Fleet, n: int) -> dict[str, Any]:
    """`n` creates at once, each running a command and staying until all are done; then all killed at once."""
    made: list[Any] = []

    async def one() -> float:
        sbx, took = await fleet.create()
        made.append(sbx)
        return took

    t0 = time.perf_counter()
    got = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    total = time.perf_counter() - t0
    ok = [x for x in got if isinstance(x, float)]
    errs = [_error(x) for x in got if not isinstance(x, float)]
    t0 = time.perf_counter()
    kills = await asyncio.gather(*(_kill(s) for s in made), return_exceptions=True)
    kill_total = time.perf_counter() - t0
    for s in made:
        with contextlib.suppress(Exception):
            await s.close()
    return {
        "n": n,
        "total_s": total,
        "create": summary(ok),
        "errors": len(errs),
        "error_samples": errs[:3],
        "kill_all_s": kill_total,
        "kill": summary([k for k in kills if isinstance(k, float)]),
        "kill_errors": sum(1 for k in kills if not isinstance(k, float)),
    }


async def density_figures(data_dir: Path, bundle_cache: Path, plan: Plan) -> dict[str, Any]:
    dp = DensityPlan(plan.quick)
    from sandlot.node.images import ImageStore

    print("density: the base image", flush=True)
    await asyncio.to_thread(ImageStore(IMAGE_CACHE).ensure, TEMPLATE)
    built = ensure_bundle(bundle_cache)
    shutil.copytree(built.path, data_dir / "bundle" / built.path.name, symlinks=True, dirs_exist_ok=True)
    server = Server(data_dir).start()
    fleet = _Fleet(server, {"api_url": server.url, "api_key": server.admin_key, "request_timeout": 120.0})
    out: dict[str, Any] = {}
    try:
        print(f"density: idle CPU, {dp.idle_n} Sandlot sandboxes and {dp.idle_n} raw runsc sleepers", flush=True)
        out["idle cpu"] = await idle_cpu(fleet, dp, data_dir.parent)
        await fleet.kill_all()
        i = out["idle cpu"]
        print("  " + _idle_line(i), flush=True)
        print(f"density: the curve to {dp.steps[-1]} idle sandboxes", flush=True)
        out["density curve"] = await curve(fleet, dp)
        await fleet.kill_all()
        print(f"density: a burst of {dp.burst} concurrent creates through HTTP+SDK", flush=True)
        out["http burst"] = await burst(fleet, dp.burst)
        b = out["http burst"]
        print(
            f"  {b['n'] - b['errors']}/{b['n']} in {b['total_s']:.1f} s, p50 {b['create']['p50_ms']:.0f} ms, "
            f"p99 {b['create']['p99_ms']:.0f} ms; all killed in {b['kill_all_s']:.1f} s",
            flush=True,
        )
    finally:
        with contextlib.suppress(Exception):
            await fleet.kill_all()
        server.stop()
    return out


# ------------------------------------------------------------ report


def _idle_line(i: dict[str, Any]) -> str:
    return (
        f"{i['n']} idle, {i['window_s']:.0f} s: Sandlot {i['with_server_pct']:.4f}% of a core per sandbox "
        f"(its processes {i['sandlot_pct']:.4f}% + the server's {i['server_pct']:.2f}% / {i['n']}), "
        f"raw runsc sleeper {i['raw_pct']:.4f}%: {_ratio(i['with_server_pct'], i['raw_pct']):.2f}x "
        f"({_ratio(i['sandlot_pct'], i['raw_pct']):.2f}x without the server), load {i['load']:.1f}"
    )


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) else float("nan")


def density_rows(s: dict[str, Any]) -> list[tuple[str, float, str, str, float, str]]:
    """Report rows (metric, Sandlot, unit, baseline name, baseline, runs): each beside its same-run baseline."""
    rows = []
    idle = s.get("idle cpu", {})
    n = f"{_num(idle.get('n')):.0f}"
    raw = "raw `runsc run` sandbox running `sleep`, same window"
    for metric, key in (  # the server works for every sandbox: its CPU is shared out among them
        ("idle CPU per sandbox, gVisor, % of a core: its processes + its share of the server", "with_server_pct"),
        ("  of which the sandbox's own processes (sentry, gofer, ptrace stubs)", "sandlot_pct"),
    ):
        rows.append((metric, _num(idle.get(key)), "%", raw, _num(idle.get("raw_pct")), n))
    steps = s.get("density curve", [])
    if steps:
        empty = steps[0]
        mid = min(steps, key=lambda st: abs(st["sandboxes"] - 100))
        last = steps[-1]
        for st in (mid, last) if mid is not last else (last,):
            rows.append(
                (
                    f"create → first command p50 with {st['sandboxes']} idle (HTTP+SDK)",
                    _num(st["create"]["p50_ms"]),
                    "ms",
                    f"the same with {empty['sandboxes']} idle",
                    _num(empty["create"]["p50_ms"]),
                    f"{st['create']['runs']}",
                )
            )
        rows.append(
            (
                f"host CPU with {last['sandboxes']} idle, % of a core",
                _num(last["host_cpu_pct"]),
                "%",
                f"with {empty['sandboxes']} idle",
                _num(empty["host_cpu_pct"]),
                "1",
            )
        )
    b = s.get("http burst")
    if b:
        rows.append(
            (
                f"{b['n']} concurrent creates → first command, HTTP+SDK, total (errors: {b['errors']})",
                _num(b["total_s"]) * 1000,
                "ms",
                f"{b['n']} x one create p50 on an empty host",
                _num(b["n"]) * _num(steps[0]["create"]["p50_ms"]) if steps else float("nan"),
                "1",
            )
        )
        for q in ("p50_ms", "p99_ms"):
            rows.append(
                (
                    f"  per create {q[:3]}",
                    _num(b["create"][q]),
                    "ms",
                    "one create on an empty host, p50",
                    _num(steps[0]["create"]["p50_ms"]) if steps else float("nan"),
                    f"{b['create']['runs']}",
                )
            )
    return rows


def density_markdown(s: dict[str, Any], fmt: Callable[[float, str], str]) -> list[str]:
    idle = s.get("idle cpu")
    lines = ["## Density (idle gVisor sandboxes from base, through HTTP+SDK)", ""]
    if idle:
        lines += [
            f"Idle CPU, {idle['n']} sandboxes of each kind over the same {idle['window_s']:.0f} s (load average "
            f"{idle['load']:.1f}): Sandlot {idle['with_server_pct']:.3f}% of a core per sandbox, counting its share "
            f"of the server ({idle['server_pct']:.2f}% in all) beside its own processes' {idle['sandlot_pct']:.3f}% "
            f"(sentry, gofer, ptrace stubs); a raw runsc sandbox running `sleep` {idle['raw_pct']:.3f}% "
            f"({_ratio(idle['with_server_pct'], idle['raw_pct']):.2f}x).",
            "",
        ]
    steps = s.get("density curve", [])
    if steps:
        base = _num(steps[0]["create"]["p50_ms"])
        lines += [
            "| idle sandboxes | create → first command p50 | vs none idle | kill p50 | host CPU | Sandlot CPU "
            "| idle PSS each | host memory available | load | failed creates |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for st in steps:
            p50 = _num(st["create"]["p50_ms"])
            lines.append(
                f"| {st['sandboxes']} | {fmt(p50, 'ms')} | {p50 / base:.2f}x | {fmt(_num(st['kill']['p50_ms']), 'ms')} "
                f"| {st['host_cpu_pct']:.0f}% | {st['sandlot_cpu_pct']:.1f}% | {fmt(_num(st['idle_pss_mb']), 'MB')} "
                f"| {st['host_available'] * 100:.0f}% | {st['load']:.1f} | {st.get('create_errors', 0)} |"
            )
        failed = [e for st in steps for e in st.get("error_samples", [])]
        if failed:
            lines += ["", f"Failed creates (retried while filling): {'; '.join(failed[:3])}"]
        lines += ["", f"CPU in % of one core (this host has {os.cpu_count()} cores).", ""]
    b = s.get("http burst")
    if b:
        lines += [
            f"Burst: {b['n']} creates at once through HTTP+SDK, each then running a command: "
            f"{b['n'] - b['errors']} succeeded in {b['total_s']:.1f} s (p50 {fmt(_num(b['create']['p50_ms']), 'ms')}, "
            f"p99 {fmt(_num(b['create']['p99_ms']), 'ms')}); then all killed at once in {b['kill_all_s']:.1f} s "
            f"({b['kill_errors']} errors)." + (f" Errors: {'; '.join(b['error_samples'])}" if b["errors"] else ""),
            "",
        ]
    return lines


def density_plot(s: dict[str, Any], ax: Any) -> None:
    """Create p50 and host CPU against idle sandboxes, on `ax` and a twin axis."""
    steps = s.get("density curve", [])
    if not steps:
        return
    xs = [st["sandboxes"] for st in steps]
    p50s = [st["create"]["p50_ms"] for st in steps]
    ax.plot(xs, p50s, "s--", color="#264653", label="create → first command p50 (ms)")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(xs, [st["host_cpu_pct"] for st in steps], "o-", color="#e76f51", label="host CPU (% of a core)")
    ax2.plot(xs, [st["sandlot_cpu_pct"] for st in steps], "^-", color="#2a9d8f", label="Sandlot's CPU (% of a core)")
    ax2.set_ylabel("% of one core")
    ax2.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left")


async def _idle_only(repeat: int) -> None:
    """Only the idle-CPU figure, `repeat` times over one server (what the density work is tuned by)."""
    import tempfile

    from sandlot.node.images import ImageStore

    work = Path(tempfile.mkdtemp(prefix="sld-", dir="/var/tmp"))  # short: agent socket paths
    try:
        await asyncio.to_thread(ImageStore(IMAGE_CACHE).ensure, TEMPLATE)
        server = Server(work / "data").start()
        fleet = _Fleet(server, {"api_url": server.url, "api_key": server.admin_key, "request_timeout": 120.0})
        try:
            for _ in range(repeat):
                print(_idle_line(await idle_cpu(fleet, DensityPlan(False), work)), flush=True)
        finally:
            with contextlib.suppress(Exception):
                await fleet.kill_all()
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="density figures alone (bench/run measures them all)")
    parser.add_argument("--idle-only", action="store_true", required=True, help="only the idle CPU per sandbox")
    parser.add_argument("--repeat", type=int, default=3, help="windows measured, one after another")
    asyncio.run(_idle_only(parser.parse_args().repeat))
