"""Exposed ports: HTTP (streaming included) and WebSocket to a port inside a sandbox.

Every connection to a sandbox's port is a `port.connect` stream through its
agent (`PortTunnel`): no network joins the host to the sandbox, so ports work
in every network mode (`none` included) and for every runtime, and a proxied
request can never reach anything but 127.0.0.1 inside that one sandbox.

- HTTP: httpcore speaks HTTP/1.1 over tunnels (`TunnelBackend`), with
  keep-alive connections pooled per sandbox; bodies stream both ways, so
  server-sent events and long downloads pass as they are produced.
- WebSocket: the client's handshake is answered by the server's; in between,
  the `websockets` sans-I/O client protocol speaks to the sandbox's server
  over a tunnel, and messages are relayed both ways.

Who may: see `port_access` (public ports, the sandbox's access token, or an
API key of its team). This module only moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpcore
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response as WsResponse
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from sandlot import errors
from sandlot.agent.client import PortTunnel
from sandlot.agent.handle import SandboxAgent
from sandlot.api.http_errors import error_response, status_of

__all__ = ["PortProxy"]

log = logging.getLogger("sandlot.api.ports")

#: Headers that belong to one hop (RFC 9110 7.6.1), and Sandlot's own credentials.
HOP_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "x-api-key", "x-sandlot-access-token",
}  # fmt: skip


class TunnelStream(httpcore.AsyncNetworkStream):
    def __init__(self, tunnel: PortTunnel) -> None:
        self._tunnel = tunnel
        self._received = tunnel.received()
        self._buf = b""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if not self._buf:
            try:
                self._buf = await asyncio.wait_for(anext(self._received), timeout)
            except StopAsyncIteration:
                return b""
            except TimeoutError:
                raise httpcore.ReadTimeout("the sandbox's server did not answer in time") from None
        chunk, self._buf = self._buf[:max_bytes], self._buf[max_bytes:]
        return chunk

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            try:  # waits while the sandbox's server has a window's worth unread
                await asyncio.wait_for(self._tunnel.send(buffer), timeout)
            except TimeoutError:
                raise httpcore.WriteTimeout("the sandbox's server stopped reading the request") from None

    async def aclose(self) -> None:
        with contextlib.suppress(errors.SandlotError):
            await self._tunnel.close()

    def get_extra_info(self, info: str) -> Any:
        return None


class TunnelBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network, made of agent tunnels into one sandbox (the host part of URLs is unused)."""

    def __init__(self, sbx: SandboxAgent) -> None:
        self.sbx = sbx

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return TunnelStream(await self.sbx.agent.connect_port(port))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _forward_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out = []
    for k, v in headers:
        name = k.decode("latin-1").lower()
        if name in HOP_HEADERS:
            continue
        if name == "authorization" and v.lower().startswith((b"bearer sl_", b"bearer e2b_")):
            continue  # a Sandlot API key (in either form), not the sandbox's business
        out.append((k, v))
    return out


def _port_error(exc: errors.SandlotError, sandbox_id: str, port: int) -> Response:
    if isinstance(exc, errors.PortNotListeningError):
        msg = f"nothing is listening on port {port} in sandbox {sandbox_id}: start a server on it (any address)"
        return error_response(502, exc.code, msg)
    return error_response(status_of(exc), exc.code, exc.message, exc.field)


