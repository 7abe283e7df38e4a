"""Pause with memory to disk: the runtime saves every process and its memory, then they exit.

`save` closes the node's end of the agent connection first. The agent holds a
connected host Unix socket, which gVisor cannot write into a memory image: the
node half-closes it and waits until the agent has closed its end (it does on
the end of its input); with the node no longer listening, the agent's redial
loop fails quietly (nothing of the host stays open inside), the runtime saves
the sandbox, and after `load` the restored agent's next redial reaches the node
listening again.
The sandbox's filesystem stays mounted meanwhile; its memory image sits in
`<sandbox dir>/memory/`, so a paused sandbox survives a restart of the node.

gVisor (this release, ptrace) cannot save a listening TCP socket that an
epoll instance watches (an event-loop server: asyncio, uvicorn, Node.js): the
save is refused before it starts while a process that holds an epoll instance
listens (the agent reads the sandbox's /proc). Nor can it save a TCP endpoint
on the sandbox's interface in any state but closed (open, closing or
TIME_WAIT), and a refused save ends the sandbox; an endpoint reset by its peer
is closed at once, and
the side that closes a connection first is the one left in TIME_WAIT (gVisor
keeps it a minute). So before a save the host aborts (resets) every
connection it holds to the sandbox's address (the port proxy's direct route
among them, which is withdrawn meanwhile: `Sandbox.saving_memory`), then
refuses only while a flow the host cannot end lingers inside gVisor: one the
sandbox opened, or one gVisor closed first less than a minute ago. Measured
on this host: an established connection, and a connection gVisor closed
first, fail the save; after the host closed first, or reset the connection
(whichever side closed first), it succeeds. gVisor's own /proc/net/tcp does
not list TIME_WAIT endpoints, so the host's connection tracking (and its own
sockets, to tell which side closed first) is what the check reads.

The exit of the sandbox's processes during a save is on purpose: `generation`
is bumped first, so the exit watcher stands down (see `Node.watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandlot import errors
from sandlot.failpoints import afailpoint
from sandlot.node import cgroups, intent
from sandlot.node.network import Flow, conntrack_flows, time_wait_s
from sandlot.node.sandbox import Sandbox

if TYPE_CHECKING:
    from sandlot.node.node import Node

__all__ = ["forget", "load", "save", "save_then_release", "saved"]

log = logging.getLogger("sandlot.node")

#: How long a restored sandbox's agent may take to redial.
REDIAL_TIMEOUT = 30.0
#: How long the agent may take to close its link once the node has closed its end (before a save).
AGENT_CLOSE_S = 2.0
#: How long gVisor keeps a connection it closed first (TIME_WAIT), with a margin.
GVISOR_TIME_WAIT_S = 62


def image_dir(sbx: Sandbox) -> Path:
    return sbx.dir / "memory"


def saved(sbx: Sandbox) -> bool:
    """Whether the sandbox is paused with its memory on disk."""
    return (image_dir(sbx) / "checkpoint.img").exists()


def forget(sbx: Sandbox) -> None:
    shutil.rmtree(image_dir(sbx), ignore_errors=True)


async def save(node: Node, sbx: Sandbox, dest: Path | None = None) -> None:
    """Write the running sandbox's processes and memory to disk and release them (`save_then_release`,
    released before it returns)."""
    await (await save_then_release(node, sbx, dest))


async def save_then_release(node: Node, sbx: Sandbox, dest: Path | None = None) -> Coroutine[Any, Any, None]:
    """Write the running sandbox's processes and memory to disk; return their release, to await.

    The image goes to the sandbox's own `memory/` (a pause), or to `dest` (a
    checkpoint's). On failure the sandbox keeps running as it was (its agent
    is listened for again). A write-ahead record (intent.py) names the image
    until the caller is done with it (a pause: once it is whole; a checkpoint:
    the caller ends it after `load`), so a node killed midway brings the
    processes back from it.

    Once the image is whole the processes have been sent SIGKILL, and what is
    left is the release: waiting for them to exit (their memory torn down by
    the host kernel: ~50 ms here for 200 MB) and the runtime's cleanup. The
    caller awaits it before the sandbox's runtime is used again.
    """
    sbx.runtime.check_saves_memory()
    sbx.saving_memory = True  # the port proxy's direct route stands down until the save is over
    try:
        if not sbx.runtime.saves_open_connections:
            await _refuse_event_loop_servers(sbx)
            await _end_tcp(node, sbx)
        return await _save(node, sbx, dest)
    finally:
        sbx.saving_memory = False


async def _save(node: Node, sbx: Sandbox, dest: Path | None) -> Coroutine[Any, Any, None]:
    target = dest or image_dir(sbx)
    room = functools.partial(node.disks.check_room, need=cgroups.memory_usage(sbx.id) or 0, store=dest is not None)
    await asyncio.to_thread(room, f"save the memory of sandbox {sbx.id}")
    tmp = target.with_name(target.name + ".tmp")  # beside it: the rename must not cross filesystems
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    pids = sbx.runtime.host_pids(sbx.id)
    intent.begin(sbx.dir, memory_image=str(target))
    sbx.generation += 1
    if not await sbx.conn.close(wait_agent_s=0.0 if sbx.runtime.saves_agent_link else AGENT_CLOSE_S):
        log.warning("sandbox %s: its agent did not close its link within %.0f s of the node's", sbx.id, AGENT_CLOSE_S)
    try:
        await sbx.runtime.save_memory(sbx.id, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        intent.end(sbx.dir)
        await _listen_again(node, sbx)
        raise
    await afailpoint("node.memory.before_commit", sbx.id)
    tmp.rename(target)  # whole: from here on the processes live in the image
    await afailpoint("node.memory.after_commit", sbx.id)
    # The image is whole: nothing the processes still do matters. Killed, they are gone at
    # once; left to exit on their own, they took 100-250 ms more here.
    killed = sorted({*pids, *sbx.runtime.terminate(sbx.id)})
    if dest is None:  # `memory/` in its own directory says it all from now on
        intent.end(sbx.dir)
    return _release(sbx, killed)


async def _release(sbx: Sandbox, killed: list[int]) -> None:
    """Wait for the killed processes of a saved sandbox to exit, then clear the runtime's state and
    cgroups (its files stay)."""
    from sandlot.node.node import _wait_gone

    problems = await _wait_gone(killed)
    problems += await sbx.runtime.destroy(sbx.id)
    if problems:
        log.error("releasing sandbox %s after saving its memory: %s", sbx.id, "; ".join(problems))


async def _refuse_event_loop_servers(sbx: Sandbox) -> None:
    """Raise SandboxStateError, before anything is saved, while a process that holds an epoll
    instance listens on TCP: this gVisor release cannot save a listening socket in an epoll set
    ("endpoint still has waiters upon save"), and the refused save ends the sandbox."""
    try:
        found = await sbx.agent.listeners()
    except errors.InvalidArgumentError:  # an agent older than the question (started by an older node)
        return
    held = [f"{x.command} (pid {x.pid}) on {x.address}:{x.port}" for x in found if x.epoll]
    if held:
        raise errors.SandboxStateError(
            f"sandbox {sbx.id} cannot be paused with its memory now: gVisor cannot save a listening TCP socket "
            f"that an event loop watches (epoll), and a save it refuses ends the sandbox; held by {_some(held)}. "
            "Stop that server (an asyncio, uvicorn or Node.js one) and retry, or pause without memory"
        )


def _some(items: list[Any]) -> str:
    """The first three of `items`, and how many more there are."""
    more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
    return "; ".join(map(str, items[:3])) + more


async def _end_tcp(node: Node, sbx: Sandbox) -> None:
    """End the host's connections to the sandbox (see the module's docstring); raise SandboxStateError
    while a flow gVisor could not save may linger, before anything is saved."""
    if sbx.net is None:
        return
    closed_here = await node.network.abort_host_connections(sbx.net)
    tracked_s = time_wait_s()
    lingering = [f for f in conntrack_flows(sbx.net.address) if not _closed_inside(f, sbx, closed_here, tracked_s)]
    if lingering:
        raise errors.SandboxStateError(
            f"sandbox {sbx.id} cannot be paused with its memory now: gVisor cannot save its TCP connections "
            f"({_some(lingering)}), open or closed by the sandbox less than a minute ago; close them and retry in a "
            "minute, or pause it without memory"
        )
    problems = await node.network.forget_flows(sbx.net)  # ended: their entries would only mislead
    if problems:
        log.warning("sandbox %s: %s", sbx.id, "; ".join(problems))


def _closed_inside(flow: Flow, sbx: Sandbox, closed_here: set[int], tracked_s: int) -> bool:
    """Whether gVisor holds nothing of `flow` any more: it was reset, the host closed it first, or
    it has been closed longer than gVisor's TIME_WAIT."""
    assert sbx.net is not None
    if flow.state == "CLOSE":
        return True
    if flow.state != "TIME_WAIT":
        return False
    if flow.src == sbx.net.gateway and flow.sport in closed_here:
        return True
    return tracked_s - flow.expires_s > GVISOR_TIME_WAIT_S


