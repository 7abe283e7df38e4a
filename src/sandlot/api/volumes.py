"""Volumes as the API sees them: the node's volumes, owned by teams and named per team."""

from __future__ import annotations

from sandlot.models import VolumeMountRequest
from sandlot.node.client import NodeClient
from sandlot.node.protocol import VolumeMount

__all__ = ["volume_mounts"]


async def volume_mounts(node: NodeClient, team: str, reqs: list[VolumeMountRequest]) -> list[VolumeMount]:
    """The team's volumes, by name, as node mounts (VolumeNotFoundError names a missing one)."""
    return [VolumeMount((await node.find_volume(team, r.name)).volume_id, r.path, r.read_only) for r in reqs]
