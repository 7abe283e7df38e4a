"""Moving persistent sandboxes off a node (`sandlot nodes drain`, `sandlot nodes rm`).

A move hibernates the sandbox (its processes stop; its memory is not kept: it
cannot load on another node, node/sandbox_move.py), streams its disk and its
checkpoints' from its node into one that placement chose (through this
replica, in chunks: nothing is held whole), switches the record's node, and
only then kills the copy on the old node and deletes the checkpoints there.
So until the switch the old node's copy is the sandbox, and a move cut short
anywhere (either node or this replica killed, a broken stream) loses nothing:
the new node removes what it was receiving (or sweeps it when it restarts), a
copy it finished but the record never named is replaced by the next try, and
the old node's leftover copy, if its kill failed, is destroyed when it rejoins
(no record places it there any more).

One move of a sandbox runs at a time across replicas: a reservation in the
scope `move:<id>` (api/reservations.py) is its lock, released when the move
ends and expiring if its replica dies midway. The moved sandbox keeps its id,
files, metadata and record; it stays hibernated on its new node and wakes
there, from its disk, on the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from sandlot import errors
from sandlot.api.fleet.placement import rank
from sandlot.api.reservations import Amount
from sandlot.api.store import ACTIVE_STATES
from sandlot.node.client import NodeClient
from sandlot.node.protocol import Limits, SandboxSpec

if TYPE_CHECKING:
    from sandlot.api.fleet.fleet import Fleet

__all__ = ["MOVE_WAIT_S", "move", "move_all"]

log = logging.getLogger("sandlot.api")

#: how long a move waits for another replica's move of the same sandbox to end
MOVE_WAIT_S = 600.0
#: moves of one drain that run at once
DRAIN_PARALLEL = 4


@contextlib.asynccontextmanager
async def _one_move(fleet: Fleet, sandbox_id: str) -> AsyncIterator[None]:
    """Hold the sandbox's move lock (waiting for a move of it by another replica to end)."""

    def check(c: Connection, held: Amount) -> None:
        if held.sandboxes:
            raise errors.ConflictError(f"sandbox {sandbox_id} is being moved by another replica")

    deadline = time.monotonic() + MOVE_WAIT_S
    while True:
        try:
            rid = await fleet.reservations.hold(f"move:{sandbox_id}", Amount(sandboxes=1), check)
            break
        except errors.ConflictError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # unreleased, it expires
            await fleet.reservations.release(rid)


async def move(fleet: Fleet, sandbox_id: str, off: str) -> str:
    """Move persistent sandbox `sandbox_id` off node `off` to a live, active node; its node now.

    A sandbox already elsewhere (moved meanwhile, through another replica) is left where it is.
    Raises RuntimeUnavailableError when no other node can take it (it stays where it was).
    """
    async with _one_move(fleet, sandbox_id):
        rec = await fleet.store.get_sandbox(sandbox_id)
        if rec is None or rec.state not in ACTIVE_STATES:
            raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found")
        if rec.node != off:
            fleet.placed(sandbox_id, rec.node)
            return rec.node
        if not rec.persistent:
            raise errors.SandboxStateError(f"sandbox {sandbox_id} is not persistent: only persistent sandboxes move")
        source = await fleet.node(off)
        await _hibernate(fleet, source, sandbox_id, off)
        limits = Limits(cpu=rec.cpu, memory_mb=rec.memory_mb, disk_mb=rec.disk_mb)
        spec = SandboxSpec(image=rec.template, runtime=rec.runtime, limits=limits, node_labels=rec.node_labels)
        live = await fleet.live(fresh=True)
        ranked = rank(live, spec, spec.node_labels, timeout=fleet.node_timeout_s, overcommit=fleet.overcommit)
        candidates = [n for n in ranked if n.name != off]

        async def ship(dest: NodeClient) -> None:
            # A copy an interrupted move left there: no record ever named it.
            with contextlib.suppress(errors.SandboxNotFoundError):
                await dest.kill(sandbox_id)
            await dest.import_disk(sandbox_id, await source.export_disk(sandbox_id))

        placed = await fleet.place(candidates, spec, ship)
        if placed is None:
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(rec.node_labels.items()))
            labels = f", labels {wanted}" if wanted else ""
            raise errors.RuntimeUnavailableError(
                f"no other live, active node of the fleet can take sandbox {sandbox_id} "
                f"({rec.memory_mb} MiB of memory, {rec.disk_mb} MiB of disk{labels}); it stays on node {off}"
            )
        return await _switch(fleet, sandbox_id, source, off, placed[0])


async def _hibernate(fleet: Fleet, source: NodeClient, sandbox_id: str, off: str) -> None:
    """Stop what runs in the sandbox (its memory cannot move), recording it hibernated."""
    status = await source.status(sandbox_id)
    if status is None:
        raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found on node {off}")
    if status.state == "paused":
        await source.resume(sandbox_id)
    if status.state in ("paused", "running"):
        await source.hibernate(sandbox_id, memory=False)
        await fleet.store.set_state(sandbox_id, "hibernated")


async def _switch(fleet: Fleet, sandbox_id: str, source: NodeClient, off: str, to: str) -> str:
    if not await fleet.store.set_node(sandbox_id, to, was=off):  # only if this move's lock expired midway
        with contextlib.suppress(errors.SandlotError):
            await (await fleet.node(to)).kill(sandbox_id)  # the record never named this copy
        raise errors.ConflictError(f"sandbox {sandbox_id} left node {off} meanwhile")
    fleet.placed(sandbox_id, to)
    log.info("moved sandbox %s from node %s to node %s", sandbox_id, off, to)
    try:
        await source.kill(sandbox_id)
    except errors.SandlotError as exc:  # destroyed when that node rejoins: no record places it there
        log.warning("moved sandbox %s: removing its old copy on node %s: %s", sandbox_id, off, exc)
    try:  # its checkpoints went with it: the old copies go (only those the new node holds)
        moved = {c.checkpoint_id for c in await (await fleet.node(to)).list_checkpoints(sandbox_id)}
        for ck in await source.list_checkpoints(sandbox_id):
            if ck.checkpoint_id in moved:
                await source.delete_checkpoint(ck.checkpoint_id)
    except errors.SandlotError as exc:
        log.warning("moved sandbox %s: removing its checkpoints' old copies on node %s: %s", sandbox_id, off, exc)
    return to


async def move_all(fleet: Fleet, off: str) -> tuple[dict[str, str], dict[str, str]]:
    """Move every persistent sandbox off node `off`: (sandbox id -> its new node, sandbox id -> why it stayed)."""
    ids = [r.sandbox_id for r in await fleet.store.active(persistent=True) if r.node == off]
    slots = asyncio.Semaphore(DRAIN_PARALLEL)
    moved: dict[str, str] = {}
    stayed: dict[str, str] = {}

    async def one(sid: str) -> None:
        async with slots:
            try:
                moved[sid] = await move(fleet, sid, off)
            except errors.SandlotError as exc:
                log.error("draining node %s: moving sandbox %s: %s", off, sid, exc)
                stayed[sid] = exc.message

    await asyncio.gather(*(one(s) for s in ids))
    return moved, stayed