async def _listen_again(node: Node, sbx: Sandbox) -> None:
    """After a failed save: the sandbox still runs; take its agent back and watch it again."""
    await sbx.reconnect()
    try:
        pid = int((sbx.dir / "bundle" / "pid").read_text().strip())
    except (OSError, ValueError):
        return
    node.watch(sbx, pid)
    with contextlib.suppress(errors.SandlotError):
        await sbx.conn.wait_connected(REDIAL_TIMEOUT)


async def load(node: Node, sbx: Sandbox, src: Path | None = None, *, network_ready: bool = False) -> None:
    """Restore a sandbox saved by `save` (from its own image, or a checkpoint's `src`).

    Its processes continue with their memory. On failure the half-restored
    runtime is removed and the memory image kept, so the sandbox stays paused
    and the resume can be retried. `network_ready`: its network was renewed since it stopped.
    """
    if not network_ready:
        await node.renew_network(sbx)
    await sbx.reconnect()
    image = src or image_dir(sbx)
    try:
        await sbx.runtime.prepare_disk(sbx.layer)
        pid = await sbx.runtime.restore_memory(
            sbx.id, sbx.dir / "bundle", image, sbx.dir / "runtime.log", connected=sbx.net is not None
        )
        exited = node.watch(sbx, pid)
        await afailpoint("node.memory.after_restore", sbx.id)
        await node.wait_agent(sbx, exited)
    except BaseException:
        sbx.generation += 1  # the watcher of the failed restore stands down
        await sbx.conn.close()
        problems = await sbx.runtime.destroy(sbx.id)
        if problems:
            log.error("cleanup after a failed restore of sandbox %s: %s", sbx.id, "; ".join(problems))
        raise
    if src is None:
        forget(sbx)
