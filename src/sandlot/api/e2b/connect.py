"""The Connect RPC protocol, server side, as the E2B SDK's envd clients speak it.

The SDK's Connect client uses the JSON codec (protobuf's JSON mapping:
camelCase names, bytes as base64, enums by name) without compression:

- unary: `POST /{service}/{Method}`, `Content-Type: application/json`, the
  message as the body; the answer is the message (200) or an error
  `{"code": "not_found", "message": ...}` with the matching HTTP status;
- server streaming: `Content-Type: application/connect+json`; request and
  response bodies are envelopes (1 flag byte, 4-byte big-endian length, JSON);
  the last response envelope has flag 0x02 and carries `{}` or `{"error": ...}`.

Errors raised by a handler are Sandlot errors; `connect_code` maps them (by
their HTTP status, from the one table in `sandlot.api.http_errors`) to Connect
codes, which the SDK maps to its own exceptions (NOT_FOUND to
NotFoundException, DEADLINE_EXCEEDED to TimeoutException, ...).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sandlot import errors
from sandlot.api.http_errors import status_of

__all__ = [
    "Message",
    "connect_code",
    "keepalive_interval",
    "not_running_message",
    "stream_body",
    "stream_for",
    "stream_response",
    "timeout_ms",
    "unary",
    "unary_body",
    "unary_for",
    "with_keepalive",
]

log = logging.getLogger("sandlot.api.e2b")

Message = dict[str, Any]

END_STREAM = 0x02
MAX_MESSAGE = 16 << 20

# HTTP status (of a Sandlot error) -> Connect code, and Connect code -> HTTP status.
_CODE_OF_STATUS = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "failed_precondition",
    429: "resource_exhausted",
    504: "deadline_exceeded",
    507: "resource_exhausted",
    503: "unavailable",
}
STATUS_OF_CODE = {
    "invalid_argument": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "already_exists": 409,
    "failed_precondition": 412,
    "resource_exhausted": 429,
    "deadline_exceeded": 504,
    "unavailable": 502,  # what E2B's proxy answers for a sandbox that does not run
    "unimplemented": 501,
    "internal": 500,
}


#: What the SDKs look for in a 502 to tell "the sandbox is gone" from "unreachable" (E2B's proxy wording).
NOT_FOUND_PHRASE = "was not found"


def not_running_message(exc: errors.SandboxStateError) -> str:
    """E2B's wording for a request that reached a sandbox that does not run, with Sandlot's reason."""
    text = str(exc)
    return text if NOT_FOUND_PHRASE in text else f"{text} (the sandbox {NOT_FOUND_PHRASE} running)"


def connect_code(exc: errors.SandlotError) -> str:
    if isinstance(exc, errors.FileExistsError_):
        return "already_exists"
    if isinstance(exc, errors.SandboxStateError):  # killed, or paused: E2B's proxy says "unavailable"
        return "unavailable"
    return _CODE_OF_STATUS.get(status_of(exc), "internal")


def _error(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, errors.SandboxStateError):
        return connect_code(exc), not_running_message(exc)
    if isinstance(exc, errors.SandlotError):
        return connect_code(exc), str(exc)
    log.exception("E2B facade: unexpected error", exc_info=exc)
    return "internal", f"internal error: {type(exc).__name__}"


def error_response(code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=STATUS_OF_CODE.get(code, 500))


def timeout_ms(request: Request) -> int:
    """The deadline the client sent (`Connect-Timeout-Ms`), 0 for none."""
    value = request.headers.get("connect-timeout-ms", "")
    return int(value) if value.isdigit() and len(value) <= 10 else 0


def keepalive_interval(request: Request, default: float = 50.0) -> float:
    """Seconds between keepalive messages on a quiet stream (the SDK's `Keepalive-Ping-Interval`)."""
    value = request.headers.get("keepalive-ping-interval", "")
    return max(1.0, min(float(value), 3600.0)) if value.isdigit() else default


async def with_keepalive(source: AsyncIterator[Message], interval: float, ping: Message) -> AsyncIterator[Message]:
    """The source's messages, and `ping` whenever it is quiet for `interval` seconds, so that
    proxies between the SDK and us do not cut a long, silent command's stream."""
    it = aiter(source)
    step: asyncio.Future[Message] | None = None
    try:
        while True:
            if step is None:
                step = asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait({step}, timeout=interval)
            if not done:
                yield ping
                continue
            try:
                msg = step.result()
            except StopAsyncIteration:
                step = None
                return
            step = None
            yield msg
    finally:
        # Closed early (the client went away): end the source too, so its own cleanup runs now.
        if step is not None:
            step.cancel()  # the source sees CancelledError at its await and unwinds
        else:
            _background(it.aclose())  # type: ignore[attr-defined]


_tasks: set[asyncio.Future[Any]] = set()


def _background(coro: Any) -> None:
    """Run a coroutine to completion in a task of its own (we may be in a task being cancelled)."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _parse(data: bytes) -> Message:
    try:
        msg = json.loads(data or b"{}")
    except ValueError as exc:
        raise errors.InvalidArgumentError(f"request body is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise errors.InvalidArgumentError("request body must be a JSON object")
    return msg


async def unary_body(request: Request) -> Message:
    body = await request.body()
    if len(body) > MAX_MESSAGE:
        raise errors.InvalidArgumentError("request message is too large")
    return _parse(body)


async def stream_body(request: Request) -> Message:
    """The single request message of a server-streaming call (one envelope)."""
    body = await request.body()
    if len(body) < 5:
        raise errors.InvalidArgumentError("streaming request must be one Connect envelope")
    flags, length = struct.unpack(">BI", body[:5])
    if flags & 0x01:
        raise errors.InvalidArgumentError("compressed Connect messages are not supported")
    return _parse(body[5 : 5 + length])


def envelope(msg: Message, flags: int = 0) -> bytes:
    data = json.dumps(msg, separators=(",", ":")).encode()
    return struct.pack(">BI", flags, len(data)) + data


C = TypeVar("C")


async def unary_for(
    request: Request, setup: Callable[[], Awaitable[C]], handler: Callable[[C, Message], Awaitable[Message]]
) -> Response:
    """A unary call whose `setup` (who is asking, which sandbox) runs before its message is read,
    so a caller who may not ask learns nothing from how the message is parsed."""
    try:
        ctx = await setup()
    except Exception as exc:
        return error_response(*_error(exc))
    return await unary(request, lambda msg: handler(ctx, msg))


async def stream_for(
    request: Request, setup: Callable[[], Awaitable[C]], events: Callable[[C, Message], AsyncIterator[Message]]
) -> Response:
    """`unary_for`'s server-streaming sibling: `setup` first, then the request's message."""
    try:
        ctx = await setup()
    except Exception as exc:
        return _end_with(exc)
    return await stream_response(request, lambda msg: events(ctx, msg))


def _end_with(exc: BaseException) -> Response:
    code, message = _error(exc)
    end = envelope({"error": {"code": code, "message": message}}, END_STREAM)
    return Response(end, media_type="application/connect+json")


async def unary(request: Request, handler: Callable[[Message], Awaitable[Message]]) -> Response:
    """Run a unary handler and answer in Connect's unary JSON form."""
    try:
        result = await handler(await unary_body(request))
    except Exception as exc:
        return error_response(*_error(exc))
    return JSONResponse(result)


async def stream_response(request: Request, events: Callable[[Message], AsyncIterator[Message]]) -> Response:
    """Run a server-streaming handler. Errors before its first message are unary-style errors
    with an HTTP status; later ones end the stream with an error envelope."""
    try:
        it = aiter(events(await stream_body(request)))
        first = await anext(it)
    except StopAsyncIteration:
        first, it = None, None
    except Exception as exc:
        return _end_with(exc)

    async def body() -> AsyncIterator[bytes]:
        end: Message = {}
        if first is not None:
            yield envelope(first)
        if it is not None:
            try:
                async for msg in it:
                    yield envelope(msg)
            except Exception as exc:
                code, message = _error(exc)
                end = {"error": {"code": code, "message": message}}
        yield envelope(end, END_STREAM)

    return StreamingResponse(body(), media_type="application/connect+json")
