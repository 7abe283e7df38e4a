"""Baselines measured in the same run as Sandlot: what a sandbox costs without Sandlot.

Each `measure_*` returns {name: {"p50_ms", "p99_ms", "runs"}} or a skip note
({"skipped": reason}); a missing tool is a note, never a crash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from lib import RawRuntime, pss_kb, repeat, summary

__all__ = ["Plan", "measure_all"]

PODMAN_IMAGE = "localhost/sandlot-bench-busybox:latest"


class Plan:
    """How many runs each kind of measurement makes, and its time bound (seconds)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.fast = 20 if quick else 200  # host fork/exec, bwrap: ms or less each
        self.medium = 10 if quick else 50  # crun run/exec, runsc exec, round trips
        self.slow = 5 if quick else 30  # runsc run/do, sandbox cold starts
        self.podman = 3 if quick else 10
        self.round_trips = 30 if quick else 200
        self.file_runs = 1 if quick else 5
        self.concurrent = 10 if quick else 100
        self.budget = 8.0 if quick else 60.0  # per measured series


def _call(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=60)


def _skip(reason: str) -> dict[str, Any]:
    print(f"  skipped: {reason}")
    return {"skipped": reason}


def host_true(plan: Plan) -> dict[str, Any]:
    def once() -> None:
        subprocess.run(["/bin/true"], check=True)

    return summary(repeat(once, plan.fast, plan.budget))


def bwrap_true(plan: Plan, rootfs: Path) -> dict[str, Any]:
    if shutil.which("bwrap") is None:
        return _skip("bwrap is not installed (apt-get install bubblewrap)")
    argv = ["bwrap", "--unshare-all", "--ro-bind", str(rootfs), "/", "/bin/true"]
    probe = subprocess.run(argv, capture_output=True, text=True)
    if probe.returncode:
        return _skip(f"bwrap fails here: {probe.stderr.strip()[:200]}")
    return summary(repeat(lambda: _call(argv), plan.fast, plan.budget))


def raw_runtime(plan: Plan, runtime: str, rootfs: Path, state: Path) -> dict[str, Any]:
    """`<rt> run true`, `<rt> exec true` into a sleeper, its idle PSS; and `runsc do true`."""
    raw = RawRuntime(runtime, rootfs, state)
    name = raw.name
    out: dict[str, Any] = {}
    cid = None
    try:
        raw.run_true()  # warm the page cache, unmeasured
        runs = plan.slow if runtime == "gvisor" else plan.medium
        out[f"{name} run"] = summary(repeat(raw.run_true, runs, plan.budget))
        if runtime == "gvisor":
            out["runsc do"] = summary(repeat(raw.do_true, plan.slow, plan.budget))
        cid = raw.start_sleeper()
        time.sleep(0.5)
        out[f"{name} exec"] = summary(repeat(lambda: raw.exec_true(cid), plan.medium, plan.budget))
        time.sleep(1.5)
        out[f"{name} idle sleeper"] = {"pss_mb": pss_kb(raw.pids(cid)) / 1024}
    except subprocess.CalledProcessError as exc:
        out[f"{name} run"] = _skip(f"{name} failed: {exc}")
    finally:
        if cid is not None:
            raw.remove(cid)
        raw.close()
    return out


def podman(plan: Plan, rootfs: Path) -> dict[str, Any]:
    """`podman run --rm` with crun and with runsc, from a `podman import` of the busybox rootfs."""
    if shutil.which("podman") is None:
        return {"podman": _skip("podman is not installed (apt-get install podman)")}
    with tempfile.TemporaryDirectory(prefix="sandlot-bench-podman-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar, "w") as tf:
            tf.add(rootfs, arcname=".")
        imp = subprocess.run(["podman", "import", "-q", str(tar), PODMAN_IMAGE], capture_output=True, text=True)
    if imp.returncode:
        return {"podman": _skip(f"podman import failed: {imp.stderr.strip()[:200]}")}
    base = ["podman", "run", "--rm", "--network=none"]
    variants = {
        # Debian's podman asks crun for host-sized rlimits it may not raise here.
        "podman run (crun)": [
            *base,
            "--runtime",
            "crun",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ],
        "podman run (runsc)": [
            *base,
            "--runtime",
            "runsc",
            "--runtime-flag",
            "network=none",
            "--runtime-flag",
            "platform=ptrace",
        ],
    }
    out: dict[str, Any] = {}
    for name, argv in variants.items():
        argv = [*argv, PODMAN_IMAGE, "/bin/true"]
        probe = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if probe.returncode:
            out[name] = _skip(f"{name} fails here: {probe.stderr.strip()[-200:]}")
            continue
        out[name] = summary(repeat(lambda a=argv: _call(a), plan.podman, plan.budget))
    return out


def host_files(plan: Plan) -> dict[str, Any]:
    """Write and read back a 100 MB file on the host's disk (no fsync, as the agent does)."""
    data = os.urandom(100 << 20)
    writes: list[float] = []
    reads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="sandlot-bench-files-", dir="/var/tmp") as tmp:
        path = Path(tmp) / "blob"
        for _ in range(plan.file_runs):
            t0 = time.perf_counter()
            path.write_bytes(data)
            writes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            path.read_bytes()
            reads.append(time.perf_counter() - t0)
    return {"host file write 100 MB": summary(writes), "host file read 100 MB": summary(reads)}


def measure_all(plan: Plan, rootfs: Path, state: Path) -> dict[str, Any]:
    steps = [
        ("host fork/exec", lambda: {"host fork/exec": host_true(plan)}),
        ("host files", lambda: host_files(plan)),
        ("bwrap", lambda: {"bwrap": bwrap_true(plan, rootfs)}),
        ("raw runsc", lambda: raw_runtime(plan, "gvisor", rootfs, state / "runsc")),
        ("raw crun", lambda: raw_runtime(plan, "container", rootfs, state / "crun")),
        ("podman", lambda: podman(plan, rootfs)),
    ]
    out: dict[str, Any] = {}
    for label, step in steps:
        t0 = time.monotonic()
        print(f"baseline: {label}", flush=True)
        try:
            out.update(step())
        except Exception as exc:  # a broken baseline is a note in the report, not a failed run
            out[label] = _skip(f"{label} crashed: {exc!r}"[:300])
        print(f"  ({time.monotonic() - t0:.1f} s)", flush=True)
    return out
