"""Pause with memory to disk: the runtime saves every process and its memory, then they exit.

`save` closes the node's end of the agent connection first. The agent holds a
connected host Unix socket, which a runtime cannot write into a memory image;
with the node no longer listening, the agent's redial loop fails quietly
(nothing of the host stays open inside), the runtime saves the sandbox, and
after `load` the restored agent's next redial reaches the node listening again.
The sandbox's filesystem stays mounted meanwhile; its memory image sits in
`<sandbox dir>/memory/`, so a paused sandbox survives a restart of the node.

The exit of the sandbox's processes during a save is on purpose: `generation`
is bumped first, so the exit watcher stands down (see `Node.watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from sandlot import errors
from sandlot.failpoints import afailpoint
from sandlot.node import cgroups, intent
from sandlot.node.network import tcp_flows
from sandlot.node.sandbox import Sandbox

if TYPE_CHECKING:
    from sandlot.node.node import Node

__all__ = ["forget", "load", "save", "saved"]

log = logging.getLogger("sandlot.node")

#: How long a restored sandbox's agent may take to redial.
REDIAL_TIMEOUT = 30.0


def image_dir(sbx: Sandbox) -> Path:
    return sbx.dir / "memory"


def saved(sbx: Sandbox) -> bool:
    """Whether the sandbox is paused with its memory on disk."""
    return (image_dir(sbx) / "checkpoint.img").exists()


def forget(sbx: Sandbox) -> None:
    shutil.rmtree(image_dir(sbx), ignore_errors=True)


async def save(node: Node, sbx: Sandbox, dest: Path | None = None) -> None:
    """Write the running sandbox's processes and memory to disk and release them.

    The image goes to the sandbox's own `memory/` (a pause), or to `dest` (a
    checkpoint's). On failure the sandbox keeps running as it was (its agent
    is listened for again). A write-ahead record (intent.py) names the image
    until the caller is done with it (a pause: once it is whole; a checkpoint:
    the caller ends it after `load`), so a node killed midway brings the
    processes back from it.
    """
    from sandlot.node.node import _wait_gone

    sbx.runtime.check_saves_memory()
    if not sbx.runtime.saves_open_connections:
        _check_no_tcp(sbx)
    target = dest or image_dir(sbx)
    room = functools.partial(node.disks.check_room, need=cgroups.memory_usage(sbx.id) or 0, store=dest is not None)
    await asyncio.to_thread(room, f"save the memory of sandbox {sbx.id}")
    tmp = target.with_name(target.name + ".tmp")  # beside it: the rename must not cross filesystems
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    pids = sbx.runtime.host_pids(sbx.id)
    intent.begin(sbx.dir, memory_image=str(target))
    sbx.generation += 1
    await sbx.conn.close()
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
    problems = await _wait_gone(sorted({*pids, *sbx.runtime.terminate(sbx.id)}))
    problems += await sbx.runtime.destroy(sbx.id)  # the runtime's state and cgroups; the files stay
    if dest is None:  # `memory/` in its own directory says it all from now on
        intent.end(sbx.dir)
    if problems:
        log.error("releasing sandbox %s after saving its memory: %s", sbx.id, "; ".join(problems))


def _check_no_tcp(sbx: Sandbox) -> None:
    """gVisor cannot save a TCP endpoint on its interface, open or in TIME_WAIT, and a refused
    save ends the sandbox: ask the host's connection tracking first, and refuse while it lasts."""
    if sbx.net is None:
        return
    flows = tcp_flows(sbx.net.address)
    if flows:
        shown = "; ".join(flows[:3]) + (f" (and {len(flows) - 3} more)" if len(flows) > 3 else "")
        raise errors.SandboxStateError(
            f"sandbox {sbx.id} cannot be paused with its memory now: gVisor cannot save its TCP connections "
            f"({shown}), and closed ones linger for up to two minutes; close them and retry later, "
            "or pause it without memory"
        )


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
