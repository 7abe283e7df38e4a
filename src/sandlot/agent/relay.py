"""The agent protocol across a WebSocket: how a replica reaches a sandbox on another host.

A node daemon holds each sandbox's agent connection (a Unix socket the agent
dialled). A replica that serves a request for that sandbox drives an ordinary
`AgentClient` whose connection is `WebSocketConnection`: the same frames, sent
as WebSocket binary messages to the daemon's `/v1/sandboxes/{id}/agent`. There
`relay` passes each frame on to the agent's connection and each answer back,
renumbering streams (the agent's connection is shared by the node itself and
every replica) and nothing else: process streams, stdin, PTYs, files, watches
and port tunnels with their flow control (acknowledgements are frames too)
work unchanged.

Besides the frames, the daemon sends the text message `CHANGED` whenever what the
node's status of the sandbox says changes (a state, a death, its network). A replica
holding the connection keeps the status it last read until then (`epoch`), so a
data-plane call costs no status request to the node; nothing of this reaches the
sandbox itself (an idle sandbox stays idle).

Invariant (daemon side): every stream a relay opened on the agent's connection
is cancelled and forgotten when its WebSocket ends, so a replica that goes away
leaves no stream (or process output consumer) behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.agent.client import AgentConnection, RelayStream
from sandlot.agent.protocol import Frame, FrameKind

__all__ = ["CHANGED", "WebSocketConnection", "relay"]

#: the daemon's text message: the sandbox's status changed (what was read of it is stale)
CHANGED = "changed"

#: What the daemon answers a relay with when it looks up the sandbox: its agent's connection
#: (raising SandboxStateError unless it runs) and the environment its processes start with.
Resolve = Callable[[], tuple[AgentConnection, Mapping[str, str]]]


class WebSocketConnection(AgentConnection):
    """An `AgentConnection` whose agent is behind a node daemon's WebSocket (dialled on first use,
    redialled after a drop). Nothing listens locally: `listen` is never called on it."""

    def __init__(self, url: str, headers: Mapping[str, str], sandbox_id: str) -> None:
        super().__init__("", sandbox_id)
        self._url = url
        self._headers = dict(headers)
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._dial_lock = asyncio.Lock()
        #: bumped when the daemon says the sandbox changed and when the connection drops: a status
        #: read while connected, with `epoch` the same since, is still current
        self.epoch = 0

    def stale(self) -> None:
        """What was read of the sandbox is no longer current (this side changed it)."""
        self.epoch += 1

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def _dial(self) -> ClientConnection:
        async with self._dial_lock:
            if self._ws is not None:
                return self._ws
            try:
                ws = await connect(
                    self._url, additional_headers=self._headers, max_size=None, compression=None, open_timeout=10
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                body = exc.response.body.decode(errors="replace") if exc.response.body else ""
                raise errors.error_from_code(_code_of_status(status, body), _message_of(body, status)) from None
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                raise errors.NodeUnreachableError(
                    f"sandbox {self.sandbox_id}: its node cannot be reached: {exc}"
                ) from None
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws))
            return ws

    async def _read(self, ws: ClientConnection) -> None:
        decoder = p.FrameDecoder()
        reason = "the connection to the sandbox's node was lost"
        try:
            async for message in ws:
                if isinstance(message, str):
                    if message == CHANGED:
                        self.epoch += 1
                    continue
                for frame in decoder.feed(message):
                    self._dispatch(frame)
        except ConnectionClosed:
            pass
        except p.ProtocolError as exc:
            reason = f"protocol error from the node: {exc}"
        finally:
            self.epoch += 1
            if self._ws is ws:
                self._ws = None
                self._drop(reason)

    async def _send(
        self, stream: int, kind: FrameKind, header: dict[str, Any], payload: bytes | memoryview = b""
    ) -> None:
        ws = await self._dial()
        try:
            await ws.send(p.encode_frame(stream, kind, header, bytes(payload)))
        except ConnectionClosed as exc:
            raise errors.SandboxStateError(
                f"sandbox {self.sandbox_id}: the connection to its node broke: {exc}"
            ) from None

    async def close(self, wait_agent_s: float = 0.0) -> bool:
        """Close the WebSocket (the agent's own link is its node's, and `wait_agent_s` is the node's
        business there); returns True."""
        self._drop("the sandbox was closed")
        self.epoch += 1
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        return True


def _code_of_status(status: int, body: str) -> str:
    import json

    with contextlib.suppress(ValueError, AttributeError):
        code = json.loads(body).get("code")
        if isinstance(code, str):
            return code
    return {404: errors.SandboxNotFoundError.code, 401: errors.AuthenticationError.code}.get(
        status, errors.InternalError.code
    )


def _message_of(body: str, status: int) -> str:
    import json

    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(body).get("message")
        if isinstance(message, str):
            return message
    return f"the node refused the sandbox's connection (HTTP {status})"


async def relay(
    receive: Callable[[], Awaitable[bytes | None]], send: Callable[[bytes], Awaitable[None]], resolve: Resolve
) -> None:
    """Bridge one WebSocket (`receive` answers None once it closed) to a sandbox's agent.

    Each OPEN looks the sandbox up again (a woken sandbox has a new connection); a process
    started through the relay gets the sandbox's own environment under its own, as in-process.
    """
    outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
    streams: dict[int, RelayStream] = {}

    def forward(far: int) -> Callable[[Frame | BaseException], None]:
        def deliver(item: Frame | BaseException) -> None:
            if isinstance(item, BaseException):
                streams.pop(far, None)
                outbox.put_nowait(_error_end(far, item))
                return
            if item.kind is FrameKind.END:
                streams.pop(far, None)
            outbox.put_nowait(p.encode_frame(far, item.kind, item.header, item.payload))

        return deliver

    async def pump() -> None:
        while (message := await outbox.get()) is not None:
            await send(message)

    sender = asyncio.create_task(pump())
    decoder = p.FrameDecoder()
    try:
        while (message := await receive()) is not None:
            for frame in decoder.feed(message):
                if frame.kind is FrameKind.OPEN:
                    await _open(frame, resolve, forward(frame.stream), streams, outbox)
                elif (stream := streams.get(frame.stream)) is not None:
                    try:
                        await stream.send_frame(frame.kind, frame.header, frame.payload)
                    except errors.SandlotError as exc:
                        streams.pop(frame.stream, None)
                        stream.forget()
                        outbox.put_nowait(_error_end(frame.stream, exc))
    except p.ProtocolError:
        pass
    finally:
        for stream in list(streams.values()):
            with contextlib.suppress(errors.SandlotError):
                await stream.cancel()
            stream.forget()
        outbox.put_nowait(None)
        with contextlib.suppress(Exception):
            await sender


async def _open(
    frame: Frame,
    resolve: Resolve,
    deliver: Callable[[Frame | BaseException], None],
    streams: dict[int, RelayStream],
    outbox: asyncio.Queue[bytes | None],
) -> None:
    method = str(frame.header.get("method", ""))
    params = frame.header.get("params")
    params = dict(params) if isinstance(params, dict) else {}
    try:
        conn, env = resolve()
        if method == p.Method.PROCESS_START:
            own = params.get("env")
            params["env"] = {**env, **(own if isinstance(own, dict) else {})}
        streams[frame.stream] = await conn.relay(method, params, frame.payload, deliver)
    except errors.SandlotError as exc:
        streams.pop(frame.stream, None)
        outbox.put_nowait(_error_end(frame.stream, exc))


def _error_end(stream: int, exc: BaseException) -> bytes:
    code = exc.code if isinstance(exc, errors.SandlotError) else errors.InternalError.code
    return p.encode_frame(stream, FrameKind.END, {"ok": False, "error": {"code": code, "message": str(exc)}})
