"""Warm pools (admin only): per template, sandboxes started ahead so a create returns at once.

A pool's size is kept in the store, so a restarted server fills its pools again
(the idle sandboxes themselves do not outlive the server: a restart starts new ones).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Request

from sandlot.api.auth import require_admin
from sandlot.api.deps import Who
from sandlot.models import ErrorBody, PoolInfo, PoolList, PoolSize
from sandlot.node import Node, SandboxSpec

__all__ = ["pool_spec", "router"]

router = APIRouter(
    prefix="/pools", tags=["pools"], responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422)}
)

Template = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


def pool_spec(node: Node, template: str, runtime: str | None) -> SandboxSpec:
    """The spec a default create of `template` asks for (so it is served from the pool)."""
    return SandboxSpec(image=template, runtime=runtime or node.config.default_runtime).validate()


def _list(node: Node) -> PoolList:
    pools = [
        PoolInfo(template=k.image, runtime=k.runtime, size=n, idle=node.pool.idle(k))
        for k, n in node.pool.sizes().items()
    ]
    return PoolList(pools=pools)


@router.get("", response_model=PoolList)
async def list_pools(who: Who, request: Request) -> PoolList:
    """Every pool: its size and how many started sandboxes wait in it now."""
    require_admin(who)
    return _list(request.app.state.node)


@router.put("/{template}", response_model=PoolInfo)
async def set_pool(template: Template, body: PoolSize, who: Who, request: Request) -> PoolInfo:
    """Keep `size` started sandboxes of this template (default limits) ready for creates."""
    require_admin(who)
    node: Node = request.app.state.node
    spec = pool_spec(node, template, body.runtime)
    node.runtime(spec.runtime)  # an unknown or unavailable runtime is the caller's error
    await asyncio.to_thread(node.images.ensure, template)  # an unknown template too
    await request.app.state.store.set_pool(template, spec.runtime, body.size)  # kept across restarts
    key = node.pool.set_size(spec, body.size)
    return PoolInfo(template=key.image, runtime=key.runtime, size=body.size, idle=node.pool.idle(key))
