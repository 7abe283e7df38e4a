"""Helpers shared by the benchmarks: statistics, memory accounting, raw runtimes, repeats.

Both `bench/core.py` (standalone) and the suite (`bench/run`) import this module;
it puts the checkout's `src/` first on sys.path so either runs from a clone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sandlot.node import host_tuning  # noqa: E402
from sandlot.node.runtimes.container import ensure_hybrid_cgroups  # noqa: E402
from sandlot.node.spec import new_sandbox_id  # noqa: E402

IMAGE_CACHE = Path(os.environ.get("SANDLOT_TEST_IMAGE_CACHE", "/var/cache/sandlot/store-v2"))

__all__ = [
    "IMAGE_CACHE",
    "ROOT",
    "RawRuntime",
    "arepeat",
    "host_available_fraction",
    "pct",
    "pss_kb",
    "repeat",
    "summary",
]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def summary(xs: list[float]) -> dict[str, float]:
    """p50/p99 in ms of durations in seconds, and the samples (empty: NaN, so a report never crashes)."""
    if not xs:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "runs": 0, "samples_ms": []}
    return {
        "p50_ms": statistics.median(xs) * 1000,
        "p99_ms": pct(xs, 99) * 1000,
        "runs": len(xs),
        "samples_ms": [round(x * 1000, 3) for x in xs],
    }


def pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def host_available_fraction() -> float:
    """MemAvailable / MemTotal of the host."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0])
    return info["MemAvailable"] / info["MemTotal"]


def repeat(fn: Callable[[], float | None], runs: int, budget_s: float, min_runs: int = 3) -> list[float]:
    """Time `fn` up to `runs` times, stopping early once `budget_s` is spent (after `min_runs`).

    `fn` may return its own measured duration (seconds); else the call is timed.
    """
    xs: list[float] = []
    deadline = time.monotonic() + budget_s
    for i in range(runs):
        if i >= min_runs and time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        got = fn()
        xs.append(got if got is not None else time.perf_counter() - t0)
    return xs


async def arepeat(
    fn: Callable[[], Awaitable[float | None]], runs: int, budget_s: float, min_runs: int = 3
) -> list[float]:
    """`repeat` for coroutines."""
    xs: list[float] = []
    deadline = time.monotonic() + budget_s
    for i in range(runs):
        if i >= min_runs and time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        got = await fn()
        xs.append(got if got is not None else time.perf_counter() - t0)
    return xs


def _with_descendants(roots: set[int]) -> set[int]:
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found = set(roots)
    grew = True
    while grew:
        new = {pid for pid, ppid in parent.items() if ppid in found and pid not in found}
        found |= new
        grew = bool(new)
    return found


def _remove_root_cgroups(cid: str) -> None:
    """The empty cgroups a raw sandbox leaves at the hierarchies' roots (its bundle names no
    cgroupsPath, and runsc does not always remove them on delete)."""
    for d in Path("/sys/fs/cgroup").glob(f"*/{cid}"):
        with contextlib.suppress(OSError):
            d.rmdir()


class RawRuntime:
    """The same runtime driven directly through its CLI, on a plain bundle of the image.

    Container ids all come from `new_sandbox_id` and so have one length: runsc
    prefix-matches ids, and `sb-a` would otherwise also name `sb-ab`.
    """

    def __init__(self, runtime: str, rootfs: Path, state: Path) -> None:
        self.runtime = runtime
        self.state = state
        # The host as a node tunes it (NodeConfig.tune_host), so that a baseline measured before
        # any node ran does not wait on the kernel where Sandlot's starts no longer do.
        host_tuning.tune()
        if runtime == "container":
            # The host as Sandlot's crun runtime prepares it: on a host booted a moment ago crun
            # refuses ("cgroups in hybrid mode not supported") until hugetlb leaves cgroup2, and
            # the baselines run before any node has done it.
            ensure_hybrid_cgroups()
        self.bundle = Path(tempfile.mkdtemp(prefix="sandlot-bench-raw-"))
        config = {
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "env": ["PATH=/bin"], "cwd": "/"},
            "root": {"path": str(rootfs), "readonly": True},
            "hostname": "raw",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]},
        }
        (self.bundle / "config.json").write_text(json.dumps(config))

    @property
    def name(self) -> str:
        return "runsc" if self.runtime == "gvisor" else "crun"

    def cli(self, *args: str) -> list[str]:
        if self.runtime == "gvisor":
            return ["runsc", "--root", str(self.state), "--platform", "ptrace", "--network", "none", *args]
        return ["crun", "--root", str(self.state), *args]

    def set_args(self, args: list[str]) -> None:
        config = json.loads((self.bundle / "config.json").read_text())
        config["process"]["args"] = args
        (self.bundle / "config.json").write_text(json.dumps(config))

    def run_true(self) -> float:
        cid = new_sandbox_id()
        t0 = time.perf_counter()
        try:
            subprocess.run(self.cli("run", "--bundle", str(self.bundle), cid), check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter() - t0
        finally:
            subprocess.run(self.cli("delete", "--force", cid), capture_output=True)
            _remove_root_cgroups(cid)

    def do_true(self) -> float:
        """`runsc do /bin/true`: a throwaway sandbox over the host's root, no bundle."""
        t0 = time.perf_counter()
        subprocess.run(self.cli("do", "/bin/true"), check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0

    def start_sleeper(self) -> str:
        self.set_args(["/bin/sleep", "1000"])
        cid = new_sandbox_id()
        subprocess.run(
            self.cli("run", "--detach", "--bundle", str(self.bundle), cid),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.set_args(["/bin/true"])
        return cid

    def exec_true(self, cid: str) -> float:
        t0 = time.perf_counter()
        subprocess.run(self.cli("exec", cid, "/bin/true"), check=True)
        return time.perf_counter() - t0

    def pids(self, cid: str) -> list[int]:
        """Host pids of a raw sandbox, counted as `GVisorRuntime.host_pids` counts Sandlot's:
        the processes whose command line names the id (runsc's sandbox), the init from
        `state` (crun's), the gofer from runsc's state file, and all their descendants
        (the ptrace platform's stub processes)."""
        found = subprocess.run(["pgrep", "-f", cid], capture_output=True, text=True).stdout.split()
        roots = {int(p) for p in found}
        state = subprocess.run(self.cli("state", cid), capture_output=True, text=True)
        with contextlib.suppress(ValueError, AttributeError):
            roots.add(int(json.loads(state.stdout)["pid"]))
        for f in self.state.glob(f"*{cid}*.state"):
            with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
                state_file = json.loads(f.read_text())
                gofer = state_file.get("goferPid", state_file.get("GoferPid"))
                if isinstance(gofer, int) and gofer > 0:
                    roots.add(gofer)
        return sorted(_with_descendants({p for p in roots if p > 0}))

    def remove(self, cid: str) -> None:
        subprocess.run(self.cli("kill", cid, "KILL"), capture_output=True)
        subprocess.run(self.cli("delete", "--force", cid), capture_output=True)
        _remove_root_cgroups(cid)

    def close(self) -> None:
        shutil.rmtree(self.bundle, ignore_errors=True)
