"""Teams: their limits and what they use (api/teams.py). An admin sees and sets every team's; a key, its own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from sandlot import errors
from sandlot.api.auth import require_admin
from sandlot.api.deps import Svc, Who
from sandlot.models import ErrorBody, TeamInfo, TeamList, TeamQuotaUpdate

__all__ = ["router"]

router = APIRouter(
    prefix="/teams", tags=["teams"], responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422)}
)
TeamName = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


@router.get("", response_model=TeamList)
async def list_teams(who: Who, svc: Svc) -> TeamList:
    """Every team the server knows (of a key, a limit or a sandbox), with its limits and usage (admin)."""
    require_admin(who, "list teams")
    return TeamList(teams=[await svc.teams.info(t) for t in await svc.store.team_names()])


@router.get("/{team}", response_model=TeamInfo)
async def get_team(team: TeamName, who: Who, svc: Svc) -> TeamInfo:
    """A team's limits and usage: an admin's for any team, a key's for its own."""
    if not who.admin and team != who.team:
        raise errors.PermissionDeniedError(f"a key of team {who.team!r} may see only its own team")
    return await svc.teams.info(team)


@router.patch("/{team}/quota", response_model=TeamInfo)
async def set_quota(team: TeamName, body: TeamQuotaUpdate, who: Who, svc: Svc) -> TeamInfo:
    """Change a team's limits (admin): the fields given are set, `null` returns one to the server's default.

    What a team already holds keeps running when a limit drops below it; new sandboxes, forks,
    checkpoints and volumes past it are refused with 429.
    """
    require_admin(who, "set a team's quota")
    await svc.teams.set_quota(team, {k: getattr(body, k) for k in body.model_fields_set})
    return await svc.teams.info(team)
