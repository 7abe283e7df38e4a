"""What a sandbox is asked to be (`SandboxSpec`) and the OCI runtime spec made from it."""

from __future__ import annotations

import os
import re
import resource
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.node.images import Image
from sandlot.node.netpolicy import NetworkPolicy
from sandlot.node.volumes import VolumeMount

__all__ = [
    "CGROUP_PARENT",
    "DEV_TMPFS_BYTES",
    "SANDBOX_ID_RE",
    "Limits",
    "SandboxSpec",
    "new_sandbox_id",
    "oci_config",
    "shm_bytes",
    "tmp_bind_mount",
]

#: Sandbox ids have one fixed length: runsc matches container ids by prefix,
#: so ids of equal length can never shadow each other (`sb-1` vs `sb-11`).
SANDBOX_ID_RE = re.compile(r"^sb-[0-9a-z]{16}$")
CGROUP_PARENT = "sandlot"
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_sandbox_id() -> str:
    return "sb-" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


@dataclass(frozen=True)
class Limits:
    cpu: float = 1.0  # cores
    memory_mb: int = 512
    pids: int = 256
    disk_mb: int = 1024

    def validate(self) -> Limits:
        if not 0.01 <= self.cpu <= 64:
            raise errors.InvalidArgumentError(f"cpu must be between 0.01 and 64 cores, got {self.cpu}", field="cpu")
        if not 16 <= self.memory_mb <= 1 << 20:
            raise errors.InvalidArgumentError(
                f"memory_mb must be between 16 and 1048576, got {self.memory_mb}", field="memory_mb"
            )
        if not 8 <= self.pids <= 1 << 16:
            raise errors.InvalidArgumentError(f"pids must be between 8 and 65536, got {self.pids}", field="pids")
        if not 16 <= self.disk_mb <= 1 << 22:
            raise errors.InvalidArgumentError(
                f"disk_mb must be between 16 and 4194304, got {self.disk_mb}", field="disk_mb"
            )
        return self


@dataclass
class SandboxSpec:
    image: str = "base"
    runtime: str = "gvisor"
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    #: a NetworkPolicy; a mode name or the API's dict is accepted too (see NetworkPolicy.parse)
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    hostname: str = "sandbox"
    #: named volumes bind-mounted into the sandbox (see volumes.py)
    volumes: list[VolumeMount] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.network, NetworkPolicy):  # a mode name or a dict, from untyped callers
            self.network = NetworkPolicy.parse(self.network)  # type: ignore[unreachable]

    def validate(self) -> SandboxSpec:
        self.limits.validate()
        self.network = NetworkPolicy.parse(self.network)
        for key in self.env:
            if not key or "=" in key or "\0" in key:
                raise errors.InvalidArgumentError(f"bad environment variable name {key!r}", field="env")
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9.-]{0,62}", self.hostname):
            raise errors.InvalidArgumentError(f"bad hostname {self.hostname!r}", field="hostname")
        for mount in self.volumes:
            mount.validate()
        return self


# Docker's default capability set: enough for a root user to act as root inside
# (setuid to other users, chown, bind low ports), nothing that administers the host.
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# Where a sandbox can write, and what bounds it (README "How it works"):
# everything outside volumes is in its writable layer (the disk limit, ENOSPC
# when full), /tmp included; the only memory-backed places are /dev (device
# nodes: DEV_TMPFS_BYTES) and /dev/shm (POSIX shared memory: `shm_bytes`),
# both tmpfs of a fixed size, so filling them is ENOSPC too and never the
# memory limit. /.sandlot/run (the agent's socket and config) is read-only.
DEV_TMPFS_BYTES = 1 << 20
#: /dev/shm is at most Docker's default, and a quarter of the memory limit below 256 MiB.
SHM_MAX_BYTES = 64 << 20


