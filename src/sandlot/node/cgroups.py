"""The host cgroups of a sandbox (cgroup v1 and v2), for accounting and cleanup.

The OCI runtimes create them from the OCI config's `cgroupsPath`
(`/sandlot/<sandbox id>`); the microvm runtime makes its own with `create`.
This module finds what they left behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from sandlot.node.spec import CGROUP_PARENT

__all__ = [
    "ROOT",
    "controllers",
    "cpu_quota",
    "create",
    "favor_moves",
    "field",
    "memory_usage",
    "open_file",
    "paths",
    "pread",
    "pread_int",
    "procs",
    "refusals_counter",
    "remove",
    "set_cpu_quota",
]

ROOT = Path("/sys/fs/cgroup")
MOUNTINFO = Path("/proc/self/mountinfo")


def _pure_v2() -> bool:
    """Whether the host mounts cgroup v2 alone (one hierarchy at ROOT), not v1's per-controller ones."""
    return (ROOT / "cgroup.controllers").exists()


def _hierarchies() -> list[Path]:
    if _pure_v2():
        return [ROOT]
    return [p for p in sorted(ROOT.iterdir()) if p.is_dir() and not p.is_symlink()]


def _cgroup2_mount() -> tuple[Path, list[str]] | None:
    """The host's cgroup2 mount (ROOT itself on a pure v2 host, `ROOT/unified` beside v1's
    hierarchies) and its superblock options; None on a host that mounts no cgroup2."""
    for line in MOUNTINFO.read_text().splitlines():
        mount, _, source = line.partition(" - ")
        fields, fs = mount.split(), source.split()
        if len(fs) < 3 or fs[0] != "cgroup2" or len(fields) < 5:
            continue
        where = Path(fields[4].replace("\\040", " "))
        if where in (ROOT, ROOT / "unified"):
            return where, fs[2].split(",")
    return None


def favor_moves() -> str | None:
    """Make moving a process into another cgroup cheap, host-wide (cgroup2's `favordynmods`).

    Every runtime start moves processes between cgroups: `runsc run` moves itself into the
    sandbox's cgroups and back, crun moves the container's init in. Without the option the
    kernel makes the first move after a quiet moment wait for an RCU grace period, 8-20 ms
    on this kind of host, twice in each gVisor start (cold create, restore, fork, resume).
    With it, forks and exits on the host take a slightly slower lock instead (the kernel's
    documented trade, made for hosts whose cgroups change often). The lock in question is one
    for the whole kernel, v1's hierarchies included, so the cgroup2 hierarchy's option serves all.

    Returns None when the option is set (now or before), else why it could not be: no
    cgroup2 mount, a kernel before 6.0 (no such option), no right to remount, or a cgroup
    namespace other than the host's.
    """
    found = _cgroup2_mount()
    if found is None:
        return f"no cgroup2 hierarchy is mounted at {ROOT} or {ROOT / 'unified'}"
    where, options = found
    if "favordynmods" in options:
        return None
    # mount(8) keeps the mount's other options (nsdelegate, nosuid, ...); a bare mount(2) remount would drop them.
    try:
        res = subprocess.run(["mount", "-o", "remount,favordynmods", str(where)], capture_output=True, text=True)
    except OSError as exc:  # no mount(8)
        return f"remounting {where} with favordynmods failed: {exc}"
    if res.returncode != 0:
        return f"remounting {where} with favordynmods failed: {res.stderr.strip() or res.returncode}"
    after = _cgroup2_mount()
    if after is None or "favordynmods" not in after[1]:
        # The kernel takes the hierarchy's options only from the host's cgroup namespace (a node in a pod has its own).
        return f"the kernel left {where} without favordynmods (is this node in a cgroup namespace of its own?)"
    return None


def refusals_counter(sandbox_id: str) -> Callable[[], int]:
    """A reader of how many forks the sandbox's pids limit has refused so far (`max` in its pids
    cgroup's pids.events; 0 before the cgroup exists). One read of one file per call: the
    directory is looked up once it exists (a rebooted runtime makes it again at the same path)."""
    found: list[Path] = []

    def read() -> int:
        if not found:
            d = controllers(sandbox_id).get("pids")
            if d is None:
                return 0
            found.append(d / "pids.events")
        try:
            data = found[0].read_bytes()
        except OSError:
            return 0
        return field(data, b"max")

    return read


def paths(sandbox_id: str) -> list[Path]:
    """Every existing cgroup directory of the sandbox, in any hierarchy."""
    return [p for h in _hierarchies() if (p := h / CGROUP_PARENT / sandbox_id).is_dir()]


def controllers(sandbox_id: str) -> dict[str, Path]:
    """The sandbox's cgroup directory of each controller (cgroup v2: its one directory under every name)."""
    if _pure_v2():
        d = ROOT / CGROUP_PARENT / sandbox_id
        return dict.fromkeys(("cpu", "cpuacct", "memory", "pids"), d) if d.is_dir() else {}
    found: dict[str, Path] = {}
    for h in _hierarchies():
        if (d := h / CGROUP_PARENT / sandbox_id).is_dir():
            found.update(dict.fromkeys(h.name.split(","), d))
    return found


