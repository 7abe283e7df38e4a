"""Checkpoints as the API sees them: the node's checkpoints, scoped to the caller's team.

A checkpoint belongs to the team of the sandbox it was taken of (the sandbox's
record outlives the sandbox, so a checkpoint of a killed sandbox keeps its
owner). Another team's checkpoint is "not found", never "forbidden": ids do not
leak across teams.
"""

from __future__ import annotations

import contextlib
import time

from sandlot import errors
from sandlot.api.auth import Principal
from sandlot.api.service import SandboxService
from sandlot.api.store import SandboxRecord
from sandlot.api.teams import Room
from sandlot.failpoints import afailpoint
from sandlot.models import CheckpointInfo, ForkRequest
from sandlot.node.protocol import SandboxStatus

__all__ = ["checkpoint", "delete", "fork", "get", "list_checkpoints", "restore"]

_LIVE = ("running", "paused")


async def get(svc: SandboxService, who: Principal, checkpoint_id: str) -> CheckpointInfo:
    ck = await svc.node.get_checkpoint(checkpoint_id)
    if await svc.store.get_sandbox(ck.sandbox_id, who.team) is None:
        raise errors.CheckpointNotFoundError(f"checkpoint {checkpoint_id} not found")
    return ck


async def _live(svc: SandboxService, who: Principal, sandbox_id: str, verb: str) -> SandboxRecord:
    rec = await svc.get(who, sandbox_id)
    await svc.wake_if_hibernated(rec)
    if rec.state not in _LIVE:
        reason = f" ({rec.exit_reason})" if rec.exit_reason else ""
        raise errors.SandboxStateError(f"cannot {verb} sandbox {sandbox_id} in state {rec.state}{reason}")
    return rec


async def checkpoint(
    svc: SandboxService, who: Principal, sandbox_id: str, name: str, memory: bool = False
) -> CheckpointInfo:
    await _live(svc, who, sandbox_id, "checkpoint")
    async with svc.teams.admit(who.team, what=f"checkpoint sandbox {sandbox_id}"):
        ck = await svc.node.checkpoint(sandbox_id, name, memory=memory)
    await svc.events.add(who.team, sandbox_id, "checkpointed", ck.checkpoint_id)
    return ck


async def list_checkpoints(svc: SandboxService, who: Principal, sandbox_id: str) -> list[CheckpointInfo]:
    await svc.get(who, sandbox_id)
    return await svc.node.list_checkpoints(sandbox_id)


async def delete(svc: SandboxService, who: Principal, checkpoint_id: str) -> None:
    await get(svc, who, checkpoint_id)
    await svc.node.delete_checkpoint(checkpoint_id)


async def restore(svc: SandboxService, who: Principal, sandbox_id: str, checkpoint_id: str) -> SandboxRecord:
    rec = await _live(svc, who, sandbox_id, "restore")
    await get(svc, who, checkpoint_id)
    try:
        await svc.node.restore(sandbox_id, checkpoint_id)
    finally:  # a failed reboot kills the sandbox: the record must say so
        await svc._reconcile(rec)
    if rec.state == "paused":
        await svc.store.set_state(sandbox_id, "running")
        rec.state = "running"
    await svc.events.add(who.team, sandbox_id, "restored", checkpoint_id)
    return rec


async def fork(svc: SandboxService, who: Principal, checkpoint_id: str, req: ForkRequest) -> list[SandboxRecord]:
    ck = await get(svc, who, checkpoint_id)
    parent = await svc.store.get_sandbox(ck.sandbox_id, who.team)
    assert parent is not None  # get() checked it
    admit = svc.teams.admit(
        who.team, sandboxes=req.count, disk_mb=req.count * parent.disk_mb, what=f"fork {req.count} sandbox(es)"
    )
    async with admit as room:
        sandboxes = await svc.node.fork(checkpoint_id, req.count)
        recs = await _record_forks(svc, who, parent, sandboxes, req, checkpoint_id, room)
    forks = " ".join(r.sandbox_id for r in recs)
    await svc.events.add(who.team, parent.sandbox_id, "forked", f"{checkpoint_id} -> {forks}")
    return recs


async def _record_forks(
    svc: SandboxService,
    who: Principal,
    parent: SandboxRecord,
    sandboxes: list[SandboxStatus],
    req: ForkRequest,
    checkpoint_id: str,
    room: Room,
) -> list[SandboxRecord]:
    now = time.time()
    recs = [
        SandboxRecord(
            sandbox_id=sbx.sandbox_id,
            team=who.team,
            template=parent.template,
            runtime=parent.runtime,
            cpu=parent.cpu,
            memory_mb=parent.memory_mb,
            disk_mb=parent.disk_mb,
            state="running",
            created_at=now,
            ends_at=now + req.timeout,
            metadata=dict(req.metadata),
            node=sbx.node,
            node_labels=dict(parent.node_labels),
        )
        for sbx in sandboxes
    ]
    try:
        await afailpoint("api.fork.before_records", checkpoint_id)
        await room.recorded(lambda give_up: svc.store.add_sandboxes(recs, give_up))
    except BaseException:
        for sbx in sandboxes:
            with contextlib.suppress(errors.SandlotError):
                await svc.node.kill(sbx.sandbox_id)
        raise
    return recs
