"""Wake a sandbox's limit watchdog when its host cgroup grows, never waking an idle one.

The agent enforces a sandbox's memory and pids limits from inside
(`agent/go/oom.go`), but it only watches while something happens: after it
starts a process, after an exit, and when the node pokes it (`limits.check`).
This monitor pokes it when the sandbox grows in a way the agent cannot see
without watching all the time: a process it did not start (a child of a long
running one) allocating memory or forking. The host sees every page and every
task a sandbox adds, at no cost to the sandbox:

- Memory, cgroup v1: two eventfd thresholds on the sandbox's memory cgroup
  (`cgroup.event_control`), one `step` above and one below the usage seen last.
  The kernel signals one when the usage crosses it; the monitor then re-arms
  both around the new usage, and pokes the agent when the usage grew (a hog
  under gVisor grows by more than 1 GB/s here: the agent must be awake early).
  Nothing runs while the usage stays within its step. Registering a threshold
  waits for an RCU grace period in the kernel (10-40 ms each, measured), so it
  is done in a thread of the monitor's own: the event loop (a create that just
  started the sandbox, its first command) never waits for it. Until the
  thresholds are armed, the loop below polls the sandbox's memory instead.
- Tasks (and memory on cgroup v2, which has no thresholds): ONE loop for all
  sandboxes reads each host cgroup's `pids.current` (`memory.current`) every
  `POLL_S` and pokes a sandbox that grew by `TASKS_DELTA` tasks since it was
  last poked (or `step` bytes). No sandbox is woken by it: these are host files,
  kept open, each read one `pread` (a few microseconds for 200 sandboxes' worth).

Containment itself stays with the agent and the host cgroups' backstops, which
sit above the limits with room for the time a poke takes (runtimes/gvisor.py).

Invariant: `_watched` holds one entry per watched sandbox id; an entry's
eventfds and open files are closed when it is replaced or forgotten, and the loop task runs
while `_watched` is not empty. Thresholds registered in the thread are handed to the
entry only if it is still watched and was not disarmed meanwhile (`arm_seq`); else they are closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sandlot import errors
from sandlot.node import cgroups

if TYPE_CHECKING:
    from sandlot.node.sandbox import Sandbox

__all__ = ["POLL_S", "TASKS_DELTA", "LimitMonitor"]

log = logging.getLogger("sandlot.node.limits")

#: How often the loop reads every sandbox's task count (and v2 memory), all at once. A fork
#: bomb is contained meanwhile by RLIMIT_NPROC inside gVisor and the host cgroup's backstop; the
#: poke only makes the agent report it (and kill the tree) sooner.
POLL_S = 1.0
#: Host tasks a sandbox may add before the agent is asked to look (under gVisor's
#: ptrace platform one sandboxed process is about ten host tasks).
TASKS_DELTA = 16
#: The smallest memory step between two pokes.
MIN_STEP = 4 << 20
#: How long a poke may take before it is abandoned (an agent that does not answer).
POKE_TIMEOUT = 10.0


@dataclass
class _Watch:
    sbx: Sandbox
    generation: int
    limit: int
    step: int
    memory_dir: Path | None
    #: open `pids.current`, and `memory.current` on cgroup v2 (read by the loop); -1: none
    pids_fd: int = -1
    memory_fd: int = -1
    tasks_base: int = -1
    memory_base: int = -1
    #: cgroup v1 thresholds: eventfd -> the usage it is armed at
    eventfds: dict[int, int] = field(default_factory=dict)
    #: bumped by each disarm: a registration still in the thread for an older number is stale
    arm_seq: int = 0


class LimitMonitor:
    """One per node: `watch` each sandbox once its runtime runs, `forget` it before it stops."""

    def __init__(self, poll_s: float = POLL_S) -> None:
        self.poll_s = poll_s
        self._watched: dict[str, _Watch] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._poking: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # One thread: registrations wait on the kernel, not the CPU; made on first use.
        self._registrar: ThreadPoolExecutor | None = None
        #: pokes sent, per sandbox id (for tests and the benchmark)
        self.pokes: dict[str, int] = {}

    def watch(self, sbx: Sandbox) -> None:
        """Watch `sbx`'s host cgroup from now on (again after a reboot of its runtime: a new cgroup)."""
        self.forget(sbx.id)
        limit = sbx.spec.limits.memory_mb << 20
        w = _Watch(sbx, sbx.generation, limit, max(MIN_STEP, limit // 16), None)
        dirs = cgroups.controllers(sbx.id)
        if "pids" in dirs:
            w.pids_fd = cgroups.open_file(dirs["pids"] / "pids.current")
        w.memory_dir = dirs.get("memory")
        self._watched[sbx.id] = w
        if w.memory_dir is not None:  # polled only while it has no thresholds (cgroup v2, or they failed)
            v2 = w.memory_dir / "memory.current"
            w.memory_fd = cgroups.open_file(v2 if v2.exists() else w.memory_dir / "memory.usage_in_bytes")
        self._arm(w)
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.ensure_future(self._poll_forever())

    def watching(self, sandbox_id: str) -> bool:
        return sandbox_id in self._watched

    def forget(self, sandbox_id: str, generation: int | None = None) -> None:
        """Stop watching (only the watch of `generation`, when given: a newer boot keeps its own)."""
        w = self._watched.get(sandbox_id)
        if w is None or (generation is not None and w.generation != generation):
            return
        del self._watched[sandbox_id]
        self._disarm(w)
        for fd in (w.pids_fd, w.memory_fd):
            if fd >= 0:
                os.close(fd)
        w.pids_fd = w.memory_fd = -1
        self.pokes.pop(sandbox_id, None)

    async def close(self) -> None:
        for sid in list(self._watched):
            self.forget(sid)
        for task in [self._loop_task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._registrar is not None:
            self._registrar.shutdown(wait=False, cancel_futures=True)
            self._registrar = None

    # ------------------------------------------------------------ memory thresholds (cgroup v1)

    def _arm(self, w: _Watch) -> None:
        """Set the two thresholds one step around the current usage (v1); else the loop polls memory.

        The thresholds are registered in the monitor's thread (`_register`); the
        loop polls the memory meanwhile. A threshold the usage has already passed
        when the kernel registers it never fires: when the usage left the band
        meanwhile (a growing hog), this counts as a crossing, handled on the loop's
        next turn.
        """
        self._disarm(w)
        if w.memory_dir is None or not (w.memory_dir / "cgroup.event_control").exists():
            return
        usage = cgroups.pread_int(w.memory_fd)
        if usage is None:
            return
        w.memory_base = usage
        level = usage - usage % w.step
        if self._registrar is None:
            self._registrar = ThreadPoolExecutor(1, thread_name_prefix="sandlot-limits")
        task = asyncio.ensure_future(self._register(w, w.arm_seq, (level - w.step, level + w.step)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _register(self, w: _Watch, seq: int, band: tuple[int, int]) -> None:
        """Register `band`'s thresholds in the monitor's thread; `w` gets them if it still wants them."""
        assert w.memory_dir is not None and self._registrar is not None
        loop = asyncio.get_running_loop()
        registering = loop.run_in_executor(self._registrar, _register_band, w.memory_dir, band)
        try:
            efds, failed = await asyncio.shield(registering)
        except asyncio.CancelledError:  # the monitor closes: what the thread registers is closed then
            registering.add_done_callback(lambda f: _close_all(f.result()[0]) if not f.cancelled() else None)
            raise
        if self._watched.get(w.sbx.id) is not w or w.arm_seq != seq:  # forgotten or re-armed meanwhile
            _close_all(efds)
            return
        if failed is not None:
            log.warning("no memory threshold for sandbox %s (%s); polling its memory", w.sbx.id, failed)
            return
        w.eventfds = efds
        for efd in efds:
            loop.add_reader(efd, self._crossed, w, efd)
        low, high = band
        now = cgroups.pread_int(w.memory_fd)
        if now is not None and not low < now < high:
            loop.call_soon(self._crossed, w, -1)

    def _disarm(self, w: _Watch) -> None:
        loop = asyncio.get_running_loop()
        for efd in w.eventfds:
            loop.remove_reader(efd)
            os.close(efd)
        w.eventfds = {}
        w.arm_seq += 1  # a registration under way is stale: closed when it returns

    def _crossed(self, w: _Watch, efd: int) -> None:
        """The usage left its band: poke the agent first when it grew high enough, then re-arm."""
        if self._watched.get(w.sbx.id) is not w or (efd >= 0 and efd not in w.eventfds):
            return
        usage = cgroups.pread_int(w.memory_fd)
        if usage is not None and usage > w.memory_base:
            self._poke(w)
        self._arm(w)

    # ------------------------------------------------------------ the loop (tasks; v2 memory)

    async def _poll_forever(self) -> None:
        while self._watched:
            for w in list(self._watched.values()):
                self._check(w)
            await asyncio.sleep(self.poll_s)

    def _check(self, w: _Watch) -> None:
        grew = False
        if (tasks := cgroups.pread_int(w.pids_fd)) is not None:
            if w.tasks_base < 0 or tasks < w.tasks_base:
                w.tasks_base = tasks
            elif tasks >= w.tasks_base + TASKS_DELTA:
                w.tasks_base, grew = tasks, True
        if w.memory_fd >= 0 and not w.eventfds:  # no thresholds (cgroup v2, failed, or being armed): poll
            usage = cgroups.pread_int(w.memory_fd)
            if usage is not None:
                if w.memory_base < 0 or usage < w.memory_base:
                    w.memory_base = usage
                elif usage >= w.memory_base + w.step:
                    w.memory_base = usage
                    grew = True
        if grew:
            self._poke(w)

    # ------------------------------------------------------------ pokes

    def _poke(self, w: _Watch) -> None:
        """Ask the agent to look now; at most one poke per sandbox in flight (the agent stays awake meanwhile)."""
        sbx = w.sbx
        if sbx.id in self._poking or sbx.state.value != "running":
            return
        self._poking.add(sbx.id)
        self.pokes[sbx.id] = self.pokes.get(sbx.id, 0) + 1
        task = asyncio.ensure_future(self._send_poke(sbx))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_poke(self, sbx: Sandbox) -> None:
        try:
            await asyncio.wait_for(sbx.agent.check_limits(), POKE_TIMEOUT)
        except (errors.SandlotError, TimeoutError) as exc:
            log.debug("poking the limit watchdog of sandbox %s: %s", sbx.id, exc)
        finally:
            self._poking.discard(sbx.id)


def _close_all(fds: dict[int, int]) -> None:
    for fd in fds:
        os.close(fd)


def _register_band(memory_dir: Path, band: tuple[int, int]) -> tuple[dict[int, int], OSError | None]:
    """Thresholds at the band's ends that are above 0 (in the monitor's thread): eventfd -> level,
    and the error that stopped it (the ones made before it are closed)."""
    efds: dict[int, int] = {}
    for at in reversed(band):
        if at <= 0:
            continue
        try:
            efds[_register_threshold(memory_dir, at)] = at
        except OSError as exc:
            _close_all(efds)
            return {}, exc
    return efds, None


def _register_threshold(memory_dir: Path, at: int) -> int:
    """An eventfd the kernel signals when the cgroup's memory usage crosses `at` bytes (cgroup v1)."""
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        ufd = os.open(memory_dir / "memory.usage_in_bytes", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with open(memory_dir / "cgroup.event_control", "w") as f:
                f.write(f"{efd} {ufd} {at}")
        finally:
            os.close(ufd)
    except BaseException:
        os.close(efd)
        raise
    return efd