def procs(sandbox_id: str) -> list[int]:
    pids: set[int] = set()
    for p in paths(sandbox_id):
        with contextlib.suppress(OSError):
            pids.update(int(x) for x in (p / "cgroup.procs").read_text().split())
    return sorted(pids)


def memory_usage(sandbox_id: str) -> int | None:
    for h in _hierarchies():
        for name in ("memory.usage_in_bytes", "memory.current"):
            f = h / CGROUP_PARENT / sandbox_id / name
            with contextlib.suppress(OSError, ValueError):
                return int(f.read_text())
    return None


def create(sandbox_id: str, memory_bytes: int, cpu_quota_us: int, cpu_period_us: int, pids: int) -> list[Path]:
    """The sandbox's memory, cpu and pids cgroups with these limits; returns where to write its pid."""
    made: list[Path] = []
    if _pure_v2():
        d = ROOT / CGROUP_PARENT / sandbox_id
        d.mkdir(parents=True, exist_ok=True)
        _write(d / "memory.max", memory_bytes)
        (d / "cpu.max").write_text(f"{cpu_quota_us} {cpu_period_us}")
        _write(d / "pids.max", pids)
        return [d]
    limits = {
        "memory": {"memory.limit_in_bytes": memory_bytes},
        "cpu": {"cpu.cfs_period_us": cpu_period_us, "cpu.cfs_quota_us": cpu_quota_us},
        "pids": {"pids.max": pids},
    }
    for controller, files in limits.items():
        d = ROOT / controller / CGROUP_PARENT / sandbox_id
        d.mkdir(parents=True, exist_ok=True)
        for name, value in files.items():
            _write(d / name, value)
        made.append(d)
    return made


def _cpu_dir(sandbox_id: str) -> tuple[Path, bool]:
    """The sandbox's cpu cgroup directory (it may not exist) and whether it is cgroup v2's."""
    if _pure_v2():
        return ROOT / CGROUP_PARENT / sandbox_id, True
    return ROOT / "cpu" / CGROUP_PARENT / sandbox_id, False


def cpu_quota(sandbox_id: str) -> tuple[int | None, int] | None:
    """The sandbox's CPU quota and period in µs (quota None: unlimited); None without a cpu cgroup."""
    d, v2 = _cpu_dir(sandbox_id)
    try:
        if v2:
            quota, period = (d / "cpu.max").read_text().split()
            return (None if quota == "max" else int(quota)), int(period)
        quota_us = int((d / "cpu.cfs_quota_us").read_text())
        return (None if quota_us < 0 else quota_us), int((d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def set_cpu_quota(sandbox_id: str, quota_us: int | None, period_us: int, *, make: bool = False) -> bool:
    """Set the sandbox's CPU quota (None: unlimited) and period. `make`: make its cpu cgroup first when
    there is none (cgroup v1 only: a v2 directory holds every controller). False: no cgroup to set."""
    d, v2 = _cpu_dir(sandbox_id)
    try:
        if make and not v2:
            d.mkdir(parents=True, exist_ok=True)
        if v2:
            (d / "cpu.max").write_text(f"{'max' if quota_us is None else quota_us} {period_us}")
        else:
            _write(d / "cpu.cfs_period_us", period_us)
            _write(d / "cpu.cfs_quota_us", -1 if quota_us is None else quota_us)
    except FileNotFoundError:
        return False
    return True


def _write(path: Path, value: int) -> None:
    path.write_text(str(value))


def remove(sandbox_id: str) -> list[str]:
    """rmdir the sandbox's cgroups (children first). Returns what could not be removed."""
    problems = []
    for p in paths(sandbox_id):
        for d in [*sorted((x for x in p.rglob("*") if x.is_dir()), key=lambda x: -len(x.parts)), p]:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as exc:
                problems.append(f"cgroup {d}: {exc.strerror}")
    return problems


# ------------------------------------------------------------ cgroup files kept open
# kernfs renders a cgroup file afresh at each read from offset 0, so the samplers (metrics.py,
# limits.py) open a sandbox's files once and read each with one `pread`: no path lookups per read.


def open_file(path: Path | str) -> int:
    """A read-only descriptor of a cgroup (or sysfs) file, or -1 when it is not there."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def pread(fd: int, size: int = 256) -> bytes:
    """What an open file renders now (b"": no descriptor, or the cgroup went away under it)."""
    if fd < 0:
        return b""
    try:
        return os.pread(fd, size, 0)
    except OSError:
        return b""


def pread_int(fd: int) -> int | None:
    """The number an open file holds now (None: not there, or not a number)."""
    try:
        return int(pread(fd, 32))
    except ValueError:
        return None


def field(data: bytes, name: bytes) -> int:
    """The value of `name` in a file of `name value` lines (memory.stat, cpu.stat, pids.events; 0: absent)."""
    key = b"\n" + name + b" "
    i = (b"\n" + data).find(key)
    if i < 0:
        return 0
    start = i + len(key) - 1
    end = data.find(b"\n", start)
    try:
        return int(data[start : end if end >= 0 else None])
    except ValueError:
        return 0
