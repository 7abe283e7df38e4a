"""envd's `process.Process` Connect service: commands and terminals, onto the agent.

Start and Connect stream `{"event": {"start"|"data"|"end": ...}}` messages; the
others are unary. A client that drops a stream detaches: the process keeps
running (E2B's background commands); the command timeout the SDK sends as
`Connect-Timeout-Ms` becomes the agent's kill timeout.
"""

from __future__ import annotations

import contextlib
import signal as _signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.agent.client import ProcessStream
from sandlot.api.e2b import connect as rpc
from sandlot.api.e2b.envd_common import Caller, b64decode, b64encode, caller
from sandlot.api.e2b.routing import ENVD_PORT, INTERNAL_PREFIX
from sandlot.api.streams import later

__all__ = ["router"]

router = APIRouter(prefix=f"{INTERNAL_PREFIX}/{{sandbox_id}}/{ENVD_PORT}/process.Process", include_in_schema=False)

_PING: dict[str, Any] = {"event": {"keepalive": {}}}
_SIGNALS = {"SIGNAL_SIGKILL": int(_signal.SIGKILL), "SIGNAL_SIGTERM": int(_signal.SIGTERM), 9: 9, 15: 15}


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key) or {}
    if not isinstance(value, dict):
        raise errors.InvalidArgumentError(f"{key} must be an object", field=key)
    return value


async def _pid(c: Caller, msg: dict[str, Any]) -> int:
    """The pid a ProcessSelector (`{"pid": N}` or `{"tag": T}`) names."""
    sel = _obj(msg, "process")
    if isinstance(sel.get("pid"), int):
        return int(sel["pid"])
    if isinstance(sel.get("tag"), str):
        for info in await c.sandbox.agent.list_processes():
            if info.tag == sel["tag"] and info.running:
                return info.pid
        raise errors.ProcessNotFoundError(f"no running process tagged {sel['tag']!r}")
    raise errors.InvalidArgumentError("process must name a pid or a tag", field="process")


def _pty_size(msg: dict[str, Any]) -> p.PtySize | None:
    pty = msg.get("pty")
    if not isinstance(pty, dict):
        return None
    size = pty.get("size") or {}
    return p.PtySize(rows=int(size.get("rows") or 24), cols=int(size.get("cols") or 80))


def _end(ex: p.ProcessExit) -> dict[str, Any]:
    if ex.exit_code is not None:
        end: dict[str, Any] = {"exitCode": ex.exit_code, "exited": True, "status": f"exit status {ex.exit_code}"}
    else:
        name = _signal.Signals(ex.signal).name.lower()[3:] if ex.signal else "killed"
        end = {"exitCode": -1, "exited": False, "status": f"signal: {name}"}
    if ex.timed_out:
        end["error"] = "the command timed out and was killed"
    elif ex.oom_killed:
        end["error"] = "the command ran out of memory and was killed"
    return {"event": {"end": end}}


async def _events(proc: ProcessStream, pty: bool) -> AsyncIterator[dict[str, Any]]:
    assert proc.pid is not None
    yield {"event": {"start": {"pid": proc.pid}}}
    finished = False
    try:
        async for fd, data in proc.output():
            kind = "pty" if pty else ("stdout" if fd == 1 else "stderr")
            yield {"event": {"data": {kind: b64encode(data)}}}
        finished = True
        assert proc.exit is not None
        yield _end(proc.exit)
    finally:
        if not finished:  # the client went away: detach, the process keeps running
            later(proc.detach())


