"""Streamed responses: process output and watch events as NDJSON (or SSE).

A stream's HTTP status is sent before its first event, so everything that can
fail before a process starts (bad cwd, unknown command, dead sandbox) is raised
before the response begins and becomes a 4xx. A failure after that arrives as
an `error` event, the stream's last line.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from sandlot import errors
from sandlot.agent.client import ProcessStream, WatchStream
from sandlot.models import NDJSON, SSE, ErrorEvent, ExitEvent, OutputEvent, StartEvent, WatchEventOut

__all__ = ["event_stream", "later", "prefetched", "process_events", "wants_sse", "watch_events"]

# Tasks started from `finally` blocks of cancelled streams; kept so they are not collected.
_detached: set[asyncio.Task[Any]] = set()


def later(coro: Awaitable[Any]) -> None:
    """Run `coro` in the background (cleanup that must not be cancelled with its caller)."""

    async def guarded() -> None:
        with contextlib.suppress(Exception):
            await coro

    task = asyncio.ensure_future(guarded())
    _detached.add(task)
    task.add_done_callback(_detached.discard)


def wants_sse(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return SSE in accept and NDJSON not in accept


def _encode(event: BaseModel, sse: bool) -> bytes:
    body = event.model_dump_json()
    if sse:
        kind = getattr(event, "type", "message")
        return f"event: {kind}\ndata: {body}\n\n".encode()
    return body.encode() + b"\n"


def event_stream(request: Request, events: AsyncIterator[BaseModel]) -> StreamingResponse:
    sse = wants_sse(request)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield _encode(event, sse)
        except errors.SandlotError as exc:
            yield _encode(ErrorEvent(code=exc.code, message=exc.message), sse)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type=SSE if sse else NDJSON, headers=headers)


async def process_events(proc: ProcessStream, *, announce: bool = True) -> AsyncIterator[BaseModel]:
    """start, stdout/stderr (UTF-8, split safely across chunks), exit.

    A client that goes away detaches from the process; the process keeps running.
    """
    decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in (1, 2)}
    finished = False
    try:
        if announce and proc.pid is not None:
            yield StartEvent(pid=proc.pid)
        async for fd, data in proc.output():
            text = decoders[fd].decode(data)
            if text:
                yield OutputEvent(type="stdout" if fd == 1 else "stderr", data=text)
        finished = True
        for fd, dec in decoders.items():
            tail = dec.decode(b"", final=True)
            if tail:
                yield OutputEvent(type="stdout" if fd == 1 else "stderr", data=tail)
        ex = proc.exit
        assert ex is not None
        yield ExitEvent.from_agent(ex)
    finally:
        if not finished:
            later(proc.detach())


async def watch_events(watch: WatchStream) -> AsyncIterator[BaseModel]:
    try:
        async for ev in watch.events():
            yield WatchEventOut(op=ev.op, path=ev.path)
    finally:
        later(watch.close())


async def prefetched(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Pull the first chunk now (errors raise here, before any response), stream the rest later."""
    it = aiter(chunks)
    try:
        first = await anext(it)
    except StopAsyncIteration:
        first = b""

    async def rest() -> AsyncIterator[bytes]:
        done = False
        try:
            if first:
                yield first
            async for chunk in it:
                yield chunk
            done = True
        finally:
            if not done:  # the client went away: stop the agent's read
                later(it.aclose())  # type: ignore[attr-defined]

    return rest()
