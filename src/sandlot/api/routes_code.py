"""The code interpreter: run code in a Jupyter kernel (or bash) inside a sandbox, streamed.

`POST /sandboxes/{id}/code` answers NDJSON events: `stdout`/`stderr` `{text}`,
`result` `{text, png, html, ..., is_main_result}`, `exception` `{name, value,
traceback}` (the code raised: data, not an API error), `number_of_executions`
`{execution_count}`, and `end` last; an API failure mid-run is the usual
`error` event `{code, message}`. State persists per context; the default
context is Python. The sandbox must have python3 with ipykernel (the
`code-interpreter` template).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from sandlot import errors
from sandlot.agent.handle import SandboxAgent
from sandlot.api.deps import Running
from sandlot.interpreter import Interpreter, interpreter_for
from sandlot.models import NDJSON, EnvDict, ErrorBody

__all__ = ["CodeContext", "CodeRequest", "ContextCreate", "interpreter", "router", "stream_events"]

router = APIRouter(
    prefix="/sandboxes/{sandbox_id}/code",
    tags=["code"],
    responses={s: {"model": ErrorBody} for s in (400, 401, 404, 409, 422)},
)


class CodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(max_length=16 << 20)
    language: str | None = Field(default=None, description="python (default) or bash")
    context: str | None = Field(default=None, max_length=128, description="a context id; default: the language's")
    env: EnvDict = Field(default_factory=dict)


class ContextCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    language: str = "python"
    cwd: str | None = Field(default=None, max_length=4096)


class CodeContext(BaseModel):
    id: str
    language: str
    cwd: str


async def interpreter(request: Request, sbx: SandboxAgent) -> Interpreter:
    registry: dict[str, Interpreter] | None = getattr(request.app.state, "interpreters", None)
    if registry is None:
        registry = request.app.state.interpreters = {}
    return await interpreter_for(registry, sbx)


def _line(ev: dict[str, Any]) -> bytes:
    if ev.get("type") == "error":  # the code's exception; `error` events are API errors here
        ev = {**ev, "type": "exception"}
    return json.dumps(ev).encode() + b"\n"


async def stream_events(events: AsyncIterator[dict[str, Any]]) -> Response:
    """NDJSON of the events. The first (`accepted`) is awaited before answering, so a bad
    request (no such context, no interpreter) is an HTTP error, not a broken stream."""
    it = aiter(events)
    try:
        await anext(it)
    except StopAsyncIteration:  # the client left before anything happened
        return Response(status_code=499)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for ev in it:
                yield _line(ev)
        except errors.SandlotError as exc:
            yield json.dumps({"type": "error", "code": exc.code, "message": exc.message}).encode() + b"\n"

    return StreamingResponse(body(), media_type=NDJSON, headers={"Cache-Control": "no-cache"})


@router.post("", response_model=None, responses={200: {"content": {NDJSON: {"schema": {"type": "string"}}}}})
async def run_code(body: CodeRequest, sbx: Running, request: Request) -> Response:
    """Run code; stream its output, results and error as NDJSON, ending with `{"type": "end"}`."""
    it = await interpreter(request, sbx)
    events = it.execute(body.code, language=body.language, context=body.context, env=body.env)
    return await stream_events(events)


@router.post("/contexts", response_model=CodeContext, status_code=201)
async def create_context(body: ContextCreate, sbx: Running, request: Request) -> JSONResponse:
    """A new context: its own kernel (state) and working directory."""
    it = await interpreter(request, sbx)
    return JSONResponse(await it.create_context(body.language, body.cwd), status_code=201)
