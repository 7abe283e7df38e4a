"""Warm pools (admin only): per template, sandboxes started ahead so a create returns at once.

A pool's size is kept in the store, so a restarted server fills its pools again
(the idle sandboxes themselves do not outlive the server: a restart starts new ones).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from sandlot.api.auth import require_admin
from sandlot.api.deps import Svc, Who
from sandlot.models import ErrorBody, PoolInfo, PoolList, PoolSize

__all__ = ["router"]

router = APIRouter(
    prefix="/pools", tags=["pools"], responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422)}
)

Template = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


@router.get("", response_model=PoolList)
async def list_pools(who: Who, svc: Svc) -> PoolList:
    """Every pool: its size and how many started sandboxes wait in it now."""
    require_admin(who)
    return PoolList(pools=await svc.node.list_pools())


@router.put("/{template}", response_model=PoolInfo)
async def set_pool(template: Template, body: PoolSize, who: Who, svc: Svc) -> PoolInfo:
    """Keep `size` started sandboxes of this template (default limits) ready for creates."""
    require_admin(who)
    info = await svc.node.set_pool(template, body.runtime, body.size)  # checks the template and runtime
    await svc.store.set_pool(info.template, info.runtime, info.size)  # kept across restarts
    return info
