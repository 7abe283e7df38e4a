"""Volumes in the SDK: `AsyncVolumes` (the source; `Volumes` in sandlot.sdk.sync is its blocking twin).

Volumes.create("cache")
sbx = Sandbox.create(volumes=[VolumeMount(name="cache", path="/cache")])
"""

from __future__ import annotations

import builtins

from sandlot.models import VolumeInfo, VolumeList
from sandlot.models import VolumeMountRequest as VolumeMount
from sandlot.sdk._transport import Transport

__all__ = ["AsyncVolumes", "VolumeInfo", "VolumeMount"]


class AsyncVolumes:
    """Named volumes of the caller's team: filesystems of a fixed size that outlive sandboxes."""

    @staticmethod
    async def create(
        name: str, *, size_mb: int = 1024, api_url: str | None = None, api_key: str | None = None
    ) -> VolumeInfo:
        """Create a volume of `size_mb` MiB (writes past it fail with ENOSPC in the sandbox).

        Raises:
            ConflictError: the team already has a volume of that name.
            InvalidArgumentError: a bad name or size.
            LimitReachedError: the team's disk limit has no room for it.
        """
        transport = Transport(api_url, api_key, None)
        try:
            body = {"name": name, "size_mb": size_mb}
            return VolumeInfo.model_validate(await transport.json("POST", "/volumes", json=body))
        finally:
            await transport.close()

    @staticmethod
    async def list(*, api_url: str | None = None, api_key: str | None = None) -> builtins.list[VolumeInfo]:
        transport = Transport(api_url, api_key, None)
        try:
            return VolumeList.model_validate(await transport.json("GET", "/volumes")).volumes
        finally:
            await transport.close()

    @staticmethod
    async def delete(name: str, *, api_url: str | None = None, api_key: str | None = None) -> None:
        """Delete a volume and its files.

        Raises:
            VolumeNotFoundError: no such volume.
            ConflictError: a sandbox still mounts it.
        """
        transport = Transport(api_url, api_key, None)
        try:
            await transport.request("DELETE", f"/volumes/{name}")
        finally:
            await transport.close()
