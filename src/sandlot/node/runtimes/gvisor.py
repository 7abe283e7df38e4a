"""gVisor (runsc): a user-space kernel between untrusted code and the host. The default."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.failpoints import afailpoint
from sandlot.node import cgroups
from sandlot.node.runtimes.base import Resources, Runtime, run_or_raise, run_tool, start_detached
from sandlot.node.spec import tmp_bind_mount

log = logging.getLogger("sandlot.node")

__all__ = ["GVisorRuntime"]

# What `runsc checkpoint` says (after a dump of the endpoint) when a TCP endpoint is open or in TIME_WAIT.
_UNSAVABLE_TCP = re.compile(r"endpoint cannot be saved in connected state: (local [0-9.:]+, remote [0-9.:]+)")

# What runsc says when the sandbox process it started ended before it booted. Under load it
# happens now and then (2 of a burst of 100 creates here), and the same bundle starts at the
# next try, once `destroy` has cleared what the failed one left.
_TRANSIENT_START = "cannot read client sync file: waiting for sandbox to start: EOF"

# The sentry and gofer live in the sandbox's host cgroup beside the workload;
# the agent enforces the workload's own limit (woken by the node when the host
# cgroup's usage grows, then scanning every 30 ms: node/limits.py), the host
# cgroup only backstops it, with room for a hog that grows meanwhile.
SENTRY_MEMORY_OVERHEAD = 128 << 20
# Under the ptrace platform one sandboxed process costs about ten host tasks
# (measured: 50 sleeping processes = 505 tasks in the sandbox's pids cgroup),
# and the sentry keeps stub processes around for reuse. Inside, RLIMIT_NPROC
# (which gVisor applies) and the agent's watchdog stop a fork bomb at the
# sandbox's own limit; the host cgroup only stops a runaway sentry, which
# would otherwise crash the whole sandbox, so it sits well above that.
SENTRY_PIDS_PER_PROCESS = 32
SENTRY_PIDS_OVERHEAD = 1024


class GVisorRuntime(Runtime):
    name = "gvisor"
    binary = "runsc"

    def __init__(self, state_dir: Path, platform: str = "ptrace", debug_log: bool = False) -> None:
        super().__init__(state_dir)
        if platform not in ("ptrace", "kvm", "systrap"):
            raise errors.InvalidArgumentError(f"unknown gVisor platform {platform!r} (ptrace, kvm or systrap)")
        self.platform = platform
        self.debug_log = debug_log

    @property
    def _root(self) -> str:
        return str(self.state_dir / "runsc")

    def _cli(self, *args: str, network: str = "none") -> list[str]:
        return ["runsc", "--root", self._root, "--platform", self.platform, "--network", network,
                "--host-uds", "open", *args]  # fmt: skip

    def resources(self, memory_bytes: int, pids: int) -> Resources:
        return Resources(
            memory_bytes + memory_bytes // 2 + SENTRY_MEMORY_OVERHEAD,
            SENTRY_PIDS_PER_PROCESS * pids + SENTRY_PIDS_OVERHEAD,
        )

    def adjust(self, config: dict[str, Any]) -> None:
        # gVisor enforces its own seccomp on the sentry; the workload's syscalls
        # never reach the host kernel, so no OCI seccomp profile is needed here.
        #
        # /tmp stays on the sandbox's disk (spec.tmp_bind_mount), cached by the
        # sentry like the root (the mount hint's "container" share: nobody else
        # writes that directory while the sandbox runs).
        tmp = tmp_bind_mount(config["root"]["path"])
        if tmp is not None:
            config["mounts"].append(tmp)
            hint = "dev.gvisor.spec.mount.sandlot-tmp."
            config.setdefault("annotations", {}).update(
                {hint + "source": tmp["source"], hint + "type": "bind", hint + "share": "container"}
            )
        # gVisor ignores the size of its /dev: the agent, as init, mounts a
        # sized one (agent/go/devfs.go), for which it alone gets CAP_SYS_ADMIN
        # and then drops it from every set before anything else runs.
        caps = config["process"]["capabilities"]
        for kind in caps:
            caps[kind] = [*caps[kind], "CAP_SYS_ADMIN"]

    async def start(self, sandbox_id: str, bundle: Path, log: Path, *, connected: bool = False) -> int:
        args = ("run", "--detach", "--pid-file", str(bundle / "pid"), "--bundle", str(bundle), sandbox_id)
        pid = await self._launch(args, sandbox_id, bundle, log, connected, "start")
        try:
            await afailpoint("runsc.start.after_run", sandbox_id)
        except errors.InternalError as exc:
            # Injected (tests): the start fails as runsc's do under load, leaving more behind than
            # runsc does (its processes, state and cgroup), for the node to clean up and retry.
            why = f"{exc}: {_TRANSIENT_START}"
            raise errors.InternalError(f"runsc could not start sandbox {sandbox_id}: {why}") from None
        return pid

    def start_failed_transiently(self, exc: BaseException) -> bool:
        return isinstance(exc, errors.InternalError) and _TRANSIENT_START in str(exc)

    async def _launch(
        self, args: tuple[str, ...], sandbox_id: str, bundle: Path, log: Path, connected: bool, what: str
    ) -> int:
        os.makedirs(self._root, exist_ok=True)
        _check_bind_sources(bundle, sandbox_id)
        cli = self._cli(*args, network="sandbox" if connected else "none")
        if self.debug_log:
            cli[1:1] = ["--debug", "--debug-log", f"{log.parent / 'runsc-debug'}/"]  # (a directory: a file per command)
        if connected:
            # The netstack takes over the namespace's eth0. This runsc refuses
            # ("cannot run with network enabled in root network namespace")
            # unless /proc/sys/net is hidden from it: do so in a mount namespace
            # of its own (MEASURED.md).
            cli = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs none /proc/sys/net && exec "$@"', "runsc-net", *cli]  # fmt: skip
        return await start_detached(cli, log, bundle / "pid", f"runsc could not {what} sandbox {sandbox_id}")

    async def destroy(self, sandbox_id: str) -> list[str]:
        problems: list[str] = []
        if not (self.state_dir / "runsc").exists():
            return problems
        # `runsc kill` asks the sandbox to kill its processes: a sandbox that is stopped
        # (SIGSTOP) or wedged never answers, and it would outlive its kill. Its host
        # processes (the sentry, the gofer) die with SIGKILL in any state, and everything
        # inside goes with the sentry; `runsc delete` then clears what runsc kept.
        self.terminate(sandbox_id)
        if self.running(sandbox_id):  # not when `terminate` already killed everything
            await run_tool(*self._cli("kill", "--all", sandbox_id, "KILL"), timeout=self.cleanup_timeout_s)
        if not self._forget_stopped(sandbox_id):
            rc, out = await run_tool(*self._cli("delete", "--force", sandbox_id), timeout=self.cleanup_timeout_s)
            if rc != 0 and "does not exist" not in out and "not found" not in out.lower():
                problems.append(f"runsc delete {sandbox_id}: {out}")
        problems += await asyncio.to_thread(cgroups.remove, sandbox_id)  # rmdirs: off the event loop
        return problems

    def _forget_stopped(self, sandbox_id: str) -> bool:
        """Remove what runsc keeps of a sandbox none of whose host processes is left; False: not done.

        Then all `runsc delete` does (its debug log) is find them gone, remove the
        sandbox's cgroups (`cgroups.remove` does that too) and its state file and
        lock. Starting the CLI is most of its cost, 50-100 ms on a loaded host, on
        the path of every restore. Only the two files this runsc release keeps are
        removed here; with a process left or anything else kept, `runsc delete` runs.
        """
        if self.running(sandbox_id):
            return False
        base = Path(self._root) / f"{sandbox_id}_sandbox:{sandbox_id}"
        state, lock = base.with_name(base.name + ".state"), base.with_name(base.name + ".lock")
        if set(Path(self._root).glob(f"*{sandbox_id}*")) - {state, lock}:
            return False
        lock.unlink(missing_ok=True)  # the state last: a crash between leaves what `runsc delete` clears
        state.unlink(missing_ok=True)
        return True

    async def pause(self, sandbox_id: str) -> None:
        await run_or_raise(f"runsc could not pause sandbox {sandbox_id}", *self._cli("pause", sandbox_id))

    async def resume(self, sandbox_id: str) -> None:
        await run_or_raise(f"runsc could not resume sandbox {sandbox_id}", *self._cli("resume", sandbox_id))

    # runsc checkpoint/restore (this release): ~0.2 s / 0.3 s for a shell. Not with
    # --leave-running (it hung here). One image restores into any sandbox of the same bundle.
    saves_memory = True

    # Saving and loading a memory image is the sentry's own work, done for the node (as a hypervisor
    # snapshots a VM), with every task of the sandbox stopped: it runs without the sandbox's CPU limit.
    # Its compression uses every core: at a 1-core limit the save took 1.45x and the load 1.4x as
    # long here. A restored sandbox gets its limit back as soon as runsc has started it.

    async def save_memory(self, sandbox_id: str, image_dir: Path) -> None:
        limit = cgroups.cpu_quota(sandbox_id)
        if limit is not None:
            cgroups.set_cpu_quota(sandbox_id, None, limit[1])
        try:
            await self._checkpoint(sandbox_id, image_dir)
        finally:
            if limit is not None:  # (after a save, for as long as the stopped sandbox's cgroup is there)
                cgroups.set_cpu_quota(sandbox_id, *limit)

    async def _checkpoint(self, sandbox_id: str, image_dir: Path) -> None:
        rc, out = await run_tool(*self._cli("checkpoint", "--image-path", str(image_dir), sandbox_id), timeout=300)
        if rc != 0:
            tcp = _UNSAVABLE_TCP.search(out)
            if tcp is not None:
                raise errors.SandboxStateError(
                    f"sandbox {sandbox_id} cannot be paused with its memory now: gVisor cannot save a TCP "
                    f"connection ({tcp.group(1)}), and it keeps closed ones for a minute (TIME_WAIT); "
                    "close its connections and retry in a minute, or pause it without memory"
                )
            # The reason ends runsc's first line (after a dump of the object); a goroutine stack follows.
            first = out.splitlines()[0] if out else ""
            why = first if len(first) <= 600 else f"{first[:200]} … {first[-400:]}"
            raise errors.InternalError(f"runsc could not save the memory of sandbox {sandbox_id}: {why}")

    async def restore_memory(
        self, sandbox_id: str, bundle: Path, image_dir: Path, log: Path, *, connected: bool = False
    ) -> int:
        args = ("restore", "--detach", "--image-path", str(image_dir), "--pid-file", str(bundle / "pid"),
                "--bundle", str(bundle), sandbox_id)  # fmt: skip
        cpu = json.loads((bundle / "config.json").read_text())["linux"]["resources"]["cpu"]
        # runsc sets no limit in a cgroup that is there already ("Using pre-created cgroup"): made
        # here without one, it holds the sentry while it loads the image, then gets the limit.
        cgroups.set_cpu_quota(sandbox_id, None, cpu["period"], make=True)
        try:
            return await self._launch(args, sandbox_id, bundle, log, connected, "restore")
        finally:
            cgroups.set_cpu_quota(sandbox_id, cpu["quota"], cpu["period"])

    async def alive(self, sandbox_id: str) -> bool:
        """runsc's word when it gives one; when `runsc state` fails (a timeout on a loaded host, its
        lock still held by a runsc command that died with a killed node), the sandbox's host
        processes decide: a live sandbox must never be taken for a dead one and destroyed."""
        for attempt in range(3):
            rc, out = await run_tool(*self._cli("state", sandbox_id))
            if rc == 0:
                try:
                    return json.loads(out).get("status") in ("running", "paused")
                except ValueError:
                    pass
            if not any((self.state_dir / "runsc").glob(f"*{sandbox_id}*.state")):
                return False  # runsc keeps nothing of it
            log.warning("runsc state %s failed (attempt %d): %s", sandbox_id, attempt + 1, out.strip()[-300:])
            await asyncio.sleep(0.5)
        return self.running(sandbox_id)

    def host_pids(self, sandbox_id: str) -> list[int]:
        pids = set(cgroups.procs(sandbox_id))
        # The gofer is started outside the sandbox's cgroup; find it from the state file. A state
        # file can outlive its processes (a crash) and their pids be reused: only a process whose
        # command line names the sandbox (its bundle) is still one of them.
        for f in (self.state_dir / "runsc").glob(f"*{sandbox_id}*.state"):
            try:
                state = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            candidates = [state.get(key) for key in ("GoferPid", "goferPid")]
            candidates.append((state.get("Sandbox") or {}).get("Pid"))
            pids.update(p for p in candidates if isinstance(p, int) and p > 0 and _names(p, sandbox_id))
        return sorted(p for p in pids if os.path.exists(f"/proc/{p}"))


def _check_bind_sources(bundle: Path, sandbox_id: str) -> None:
    """Refuse to boot when a bind source inside the sandbox's rootfs has become a symlink.

    The /tmp mount's source lies in the sandbox's own files; the runtime opens
    it on the host, where a symlink would lead anywhere. It is checked when the
    config is made and again before every boot (a restore swaps the disk).
    """
    config = json.loads((bundle / "config.json").read_text())
    root = os.path.realpath(config["root"]["path"])
    for m in config["mounts"]:
        src = m.get("source", "")
        if m.get("type") == "bind" and src.startswith(root + "/") and os.path.realpath(src) != src:
            raise errors.InternalError(
                f"sandbox {sandbox_id} cannot boot: its {m['destination']} is no longer a directory of its own"
            )


def _names(pid: int, sandbox_id: str) -> bool:
    try:
        return sandbox_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
