"""Terminals over WebSocket: `WS /sandboxes/{id}/pty`.

Query: `pid` attaches to a running process (a PTY started with
`POST .../commands {"pty": ..., "background": true}`, or an earlier session);
otherwise a new terminal runs `cmd` (default: an interactive bash, or sh) with
`rows`, `cols`, `cwd`, `user`.

Server -> client: a text message `{"type": "start", "pid": N}`, then output as
binary messages, and finally `{"type": "exit", ...}` (or `{"type": "error",
"code", "message"}`) before the server closes the socket.
Client -> server: binary messages are input; text messages are JSON
`{"type": "input", "data": "..."}` or `{"type": "resize", "rows": R, "cols": C}`.

The key goes in the headers, as `?api_key=`, or not at all: a browser trades it for a
single-use `?ticket=` (`POST /ws-tickets`), so that it never appears in a URL.

Closing the socket detaches: the terminal's process keeps running until it is
killed (`DELETE .../processes/{pid}`) or its sandbox ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.agent.client import ProcessStream
from sandlot.agent.handle import SandboxAgent
from sandlot.api.auth import ws_principal
from sandlot.api.deps import check_path
from sandlot.api.service import SandboxService
from sandlot.api.streams import later
from sandlot.models import ErrorEvent, ExitEvent, PtyClientMessage, StartEvent

__all__ = ["router"]

router = APIRouter(tags=["pty"])

DEFAULT_SHELL = ["/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -i; else exec sh -i; fi"]


def _int(ws: WebSocket, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = ws.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidArgumentError(f"{name} must be an integer, got {raw!r}", field=name) from None
    if not lo <= value <= hi:
        raise errors.InvalidArgumentError(f"{name} must be between {lo} and {hi}, got {value}", field=name)
    return value


async def _open(ws: WebSocket, sandbox_id: str) -> tuple[SandboxAgent, ProcessStream]:
    who = await ws_principal(ws)
    svc: SandboxService = ws.app.state.service
    sbx = await svc.sandbox(who, sandbox_id)
    pid = _int(ws, "pid", None, 1, (1 << 31) - 1)
    if pid is not None:
        if not any(pi.pid == pid for pi in await sbx.agent.list_processes()):
            raise errors.ProcessNotFoundError(f"process {pid} not found in sandbox {sandbox_id}")
        return sbx, await sbx.agent.connect(pid)
    rows = _int(ws, "rows", 24, 1, 1000) or 24
    cols = _int(ws, "cols", 80, 1, 1000) or 80
    q = ws.query_params
    cmd: str | list[str] = check_path(q["cmd"], "cmd") if q.get("cmd") else DEFAULT_SHELL
    cwd = check_path(q["cwd"], "cwd") if q.get("cwd") else None
    user = check_path(q["user"], "user") if q.get("user") else None
    proc = await sbx.start(
        cmd, env={"TERM": "xterm-256color"}, cwd=cwd, user=user, pty=p.PtySize(rows=rows, cols=cols), tag="pty"
    )
    return sbx, proc


@router.websocket("/sandboxes/{sandbox_id}/pty")
async def pty(ws: WebSocket, sandbox_id: str) -> None:
    await ws.accept()
    try:
        sbx, proc = await _open(ws, sandbox_id)
    except errors.SandlotError as exc:
        await ws.send_text(ErrorEvent(code=exc.code, message=exc.message).model_dump_json())
        await ws.close(code=1008 if isinstance(exc, errors.PermissionDeniedError) else 1011)
        return
    assert proc.pid is not None
    await ws.send_text(StartEvent(pid=proc.pid).model_dump_json())
    output = asyncio.create_task(_output(ws, proc, proc.pid))
    reader = asyncio.create_task(_input(ws, sbx, proc.pid))
    # The output side ends with the process; the input side when the client goes away.
    await asyncio.wait({output, reader}, return_when=asyncio.FIRST_COMPLETED)
    reader.cancel()
    if not output.done():
        output.cancel()
        later(proc.detach())
    with contextlib.suppress(Exception):
        await ws.close()


async def _output(ws: WebSocket, proc: ProcessStream, pid: int) -> None:
    """Terminal -> client, then the exit (or the error that cut the stream)."""
    try:
        async for _fd, data in proc.output():
            await ws.send_bytes(data)
        ex = proc.exit
        assert ex is not None
        exit_event = ExitEvent.from_agent(ex)
        await ws.send_text(exit_event.model_dump_json())
    except errors.SandlotError as exc:
        with contextlib.suppress(Exception):
            await ws.send_text(ErrorEvent(code=exc.code, message=exc.message).model_dump_json())
    except (WebSocketDisconnect, RuntimeError, OSError):
        later(proc.detach())  # the client went away mid-send


async def _input(ws: WebSocket, sbx: SandboxAgent, pid: int) -> None:
    """Client -> terminal, until the client disconnects."""
    while True:
        try:
            msg = await ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if msg["type"] == "websocket.disconnect":
            return
        try:
            if msg.get("bytes"):
                await sbx.agent.send_input(pid, msg["bytes"])
            elif msg.get("text"):
                await _control(ws, sbx, pid, msg["text"])
        except errors.SandlotError as exc:  # e.g. input after the process exited: say so, keep going
            with contextlib.suppress(Exception):
                await ws.send_text(ErrorEvent(code=exc.code, message=exc.message).model_dump_json())


async def _control(ws: WebSocket, sbx: SandboxAgent, pid: int, text: str) -> None:
    try:
        msg = PtyClientMessage.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        await ws.send_text(ErrorEvent(code="invalid_argument", message=f"bad message: {exc}"[:500]).model_dump_json())
        return
    if msg.type == "input" and msg.data:
        await sbx.agent.send_input(pid, msg.data.encode())
    elif msg.type == "resize" and msg.rows and msg.cols:
        await sbx.agent.resize(pid, msg.rows, msg.cols)
