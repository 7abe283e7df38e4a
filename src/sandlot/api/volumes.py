"""Volumes as the API sees them: the node's volumes, owned by teams and named per team."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sandlot.api.auth import Principal
from sandlot.models import VolumeInfo, VolumeMountRequest
from sandlot.node import Node
from sandlot.node.volumes import Volume, VolumeMount

if TYPE_CHECKING:
    from sandlot.api.service import SandboxService

__all__ = ["create", "delete", "list_volumes", "volume_info", "volume_mounts"]


def volume_info(v: Volume) -> VolumeInfo:
    return VolumeInfo(name=v.name, volume_id=v.id, created_at=v.created_at, size_mb=v.size_mb)


def volume_mounts(node: Node, team: str, reqs: list[VolumeMountRequest]) -> list[VolumeMount]:
    """The team's volumes, by name, as node mounts (VolumeNotFoundError names a missing one)."""
    return [VolumeMount(node.volumes.find(team, r.name).id, r.path, r.read_only) for r in reqs]


async def create(svc: SandboxService, who: Principal, name: str, size_mb: int) -> Volume:
    async with svc.teams.admit(who.team, disk_mb=size_mb, what=f"create volume {name!r}"):
        return await asyncio.to_thread(svc.node.volumes.create, name, who.team, size_mb)


async def list_volumes(node: Node, who: Principal) -> list[Volume]:
    return await asyncio.to_thread(node.volumes.list, who.team)


async def delete(node: Node, who: Principal, name: str) -> None:
    vol = node.volumes.find(who.team, name)
    await asyncio.to_thread(node.delete_volume, vol.id)
