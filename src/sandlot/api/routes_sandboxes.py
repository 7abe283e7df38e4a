"""Sandboxes: create, get, list, kill, set timeout, metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from sandlot import errors
from sandlot.api.deps import SandboxId, Svc, Who
from sandlot.api.routes_ports import network_info
from sandlot.api.service import info
from sandlot.models import (
    METRICS_INTERVAL_S,
    ErrorBody,
    PauseRequest,
    SandboxCreate,
    SandboxInfo,
    SandboxList,
    SandboxMetrics,
    SandboxState,
    TimeoutUpdate,
)

__all__ = ["router"]

_ERRORS: dict[int | str, dict[str, object]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 422, 429, 503, 504, 507)
}
router = APIRouter(prefix="/sandboxes", tags=["sandboxes"], responses=_ERRORS)


@router.post("", status_code=201, response_model=SandboxInfo)
async def create_sandbox(body: SandboxCreate, who: Who, svc: Svc, request: Request) -> SandboxInfo:
    """Start a sandbox from a template (image) with limits, env, network and metadata."""
    rec = await svc.create(who, body)
    out = info(rec)
    status = await svc.node.status(rec.sandbox_id)
    if status is not None:
        out.network = await network_info(request.app, status)
    return out


def _metadata_filter(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or "\0" in item:
            raise errors.InvalidArgumentError(f"metadata filter must be KEY=VALUE, got {item!r}", field="metadata")
        out[key] = value
    return out


@router.get("", response_model=SandboxList)
async def list_sandboxes(
    who: Who,
    svc: Svc,
    state: Annotated[list[SandboxState], Query(description="states to list (default: the live ones)")] = [],  # noqa: B006
    metadata: Annotated[
        list[Annotated[str, Query(max_length=4500)]], Query(description="KEY=VALUE; repeat to require several")
    ] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=1024, description="next_cursor of the previous page")] = None,
) -> SandboxList:
    """The team's sandboxes, oldest first, a page at a time."""
    recs, nxt = await svc.list(
        who, states=[s.value for s in state], metadata=_metadata_filter(metadata), limit=limit, cursor=cursor
    )
    return SandboxList(sandboxes=[info(r) for r in recs], next_cursor=nxt)


@router.get("/{sandbox_id}", response_model=SandboxInfo)
async def get_sandbox(sandbox_id: SandboxId, who: Who, svc: Svc, request: Request) -> SandboxInfo:
    rec = await svc.get(who, sandbox_id)
    out = info(rec)
    if rec.state in ("running", "paused"):
        status = await svc.node.status(sandbox_id)
        if status is not None:
            out.network = await network_info(request.app, status)
    return out


@router.delete("/{sandbox_id}", status_code=204, response_class=Response)
async def kill_sandbox(sandbox_id: SandboxId, who: Who, svc: Svc) -> Response:
    """Kill the sandbox and free everything it holds (idempotent)."""
    await svc.kill(who, sandbox_id)
    return Response(status_code=204)


@router.post("/{sandbox_id}/pause", response_model=SandboxInfo)
async def pause_sandbox(sandbox_id: SandboxId, who: Who, svc: Svc, body: PauseRequest | None = None) -> SandboxInfo:
    """Freeze every process of the sandbox (no CPU used); with `memory`, save them to disk and release them."""
    return info(await svc.pause(who, sandbox_id, memory=body.memory if body else False))


@router.post("/{sandbox_id}/resume", response_model=SandboxInfo)
async def resume_sandbox(sandbox_id: SandboxId, who: Who, svc: Svc) -> SandboxInfo:
    """Continue a paused sandbox exactly where it stopped."""
    return info(await svc.resume(who, sandbox_id))


@router.post("/{sandbox_id}/timeout", response_model=SandboxInfo)
async def set_timeout(sandbox_id: SandboxId, body: TimeoutUpdate, who: Who, svc: Svc) -> SandboxInfo:
    """The sandbox is killed `timeout` seconds from now (replaces the previous deadline)."""
    return info(await svc.set_timeout(who, sandbox_id, body.timeout))


@router.get("/{sandbox_id}/metrics", response_model=SandboxMetrics)
async def get_metrics(
    sandbox_id: SandboxId,
    who: Who,
    svc: Svc,
    start: Annotated[
        float | None, Query(ge=0, allow_inf_nan=False, description="Unix seconds; default: its first sample")
    ] = None,
    end: Annotated[float | None, Query(ge=0, allow_inf_nan=False, description="Unix seconds; default: now")] = None,
) -> SandboxMetrics:
    """Its CPU, memory, disk, network and process use, sampled every 5 s on its node (oldest first).

    Kept while it lives (its last hour) and for an hour after it ended.
    """
    samples = await svc.metrics(who, sandbox_id, start, end)
    return SandboxMetrics(sandbox_id=sandbox_id, interval_s=METRICS_INTERVAL_S, metrics=samples)