@router.post("/Start")
async def start(sandbox_id: str, request: Request) -> Response:
    async def events(c: Caller, msg: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        conf = _obj(msg, "process")
        cmd, args = conf.get("cmd"), conf.get("args") or []
        if not isinstance(cmd, str) or not cmd or not all(isinstance(a, str) for a in args):
            raise errors.InvalidArgumentError("process.cmd must be a string and args a list of strings", field="cmd")
        envs = conf.get("envs") or {}
        if not isinstance(envs, dict):
            raise errors.InvalidArgumentError("process.envs must be an object", field="envs")
        cwd = c.path(conf["cwd"], "cwd") if conf.get("cwd") else c.home
        pty = _pty_size(msg)
        deadline = rpc.timeout_ms(request)
        env = {"HOME": c.home, "USER": c.user, **{str(k): str(v) for k, v in envs.items()}}
        if pty is not None:
            env.setdefault("TERM", "xterm-256color")
        proc = await c.sandbox.start(
            [cmd, *args],
            env=env,
            cwd=cwd,
            user=c.user,
            stdin=True,
            timeout=deadline / 1000 if deadline else None,
            pty=pty,
            tag=msg.get("tag") if isinstance(msg.get("tag"), str) else None,
        )
        if not msg.get("stdin") and pty is None:
            await proc.close_stdin()
        async for ev in rpc.with_keepalive(_events(proc, pty is not None), rpc.keepalive_interval(request), _PING):
            yield ev

    return await rpc.stream_for(request, lambda: caller(request, sandbox_id), events)


@router.post("/Connect")
async def connect(sandbox_id: str, request: Request) -> Response:
    async def events(c: Caller, msg: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        pid = await _pid(c, msg)
        infos = {i.pid: i for i in await c.sandbox.agent.list_processes()}
        if pid not in infos:
            raise errors.ProcessNotFoundError(f"process {pid} not found in sandbox {sandbox_id}")
        proc = await c.sandbox.agent.connect(pid)
        async for ev in rpc.with_keepalive(_events(proc, infos[pid].pty), rpc.keepalive_interval(request), _PING):
            yield ev

    return await rpc.stream_for(request, lambda: caller(request, sandbox_id), events)


Handler = Callable[[Caller, dict[str, Any]], Awaitable[dict[str, Any]]]


def _unary(name: str) -> Callable[[Handler], Handler]:
    """Register `fn(caller, message) -> answer` as the unary RPC `name` (the sandbox is looked up inside,
    so a sandbox that does not run is a Connect error like any other)."""

    def register(fn: Handler) -> Handler:
        async def endpoint(sandbox_id: str, request: Request) -> Response:
            return await rpc.unary_for(request, lambda: caller(request, sandbox_id), fn)

        router.add_api_route(f"/{name}", endpoint, methods=["POST"], name=f"e2b_process_{name}")
        return fn

    return register


@_unary("List")
async def list_(c: Caller, msg: dict[str, Any]) -> dict[str, Any]:
    out = []
    for info in await c.sandbox.agent.list_processes():
        if not info.running:
            continue
        entry: dict[str, Any] = {
            "pid": info.pid,
            "config": {"cmd": info.argv[0] if info.argv else "", "args": info.argv[1:], "cwd": info.cwd},
        }
        if info.tag:
            entry["tag"] = info.tag
        out.append(entry)
    return {"processes": out}


@_unary("SendInput")
async def send_input(c: Caller, msg: dict[str, Any]) -> dict[str, Any]:
    pid = await _pid(c, msg)
    inp = _obj(msg, "input")
    data = b64decode(inp.get("stdin", inp.get("pty", "")), "input")
    await c.sandbox.agent.send_input(pid, data)
    return {}


@_unary("CloseStdin")
async def close_stdin(c: Caller, msg: dict[str, Any]) -> dict[str, Any]:
    await c.sandbox.agent.send_input(await _pid(c, msg), b"", eof=True)
    return {}


@_unary("SendSignal")
async def send_signal(c: Caller, msg: dict[str, Any]) -> dict[str, Any]:
    pid = await _pid(c, msg)
    sig = _SIGNALS.get(msg.get("signal", "SIGNAL_SIGTERM"))
    if sig is None:
        got = msg.get("signal")
        raise errors.InvalidArgumentError(f"signal must be SIGNAL_SIGKILL or SIGNAL_SIGTERM, got {got!r}")
    running = {i.pid for i in await c.sandbox.agent.list_processes() if i.running}
    if pid not in running:
        raise errors.ProcessNotFoundError(f"process {pid} is not running in sandbox {c.sandbox.id}")
    with contextlib.suppress(errors.ProcessNotFoundError):
        await c.sandbox.agent.signal(pid, sig, True)
    return {}


@_unary("Update")
async def update(c: Caller, msg: dict[str, Any]) -> dict[str, Any]:
    pid = await _pid(c, msg)
    size = _pty_size(msg)
    if size is not None:
        await c.sandbox.agent.resize(pid, size.rows, size.cols)
    return {}