class PortProxy:
    """Relays requests to sandbox ports; one connection pool per sandbox.

    Invariant: `_pools[id]` belongs to the live SandboxAgent object it was made
    for; a killed (or replaced) sandbox's pool is closed on the next lookup.
    """

    def __init__(self) -> None:
        self._pools: dict[str, tuple[SandboxAgent, httpcore.AsyncConnectionPool]] = {}
        self._closing: set[asyncio.Future[None]] = set()

    def _pool(self, sbx: SandboxAgent) -> httpcore.AsyncConnectionPool:
        for sid, (old, pool) in list(self._pools.items()):
            if old.gone or (sid == sbx.id and old is not sbx):
                del self._pools[sid]
                closing = asyncio.ensure_future(pool.aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        entry = self._pools.get(sbx.id)
        if entry is None:
            pool = httpcore.AsyncConnectionPool(
                network_backend=TunnelBackend(sbx), max_connections=64, keepalive_expiry=30.0
            )
            entry = self._pools[sbx.id] = (sbx, pool)
        return entry[1]

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for _, pool in pools.values():
            with contextlib.suppress(Exception):
                await pool.aclose()

    async def http(self, request: Request, sbx: SandboxAgent, port: int, path: str) -> Response:
        """Forward `request` to `path` (with the request's query) on `port` of `sbx`; stream the answer."""
        target = "/" + path.lstrip("/")
        if request.url.query:
            target += "?" + request.url.query
        headers = _forward_headers(request.headers.raw)
        headers.append((b"x-forwarded-proto", request.url.scheme.encode()))
        if request.client is not None:
            headers.append((b"x-forwarded-for", request.client.host.encode()))
        has_body = request.method not in ("GET", "HEAD", "OPTIONS", "DELETE") or "content-length" in request.headers
        if has_body and "content-length" not in request.headers:
            headers.append((b"transfer-encoding", b"chunked"))
        req = httpcore.Request(
            request.method,
            httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=port, target=target.encode()),
            headers=headers,
            content=request.stream() if has_body else b"",
            extensions={"timeout": {"connect": 10.0, "read": None, "write": 60.0, "pool": 30.0}},
        )
        try:
            resp = await self._pool(sbx).handle_async_request(req)
        except errors.SandlotError as exc:
            return _port_error(exc, sbx.id, port)
        except httpcore.ProtocolError as exc:
            msg = f"the server on port {port} of sandbox {sbx.id} broke the HTTP exchange: {exc or type(exc).__name__}"
            return error_response(502, errors.PortNotListeningError.code, msg)
        out_headers = [(k, v) for k, v in resp.headers if k.decode("latin-1").lower() not in HOP_HEADERS]

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_stream():
                    yield chunk
            except (httpcore.ReadError, httpcore.RemoteProtocolError, errors.SandlotError) as exc:
                log.info("sandbox %s port %d: response cut short: %s", sbx.id, port, exc)
            finally:
                await resp.aclose()

        response = StreamingResponse(body(), status_code=resp.status)
        response.raw_headers = [(k.lower(), v) for k, v in out_headers]
        return response

    async def websocket(self, ws: WebSocket, sbx: SandboxAgent, port: int, path: str) -> None:
        """Relay a WebSocket to `path` on `port` of `sbx` (the client's handshake is answered by the server's)."""
        target = "/" + path.lstrip("/") + (("?" + ws.url.query) if ws.url.query else "")
        try:
            tunnel = await sbx.agent.connect_port(port)
        except errors.SandlotError as exc:
            await ws.close(code=1011, reason=_reason(_port_error(exc, sbx.id, port)))
            return
        try:
            await _relay_ws(ws, tunnel, port, target)
        finally:
            with contextlib.suppress(errors.SandlotError):
                await tunnel.close()


def _reason(resp: Response) -> str:
    return bytes(resp.body).decode(errors="replace")[:120]


async def _relay_ws(ws: WebSocket, tunnel: PortTunnel, port: int, target: str) -> None:
    subprotocols = [s.strip() for s in ws.headers.get("sec-websocket-protocol", "").split(",") if s.strip()]
    uri = parse_uri(f"ws://127.0.0.1:{port}{target}")
    proto = ClientProtocol(uri, subprotocols=[Subprotocol(s) for s in subprotocols] or None, max_size=None)
    request = proto.connect()
    for name in ("origin", "cookie", "user-agent"):
        if name in ws.headers:
            request.headers[name] = ws.headers[name]
    proto.send_request(request)
    await tunnel.send(b"".join(proto.data_to_send()))
    received = tunnel.received()
    handshake: WsResponse | None = None
    async for data in received:
        proto.receive_data(data)
        events = proto.events_received()
        if events and isinstance(events[0], WsResponse):
            handshake = events[0]
            pending = events[1:]
            break
    if handshake is None or proto.handshake_exc is not None:
        why = proto.handshake_exc or "the server closed the connection"
        await ws.close(code=1011, reason=f"the server on port {port} refused the WebSocket: {why}"[:120])
        return
    await ws.accept(subprotocol=handshake.headers.get("sec-websocket-protocol"))

    async def upstream_to_client() -> None:
        parts: list[bytes] = []
        opcode = Opcode.TEXT

        async def deliver(frames: list[Any]) -> bool:
            nonlocal opcode
            for frame in frames:
                assert isinstance(frame, Frame)
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    opcode, parts[:] = frame.opcode, [bytes(frame.data)]
                elif frame.opcode is Opcode.CONT:
                    parts.append(bytes(frame.data))
                elif frame.opcode is Opcode.CLOSE:
                    code = proto.close_rcvd.code if proto.close_rcvd else 1000
                    await ws.close(code=code)
                    return False
                else:
                    continue
                if frame.fin:
                    msg = b"".join(parts)
                    await (ws.send_text(msg.decode()) if opcode is Opcode.TEXT else ws.send_bytes(msg))
            out = proto.data_to_send()  # pongs, close replies
            if out:
                await tunnel.send(b"".join(out))
            return True

        if not await deliver(pending):
            return
        async for data in received:
            proto.receive_data(data)
            if not await deliver(proto.events_received()):
                return
        await ws.close(code=1011)

    async def client_to_upstream() -> None:
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    proto.send_close(int(msg.get("code") or 1000))
                    await tunnel.send(b"".join(proto.data_to_send()))
                    return
                if msg.get("text") is not None:
                    proto.send_text(msg["text"].encode())
                elif msg.get("bytes") is not None:
                    proto.send_binary(msg["bytes"])
                await tunnel.send(b"".join(proto.data_to_send()))
        except (WebSocketDisconnect, errors.SandlotError):
            return

    tasks = [asyncio.ensure_future(upstream_to_client()), asyncio.ensure_future(client_to_upstream())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
