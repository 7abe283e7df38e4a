"""The port proxy's WebSocket relay: a client's WebSocket (ASGI) to a server in a sandbox, over a Pipe.

The handshake goes through the `websockets` sans-I/O client (it writes the
request and checks the server's answer). After it, frames to and from the
server are read and written here: a message costs a header and a mask.
Measured in-process (best of 5, 100-byte text): the sans-I/O client took
21 us to take in one of the server's messages (generator-driven parser,
frame objects), this parser 2.4 us; sending costs ~4 us either way.

Invariant: the proxy offers the server no extension, so a frame with an RSV
bit set is a protocol error (the relay closes with 1002); frames the relay
sends are masked, as RFC 6455 requires of a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.client import ClientProtocol
from websockets.http11 import Response as WsResponse
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from sandlot import errors
from sandlot.api.http1 import Pipe

try:
    from websockets.speedups import apply_mask  # C, as `websockets` itself uses it
except ImportError:  # pragma: no cover (a build of websockets without its C speedups)
    from websockets.utils import apply_mask

__all__ = ["relay"]

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
#: Close codes that must not be sent in a close frame (RFC 6455 7.4.1): a client leaving with one closes with 1000.
_UNSENDABLE = {1004, 1005, 1006, 1015}


def encode(opcode: int, data: bytes) -> bytes:
    """One final, masked frame."""
    n = len(data)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + apply_mask(data, mask)


class Frames:
    """Frames parsed from the bytes a server sends: (opcode, fin, payload), or None until one is whole."""

    def __init__(self, data: bytes = b"") -> None:
        self._buf = bytearray(data)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> tuple[int, bool, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise ValueError("a frame with an RSV bit set, and no extension was agreed")
        n, at = b1 & 0x7F, 2
        if n >= 126:
            at += 2 if n == 126 else 8
            if len(buf) < at:
                return None
            n = int.from_bytes(buf[2:at], "big")
        masked = b1 & 0x80
        end = at + (4 if masked else 0) + n
        if len(buf) < end:
            return None
        data = bytes(buf[end - n : end])
        if masked:  # (a server must not mask; tolerated)
            data = apply_mask(data, bytes(buf[at : at + 4]))
        del buf[:end]
        return b0 & 0x0F, bool(b0 & 0x80), data


async def relay(ws: WebSocket, pipe: Pipe, port: int, target: str) -> None:
    """Answer the client's handshake with the server's (at `target` on `port`), then relay messages both ways."""
    subprotocols = [s.strip() for s in ws.headers.get("sec-websocket-protocol", "").split(",") if s.strip()]
    uri = parse_uri(f"ws://127.0.0.1:{port}{target}")
    proto = ClientProtocol(uri, subprotocols=[Subprotocol(s) for s in subprotocols] or None, max_size=None)
    request = proto.connect()
    for name in ("origin", "cookie", "user-agent"):
        if name in ws.headers:
            request.headers[name] = ws.headers[name]
    proto.send_request(request)
    await pipe.send(b"".join(proto.data_to_send()))
    got = b""
    while b"\r\n\r\n" not in got and (data := await pipe.recv()):
        got += data
    head, end, rest = got.partition(b"\r\n\r\n")
    proto.receive_data(head + end)
    events = proto.events_received()
    if not events or not isinstance(events[0], WsResponse) or proto.handshake_exc is not None:
        why = proto.handshake_exc or head.split(b"\r\n")[0].decode(errors="replace") or "it closed the connection"
        await ws.close(code=1011, reason=f"the server on port {port} refused the WebSocket: {why}"[:120])
        return
    await ws.accept(subprotocol=events[0].headers.get("sec-websocket-protocol"))
    tasks = [asyncio.ensure_future(_to_client(ws, pipe, Frames(rest))), asyncio.ensure_future(_to_server(ws, pipe))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t


async def _to_client(ws: WebSocket, pipe: Pipe, frames: Frames) -> None:
    """The server's messages to the client (pings answered here), until either closes."""
    opcode = TEXT
    parts: list[bytes] = []
    while True:
        try:
            frame = frames.next()
        except ValueError:
            await pipe.send(encode(CLOSE, (1002).to_bytes(2, "big")))
            await ws.close(code=1002)
            return
        if frame is None:
            if not (data := await pipe.recv()):
                await ws.close(code=1011)
                return
            frames.feed(data)
            continue
        op, fin, data = frame
        if op == CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1000
            await pipe.send(encode(CLOSE, data[:2]))
            await ws.close(code=1000 if code in _UNSENDABLE else code)
            return
        if op == PING:
            await pipe.send(encode(PONG, data))
            continue
        if op == CONT:
            parts.append(data)
        elif op in (TEXT, BINARY):
            opcode, parts = op, [data]
        else:  # a pong, or an opcode nobody defined
            continue
        if fin:
            msg = parts[0] if len(parts) == 1 else b"".join(parts)
            await (ws.send_text(msg.decode()) if opcode == TEXT else ws.send_bytes(msg))


async def _to_server(ws: WebSocket, pipe: Pipe) -> None:
    """The client's messages to the server, until the client leaves (its close passed on)."""
    try:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                code = int(msg.get("code") or 1000)
                await pipe.send(encode(CLOSE, (1000 if code in _UNSENDABLE else code).to_bytes(2, "big")))
                return
            if msg.get("text") is not None:
                await pipe.send(encode(TEXT, msg["text"].encode()))
            elif msg.get("bytes") is not None:
                await pipe.send(encode(BINARY, msg["bytes"]))
    except (WebSocketDisconnect, errors.SandlotError, OSError):
        return
