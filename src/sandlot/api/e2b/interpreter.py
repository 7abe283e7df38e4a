"""The E2B code interpreter's HTTP API (port 49999): `/execute` and `/contexts`.

`/execute` streams JSON lines: `stdout`/`stderr` (`text`, `timestamp`),
`result` (`text`, `png`, ..., `is_main_result`), `error` (`name`, `value`,
`traceback`), `number_of_executions`; the SDK ignores our closing `end`.
Errors are plain HTTP statuses, which the SDK maps by status (404: not found).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from sandlot import errors
from sandlot.api.e2b.envd_common import caller, http_status
from sandlot.api.e2b.routing import INTERNAL_PREFIX, JUPYTER_PORT
from sandlot.api.routes_code import interpreter

__all__ = ["router"]

router = APIRouter(prefix=f"{INTERNAL_PREFIX}/{{sandbox_id}}/{JUPYTER_PORT}", include_in_schema=False)


class ExecuteBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: str = Field(max_length=16 << 20)
    context_id: str | None = Field(default=None, max_length=128)
    language: str | None = Field(default=None, max_length=32)
    env_vars: dict[str, str] | None = None


class ContextBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    language: str | None = Field(default=None, max_length=32)
    cwd: str | None = Field(default=None, max_length=4096)


def _error(exc: errors.SandlotError) -> Response:
    return Response(str(exc), status_code=http_status(exc), media_type="text/plain")


@router.post("/execute")
async def execute(sandbox_id: str, body: ExecuteBody, request: Request) -> Response:
    try:
        it = await interpreter(request, (await caller(request, sandbox_id)).sandbox)
        run = it.execute(body.code, language=body.language, context=body.context_id, env=body.env_vars)
        events = aiter(run)
        await anext(events)  # `accepted`: the context exists
    except StopAsyncIteration:  # the client left before anything happened
        return Response(status_code=499)
    except errors.SandlotError as exc:
        return _error(exc)

    def line(ev: dict[str, Any]) -> bytes:
        if ev.get("type") in ("stdout", "stderr"):
            ev = {**ev, "timestamp": time.time_ns() // 1000}
        return json.dumps(ev).encode() + b"\n"

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for ev in events:
                yield line(ev)
        except errors.SandlotError as exc:  # the sandbox died mid-run
            yield line({"type": "error", "name": type(exc).__name__, "value": str(exc), "traceback": ""})

    return StreamingResponse(stream(), media_type="application/x-ndjson")


@router.post("/contexts")
async def create_context(sandbox_id: str, body: ContextBody, request: Request) -> Response:
    try:
        it = await interpreter(request, (await caller(request, sandbox_id)).sandbox)
        return JSONResponse(await it.create_context(body.language or "python", body.cwd))
    except errors.SandlotError as exc:
        return _error(exc)


@router.get("/contexts")
async def list_contexts(sandbox_id: str, request: Request) -> Response:
    try:
        it = await interpreter(request, (await caller(request, sandbox_id)).sandbox)
        return JSONResponse(await it.contexts())
    except errors.SandlotError as exc:
        return _error(exc)


@router.delete("/contexts/{context_id}")
async def remove_context(sandbox_id: str, context_id: str, request: Request) -> Response:
    try:
        it = await interpreter(request, (await caller(request, sandbox_id)).sandbox)
        await it.remove_context(context_id)
    except errors.SandlotError as exc:
        return _error(exc)
    return Response(status_code=204)


@router.post("/contexts/{context_id}/restart")
async def restart_context(sandbox_id: str, context_id: str, request: Request) -> Response:
    try:
        it = await interpreter(request, (await caller(request, sandbox_id)).sandbox)
        await it.restart_context(context_id)
    except errors.SandlotError as exc:
        return _error(exc)
    return Response(status_code=204)
