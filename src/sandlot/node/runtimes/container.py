"""crun containers: namespaces, seccomp, dropped capabilities and cgroups. For trusted work.

The workload's syscalls reach the host kernel here, so this runtime adds what
gVisor makes unnecessary: a seccomp filter that refuses the syscalls a
container never needs (module loading, mounting, kexec, bpf, ...) and masks
of /proc and /sys paths.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.node import cgroups
from sandlot.node.runtimes.base import Resources, Runtime, run_or_raise, run_tool, start_detached

__all__ = ["BLOCKED_SYSCALLS", "ContainerRuntime"]

#: Refused with EPERM (Docker's default profile refuses these too).
BLOCKED_SYSCALLS = [
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "get_mempolicy",
    "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "mbind", "mount", "mount_setattr", "move_mount", "move_pages", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "personality", "pivot_root",
    "process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl", "reboot",
    "request_key", "set_mempolicy", "setns", "settimeofday", "stime", "swapoff", "swapon", "sysfs",
    "_sysctl", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
]  # fmt: skip

#: Headroom for the agent itself inside the container's pids cgroup ...
AGENT_PIDS = 16
#: ... which it takes at its start, as threads (the rest: its sudo helper and the like), so that a
#: fork bomb that fills the cgroup never refuses the agent's Go runtime a thread (it would die)
AGENT_THREADS = 12


def _seccomp() -> dict[str, Any]:
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": BLOCKED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }


def ensure_hybrid_cgroups() -> None:
    """crun 1.8 refuses a hybrid layout while any controller sits in cgroup2.

    On hosts like Debian 12's default (v1 controllers, an empty-ish v2 at
    `unified/`), hugetlb is often left on v2; mounting its v1 hierarchy moves it.
    """
    unified = cgroups.ROOT / "unified" / "cgroup.controllers"
    if not unified.exists():
        return
    for ctrl in unified.read_text().split():
        target = cgroups.ROOT / ctrl
        if target.is_dir() and any(target.iterdir()):
            continue
        target.mkdir(exist_ok=True)
        res = subprocess.run(
            ["mount", "-t", "cgroup", "-o", ctrl, "cgroup", str(target)], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise errors.RuntimeUnavailableError(
                f"runtime 'container' needs the v1 {ctrl} cgroup controller mounted at {target}: {res.stderr.strip()}"
            )


class ContainerRuntime(Runtime):
    name = "container"
    binary = "crun"
    agent_threads = AGENT_THREADS

    @property
    def _root(self) -> str:
        return str(self.state_dir / "crun")

    def check(self) -> None:
        super().check()
        ensure_hybrid_cgroups()

    def resources(self, memory_bytes: int, pids: int) -> Resources:
        return Resources(memory_bytes, pids + AGENT_PIDS)

    def adjust(self, config: dict[str, Any]) -> None:
        linux = config["linux"]
        linux["seccomp"] = _seccomp()
        linux["namespaces"].append({"type": "cgroup"})
        # The container's own cgroups, read-only: the agent reads memory.oom_control
        # to tell an out-of-memory kill from any other SIGKILL.
        config["mounts"].append(
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["ro", "nosuid", "noexec", "nodev"],
            }
        )
        # Without a loopback the sandbox has no network at all (network "none").
        config["process"]["capabilities"] = {
            k: [c for c in v if c != "CAP_NET_RAW"] for k, v in config["process"]["capabilities"].items()
        }

    async def start(self, sandbox_id: str, bundle: Path, log: Path, *, connected: bool = False) -> int:
        # crun joins the namespace named in the config; nothing else to do.
        os.makedirs(self._root, exist_ok=True)
        pid_file = bundle / "pid"
        cli = ["crun", "--root", self._root, "run", "--detach", "--pid-file", str(pid_file), "--bundle", str(bundle),
               sandbox_id]  # fmt: skip
        return await start_detached(cli, log, pid_file, f"crun could not start sandbox {sandbox_id}")

    async def destroy(self, sandbox_id: str) -> list[str]:
        problems: list[str] = []
        if self.running(sandbox_id):  # not when `terminate` already killed everything
            await run_tool(
                "crun", "--root", self._root, "kill", "--all", sandbox_id, "KILL", timeout=self.cleanup_timeout_s
            )
        rc, out = await run_tool(
            "crun", "--root", self._root, "delete", "--force", sandbox_id, timeout=self.cleanup_timeout_s
        )
        if rc != 0 and "does not exist" not in out and "not exist" not in out:
            problems.append(f"crun delete {sandbox_id}: {out}")
        problems += await asyncio.to_thread(cgroups.remove, sandbox_id)  # rmdirs: off the event loop
        return problems

    async def pause(self, sandbox_id: str) -> None:
        what = f"crun could not pause sandbox {sandbox_id}"
        await run_or_raise(what, "crun", "--root", self._root, "pause", sandbox_id)

    async def resume(self, sandbox_id: str) -> None:
        what = f"crun could not resume sandbox {sandbox_id}"
        await run_or_raise(what, "crun", "--root", self._root, "resume", sandbox_id)

    # CRIU 3.17 fails `criu check` on this kernel and Debian's crun is built without it.
    saves_memory_not_why = "crun here has no CRIU support"

    async def alive(self, sandbox_id: str) -> bool:
        rc, out = await run_tool("crun", "--root", self._root, "state", sandbox_id)
        return rc == 0 and ('"running"' in out or '"paused"' in out)

    def host_pids(self, sandbox_id: str) -> list[int]:
        return cgroups.procs(sandbox_id)
