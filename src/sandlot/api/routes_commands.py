"""Commands and processes: run (streamed), background, list, connect, stdin, signal, resize."""

from __future__ import annotations

import signal as _signal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.agent.handle import SandboxAgent
from sandlot.api.deps import Pid, Running
from sandlot.api.streams import event_stream, process_events
from sandlot.models import (
    NDJSON,
    SSE,
    CommandRequest,
    ErrorBody,
    ProcessInfo,
    ProcessList,
    ProcessStarted,
    ResizeRequest,
    SignalRequest,
)

__all__ = ["router"]

router = APIRouter(
    prefix="/sandboxes/{sandbox_id}",
    tags=["commands"],
    responses={s: {"model": ErrorBody} for s in (400, 401, 404, 409, 422, 429)},
)

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "NDJSON (or SSE) events: start, stdout, stderr, exit (or error); "
        "with background=true, a JSON {pid}",
        "content": {
            NDJSON: {"schema": {"type": "string"}},
            SSE: {"schema": {"type": "string"}},
            "application/json": {"schema": ProcessStarted.model_json_schema()},
        },
    }
}


@router.post("/commands", response_model=None, responses=_STREAM_DOC)
async def run_command(body: CommandRequest, sbx: Running, request: Request) -> StreamingResponse | ProcessStarted:
    """Run a command. Output streams as it is produced; a non-zero exit is data, not an error.

    With `background`, answer the pid at once: the process keeps running, its stdin open,
    and its output buffered for `GET .../processes/{pid}/output`.
    """
    pty = p.PtySize(rows=body.pty.rows, cols=body.pty.cols) if body.pty else None
    proc = await sbx.start(
        body.cmd,
        env=body.env,
        cwd=body.cwd,
        user=body.user,
        stdin=body.background or body.stdin is not None,
        timeout=body.timeout,
        pty=pty,
        tag=body.tag,
    )
    if body.background:
        await proc.detach()
        assert proc.pid is not None
        return ProcessStarted(pid=proc.pid)
    if body.stdin is not None:
        await proc.send_stdin(body.stdin.encode())
        await proc.close_stdin()
    return event_stream(request, process_events(proc))


@router.get("/processes", response_model=ProcessList)
async def list_processes(sbx: Running) -> ProcessList:
    """Every process started through the API (running ones, and recent exits)."""
    return ProcessList(processes=[ProcessInfo.from_agent(pi) for pi in await sbx.agent.list_processes()])


@router.get("/processes/{pid}/output", response_model=None, responses=_STREAM_DOC)
async def connect(pid: Pid, sbx: Running, request: Request) -> StreamingResponse:
    """Follow a process: its buffered output first, then live output, then its exit."""
    await _require_process(sbx, pid)
    proc = await sbx.agent.connect(pid)
    return event_stream(request, process_events(proc))


@router.post(
    "/processes/{pid}/stdin",
    status_code=204,
    response_class=Response,
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}},
)
async def send_stdin(
    pid: Pid,
    sbx: Running,
    request: Request,
    eof: Annotated[bool, Query(description="close stdin after this data")] = False,
) -> Response:
    """Write the request body (raw bytes, streamed) to the process's stdin."""
    # Hold one chunk back so the last one can carry `eof`.
    pending: bytes | None = None
    async for chunk in request.stream():
        if not chunk:
            continue
        if pending:
            await sbx.agent.send_input(pid, pending)
        pending = chunk
    if pending or eof:
        await sbx.agent.send_input(pid, pending or b"", eof=eof)
    else:  # nothing to send: still say whether the process exists
        await _require_process(sbx, pid)
    return Response(status_code=204)


@router.post("/processes/{pid}/signal", status_code=204, response_class=Response)
async def signal(pid: Pid, body: SignalRequest, sbx: Running) -> Response:
    """Send a signal (default SIGTERM) to the process (and by default its process group)."""
    await sbx.agent.signal(pid, body.signal, body.group)
    return Response(status_code=204)


@router.delete("/processes/{pid}", status_code=204, response_class=Response)
async def kill(pid: Pid, sbx: Running) -> Response:
    """SIGKILL the process and its process group."""
    await sbx.agent.signal(pid, int(_signal.SIGKILL), True)
    return Response(status_code=204)


@router.post("/processes/{pid}/resize", status_code=204, response_class=Response)
async def resize(pid: Pid, body: ResizeRequest, sbx: Running) -> Response:
    """Resize a process's terminal (processes started with `pty`)."""
    await sbx.agent.resize(pid, body.rows, body.cols)
    return Response(status_code=204)


async def _require_process(sbx: SandboxAgent, pid: int) -> None:
    if not any(pi.pid == pid for pi in await sbx.agent.list_processes()):
        raise errors.ProcessNotFoundError(f"process {pid} not found in sandbox {sbx.id}")
