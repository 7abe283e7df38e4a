"""Teams in the SDK: limits and usage (`AsyncTeams`, the source; `Teams` in sandlot.sdk.sync is its blocking twin).

Teams.get("research").usage.sandboxes
Teams.set_quota("research", max_sandboxes=20, max_disk_mb=100_000)    # an admin key
Teams.set_quota("research", max_sandboxes=None)                        # back to the server's default
"""

from __future__ import annotations

import builtins
from typing import Any

from sandlot.models import TeamInfo, TeamList, TeamQuotaUpdate
from sandlot.sdk._transport import Transport

__all__ = ["AsyncTeams", "TeamInfo"]

#: a sentinel: "leave this limit as it is" (None sets it back to the server's default)
_KEEP: Any = object()


class AsyncTeams:
    """Teams' limits (max sandboxes, disk, lifetime, checkpoint retention) and what they use."""

    @staticmethod
    async def get(team: str, *, api_url: str | None = None, api_key: str | None = None) -> TeamInfo:
        """A team's limits and usage (an admin key, or a key of that team).

        Raises:
            PermissionDeniedError: another team's, with a non-admin key.
        """
        transport = Transport(api_url, api_key, None)
        try:
            return TeamInfo.model_validate(await transport.json("GET", f"/teams/{team}"))
        finally:
            await transport.close()

    @staticmethod
    async def list(*, api_url: str | None = None, api_key: str | None = None) -> builtins.list[TeamInfo]:
        """Every team the server knows (an admin key)."""
        transport = Transport(api_url, api_key, None)
        try:
            return TeamList.model_validate(await transport.json("GET", "/teams")).teams
        finally:
            await transport.close()

    @staticmethod
    async def set_quota(
        team: str,
        *,
        max_sandboxes: int | None = _KEEP,
        max_disk_mb: int | None = _KEEP,
        max_lifetime_s: int | None = _KEEP,
        checkpoint_retention_s: int | None = _KEEP,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> TeamInfo:
        """Change a team's limits (an admin key). Limits not passed stay; None returns one to the default.

        Args:
            max_sandboxes: live sandboxes at once.
            max_disk_mb: sandboxes' disk limits + volumes' sizes + checkpoints, in MiB.
            max_lifetime_s: seconds from creation a timeout may reach; 0: no limit.
            checkpoint_retention_s: how long a killed sandbox's checkpoints are kept; 0: until deleted.

        Raises:
            PermissionDeniedError: not an admin key.
            InvalidArgumentError: a negative or too large value.
        """
        given = {
            "max_sandboxes": max_sandboxes,
            "max_disk_mb": max_disk_mb,
            "max_lifetime_s": max_lifetime_s,
            "checkpoint_retention_s": checkpoint_retention_s,
        }
        body = TeamQuotaUpdate(**{k: v for k, v in given.items() if v is not _KEEP})
        transport = Transport(api_url, api_key, None)
        try:
            raw = await transport.json("PATCH", f"/teams/{team}/quota", json=body.model_dump(exclude_unset=True))
            return TeamInfo.model_validate(raw)
        finally:
            await transport.close()
