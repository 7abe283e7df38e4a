"""Checkpoints: take and list (per sandbox), restore, fork, get, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from sandlot.api import checkpoints as ck
from sandlot.api.deps import SandboxId, Svc, Who
from sandlot.api.service import info
from sandlot.models import (
    CheckpointCreate,
    CheckpointInfo,
    CheckpointList,
    ErrorBody,
    ForkRequest,
    RestoreRequest,
    SandboxInfo,
    SandboxList,
)

__all__ = ["router"]

router = APIRouter(
    tags=["checkpoints"], responses={s: {"model": ErrorBody} for s in (400, 401, 404, 409, 422, 429, 507)}
)
CheckpointId = Annotated[str, Path(min_length=1, max_length=64, description="the checkpoint's id (ck-...)")]


@router.post("/sandboxes/{sandbox_id}/checkpoints", status_code=201, response_model=CheckpointInfo)
async def create_checkpoint(sandbox_id: SandboxId, body: CheckpointCreate, who: Who, svc: Svc) -> CheckpointInfo:
    """Checkpoint the sandbox's filesystem (it is frozen for the copy, which costs what it wrote)."""
    return await ck.checkpoint(svc, who, sandbox_id, body.name, body.memory)


@router.get("/sandboxes/{sandbox_id}/checkpoints", response_model=CheckpointList)
async def list_checkpoints(sandbox_id: SandboxId, who: Who, svc: Svc) -> CheckpointList:
    """The sandbox's checkpoints, oldest first."""
    return CheckpointList(checkpoints=await ck.list_checkpoints(svc, who, sandbox_id))


@router.post("/sandboxes/{sandbox_id}/restore", response_model=SandboxInfo)
async def restore(sandbox_id: SandboxId, body: RestoreRequest, who: Who, svc: Svc) -> SandboxInfo:
    """Roll the sandbox's filesystem back to one of its checkpoints; its processes start afresh."""
    return info(await ck.restore(svc, who, sandbox_id, body.checkpoint_id))


@router.get("/checkpoints/{checkpoint_id}", response_model=CheckpointInfo)
async def get_checkpoint(checkpoint_id: CheckpointId, who: Who, svc: Svc) -> CheckpointInfo:
    return await ck.get(svc, who, checkpoint_id)


@router.delete("/checkpoints/{checkpoint_id}", status_code=204, response_class=Response)
async def delete_checkpoint(checkpoint_id: CheckpointId, who: Who, svc: Svc) -> Response:
    await ck.delete(svc, who, checkpoint_id)
    return Response(status_code=204)


@router.post("/checkpoints/{checkpoint_id}/fork", status_code=201, response_model=SandboxList)
async def fork(checkpoint_id: CheckpointId, body: ForkRequest, who: Who, svc: Svc) -> SandboxList:
    """Start `count` new sandboxes, each on its own copy of the checkpoint's filesystem."""
    return SandboxList(sandboxes=[info(r) for r in await ck.fork(svc, who, checkpoint_id, body)])