def shm_bytes(memory_mb: int) -> int:
    return min(SHM_MAX_BYTES, (memory_mb << 20) // 4)


def tmp_bind_mount(rootfs: str | Path) -> dict[str, Any] | None:
    """An explicit mount of the image's own /tmp (in the writable layer) at /tmp.

    runsc mounts a tmpfs of its own at /tmp whenever the config has no /tmp
    mount and the image's /tmp is empty: files there would live in memory,
    unbounded, and no checkpoint, restore or fork would carry them. Mounting
    the directory over itself keeps /tmp on the sandbox's disk.

    /tmp is resolved inside `rootfs` (a symlink in the image never leads out
    of it on the host); a missing /tmp is made (1777). None when it resolves
    to something that is not a directory: then there is nothing to mount.
    """
    root = os.path.realpath(rootfs)
    path = _resolve_in_root(root, "tmp")
    if path is None:
        return None
    if not os.path.lexists(path):
        try:
            os.mkdir(path, 0o1777)
            os.chmod(path, 0o1777)
        except OSError:
            return None
    if os.path.islink(path) or not os.path.isdir(path) or os.path.realpath(path) != path:
        return None
    return {"destination": "/tmp", "type": "bind", "source": path, "options": ["rbind", "rw", "nosuid", "nodev"]}


def _resolve_in_root(root: str, rel: str, hops: int = 40) -> str | None:
    """`rel` inside `root`, following symlinks as a chroot would; None if it loops or a parent is missing."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    done: list[str] = []
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        cur = os.path.join(root, *done, part)
        if os.path.islink(cur):
            hops -= 1
            if hops < 0:
                return None
            target = os.readlink(cur)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        if parts and not os.path.isdir(cur):
            return None
        done.append(part)
    return os.path.join(root, *done)


def oci_config(
    *,
    sandbox_id: str,
    spec: SandboxSpec,
    image: Image,
    rootfs: str,
    bundle_dir: str,
    run_dir: str,
    agent_path: str,
    memory_limit_bytes: int,
    pids_limit: int,
    extra_env: dict[str, str] | None = None,
    netns_path: str | None = None,
    disk: str | None = None,
) -> dict[str, Any]:
    """The OCI runtime config every runtime starts from; each adjusts its own parts.

    Its annotations name the sandbox's writable disk and the template's layers:
    a runtime that boots a guest kernel (microvm) mounts those, not `root`.
    """
    caps = list(DEFAULT_CAPS)
    # A container may not raise its hard limit above the node's own.
    nofile = min(1 << 20, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    period = 100_000
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [agent_path],
            "env": [f"{k}={v}" for k, v in {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(extra_env or {})}.items()],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted", "inheritable")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": False,
        },
        "root": {"path": rootfs, "readonly": False},
        "annotations": {"org.sandlot.image.lowerdir": image.lowerdir, **({"org.sandlot.disk": disk} if disk else {})},
        "hostname": spec.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", f"size={DEV_TMPFS_BYTES >> 10}k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": [
                    "nosuid",
                    "noexec",
                    "nodev",
                    "mode=1777",
                    f"size={shm_bytes(spec.limits.memory_mb) >> 10}k",
                ],
            },
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {
                "destination": "/.sandlot",
                "type": "bind",
                "source": bundle_dir,
                "options": ["rbind", "ro", "nosuid", "nodev"],
            },
            {
                "destination": "/.sandlot/run",
                "type": "bind",
                "source": run_dir,
                # read-only: it is on the host's disk, outside every limit (connecting to the socket needs no write)
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
            },
        ],
        "linux": {
            # A connected sandbox joins the namespace the node made for it (node/network.py).
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
            + [{"type": "network", **({"path": netns_path} if netns_path else {})}],
            "cgroupsPath": f"/{CGROUP_PARENT}/{sandbox_id}",
            "resources": {
                "memory": {"limit": memory_limit_bytes, "swap": memory_limit_bytes},
                "cpu": {"quota": max(1000, int(spec.limits.cpu * period)), "period": period},
                "pids": {"limit": pids_limit},
            },
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }
