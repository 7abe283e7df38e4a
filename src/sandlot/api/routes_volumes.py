"""Volumes: create, list, delete (named per team; mounted through POST /sandboxes `volumes`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from sandlot.api.deps import Svc, Who
from sandlot.models import ErrorBody, VolumeCreate, VolumeInfo, VolumeList

__all__ = ["router"]

router = APIRouter(
    prefix="/volumes", tags=["volumes"], responses={s: {"model": ErrorBody} for s in (400, 401, 404, 409, 422, 429)}
)
VolumeName = Annotated[str, Path(min_length=1, max_length=64, description="the volume's name")]


@router.post("", status_code=201, response_model=VolumeInfo)
async def create_volume(body: VolumeCreate, who: Who, svc: Svc) -> VolumeInfo:
    """Create a named volume of the team, of `size_mb` (409 if the name is taken; 429 past the team's disk)."""
    async with svc.teams.admit(who.team, disk_mb=body.size_mb, what=f"create volume {body.name!r}"):
        return await svc.node.create_volume(who.team, body.name, body.size_mb)


@router.get("", response_model=VolumeList)
async def list_volumes(who: Who, svc: Svc) -> VolumeList:
    return VolumeList(volumes=await svc.node.list_volumes(who.team))


@router.delete("/{name}", status_code=204, response_class=Response)
async def delete_volume(name: VolumeName, who: Who, svc: Svc) -> Response:
    """Delete a volume and its files (409 while a sandbox mounts it)."""
    await svc.node.delete_volume(who.team, name)
    return Response(status_code=204)
