"""The node is the parent of its sandboxes' host processes, and reaps them.

`runsc run --detach` and `crun run --detach` exit once the sandbox runs, so the
sandbox's processes are orphaned. Unless the node is a child subreaper they go
to the host's init, and on hosts whose init reaps lazily a dead sandbox stays a
zombie: it still looks alive to `kill(pid, 0)`, which stalls `runsc delete` for
seconds and hides a crash. So the node makes itself a subreaper and waits for
each sandbox process with a pidfd, which also tells it, without polling, the
moment a sandbox dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
from pathlib import Path

__all__ = ["become_subreaper", "children_of_self", "is_live", "protected", "sweep", "wait_exit"]

PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def become_subreaper() -> bool:
    return bool(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


async def wait_exit(pid: int) -> None:
    """Return once `pid` has exited, reaping it when it is the node's child."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        _reap(pid)
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
        _reap(pid)


def is_live(pid: int) -> bool:
    """True for a process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_of_self(pids: list[int]) -> list[int]:
    """The pids among `pids` whose parent is this process."""
    me = os.getpid()
    out = []
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                out.append(pid)
    return out


#: What a sandbox's own host processes are called: gVisor's sandbox, gofer and stubs
#: (runsc re-executes itself: "exe") and the agent (crun's container init). Only these
#: are ever reaped by `sweep`; every other child is some caller's, waiting for it.
SANDBOX_COMMS = ("exe", "sandlot-agent")

#: Children that asyncio's child watcher waits for (the runtimes' CLIs): a
#: sweep must never reap them, or asyncio would lose their exit status.
protected: set[int] = set()


def sweep() -> int:
    """Reap every zombie sandbox process re-parented to the node; returns how many.

    A dead sandbox's helper processes (gVisor's stubs, its gofer) are
    re-parented to the node, the subreaper, and only it can reap them. Nothing
    else may be reaped here: a tool the node runs (nft, ip, mount, runsc, ...)
    that exits before its pid reaches `protected` (spawning awaits, and
    `subprocess.run` in a thread never adds it) would lose its exit status,
    and its caller would wait for it forever (seen: `nft delete table` hung a
    restart while a concurrent destroy swept).
    """
    me = os.getpid()
    reaped = 0
    # Raw reads of each /proc/PID/stat (8x cheaper than pathlib's): a sweep reads every
    # process of the host, and it ran in the event loop on every pause with memory.
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in protected:
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            try:
                stat = os.read(fd, 1024)
            finally:
                os.close(fd)
            comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
            fields = stat.rsplit(b")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            continue
        if comm not in SANDBOX_COMMS:
            continue
        if fields[0] == b"Z" and int(fields[1]) == me:
            with contextlib.suppress(ChildProcessError, OSError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
    return reaped
