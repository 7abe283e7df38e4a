"""Exposed ports: HTTP (streaming included) and WebSocket to a port inside a sandbox.

The general path to a sandbox's port is a `port.connect` stream through its
agent (`PortTunnel`): no network joins the host to the sandbox, so ports work
in every network mode (`none` included), for every runtime and through any
node (in-process or remote), and a proxied request can never reach anything
but 127.0.0.1 inside that one sandbox.

The direct route is an optimisation for an in-process node: where the node
offers the sandbox's own address (`SandboxAgent.direct_address`: it has an
interface and runs), HTTP and WebSocket go over TCP to that address, one hop
fewer through the sandbox (the agent's relay costs gVisor about a millisecond
of CPU per request). A server that listens on 127.0.0.1 only refuses it, and
that port goes through the tunnel. A direct connection is always ended with a
reset, never a FIN: gVisor cannot save a TCP endpoint that lingers, and the
side that closes second with a FIN leaves its peer in TIME_WAIT for a minute
(before a memory save the node resets the rest: node/memory_pause.py).

- HTTP: a lean HTTP/1.1 client (http1, parsing with httptools) with
  keep-alive connections pooled per sandbox and port; bodies stream both
  ways, so server-sent events and long downloads pass as they are produced.
- WebSocket: the client's handshake is answered by the server's, and
  messages are relayed both ways, by the same route as HTTP (ws_relay).

Served by uvicorn, most requests take port_front's fast path instead (from
uvicorn's parser, no ASGI; WebSocket relayed as bytes); it shares this
module's pool, request head and error answers. What reaches this module is
the rest: request bodies that stream, `Expect: 100-continue`, requests behind
a proxy (`X-Forwarded-*`), pipelined ones, and any server but uvicorn.

Who may: see `port_access` (public ports, the sandbox's access token, or an
API key of its team). This module only moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from sandlot import errors
from sandlot.agent.client import PortTunnel
from sandlot.agent.handle import SandboxAgent
from sandlot.api import http1, ws_relay
from sandlot.api.host_routing import Receive, Scope, Send
from sandlot.api.http1 import Pipe
from sandlot.api.http_errors import error_response, status_of

P = TypeVar("P")

__all__ = ["PortProxy", "answer_headers", "broken_exchange", "connect", "port_error", "request_head", "reset_on_close"]

log = logging.getLogger("sandlot.api.ports")

#: Headers that belong to one hop (RFC 9110 7.6.1), and Sandlot's own credentials.
HOP_NAMES = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer", b"trailers",
    b"transfer-encoding", b"upgrade", b"x-api-key", b"x-sandlot-access-token",
}  # fmt: skip
_NOT_PASSED = HOP_NAMES | {b"date"}
#: How long an idle keep-alive connection to a sandbox's port is kept, and how many per port.
KEEPALIVE_S = 30.0
MAX_IDLE = 32
#: A request body up to this size is read first (so the request can be retried on a fresh connection).
REPLAYABLE = 64 * 1024
#: A direct connection (to the sandbox's own address) that is not made within this falls back to the tunnel,
#: and that port is not tried directly again for a while.
DIRECT_CONNECT_S = 2.0
DIRECT_RETRY_S = 10.0
#: SO_LINGER on, for 0 s: closing a direct connection resets it (nothing lingers in the sandbox).
RESET_ON_CLOSE = struct.pack("ii", 1, 0)
#: The most one read of a direct connection takes (and buffers): larger pieces, fewer trips through the loop.
READ_MAX = 1 << 20


class TunnelPipe:
    """An agent tunnel (`port.connect`) as an http1.Pipe."""

    def __init__(self, tunnel: PortTunnel) -> None:
        self._tunnel = tunnel
        self._received = tunnel.received()

    async def send(self, data: bytes) -> None:
        await self._tunnel.send(data)  # waits while the sandbox's server has a window's worth unread

    async def recv(self) -> bytes:
        try:
            return await anext(self._received)
        except StopAsyncIteration:
            return b""

    async def close(self) -> None:
        with contextlib.suppress(errors.SandlotError):
            await self._tunnel.close()

    @property
    def stale(self) -> bool:
        return self._tunnel.closed


class TcpPipe:
    """A TCP connection to the sandbox's own address, as an http1.Pipe."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def recv(self) -> bytes:
        return await self._reader.read(READ_MAX)

    async def close(self) -> None:
        self._writer.close()  # (a reset, once written out: SO_LINGER 0, set by `_connect`)

    @property
    def stale(self) -> bool:
        return self._reader.at_eof() or self._writer.is_closing()


async def connect(
    sbx: SandboxAgent, port: int, no_direct: dict[int, float],
    direct: Callable[[str, int], Awaitable[P]] | None = None,
) -> P | TcpPipe | TunnelPipe:  # fmt: skip
    """A direct connection where the node offers the sandbox's address and its server listens there
    (made by `direct`, a TcpPipe by default); the agent's tunnel otherwise (a server bound to 127.0.0.1
    only, or no address)."""
    connect_direct: Callable[[str, int], Awaitable[P | TcpPipe]] = direct or _connect_direct
    address = sbx.direct_address()
    if address is None or no_direct.get(port, 0.0) > time.monotonic():
        return TunnelPipe(await sbx.agent.connect_port(port))
    try:
        return await asyncio.wait_for(connect_direct(address, port), DIRECT_CONNECT_S)
    except ConnectionRefusedError:
        refused = True
    except (OSError, TimeoutError):
        refused = False
    tunnel = TunnelPipe(await sbx.agent.connect_port(port))  # (nothing listening at all: raises)
    if refused:  # the server may have begun to listen between the two tries: its own address once more
        with contextlib.suppress(OSError, TimeoutError):
            found = await asyncio.wait_for(connect_direct(address, port), DIRECT_CONNECT_S)
            await tunnel.close()
            return found
    no_direct[port] = time.monotonic() + DIRECT_RETRY_S  # listening on 127.0.0.1 only, it seems
    return tunnel


def reset_on_close(sock: socket.socket) -> None:
    """A direct connection ends with a reset, never a FIN (see the module's docstring)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)


async def _connect_direct(address: str, port: int) -> TcpPipe:
    reader, writer = await asyncio.open_connection(address, port, limit=READ_MAX)
    reset_on_close(writer.get_extra_info("socket"))
    return TcpPipe(reader, writer)


class Pool:
    """Idle keep-alive connections to the ports of one sandbox (taken most recent first)."""

    def __init__(self, sbx: SandboxAgent) -> None:
        self.sbx = sbx
        self._idle: dict[int, list[tuple[float, Pipe]]] = {}
        self.no_direct: dict[int, float] = {}  # port -> until when it is not tried directly

    async def take(self, port: int) -> tuple[Pipe, bool]:
        """A connection to `port` (an idle one when there is one) and whether it was idle."""
        idle = self._idle.get(port)
        now = time.monotonic()
        while idle:
            since, pipe = idle.pop()
            if not pipe.stale and now - since < KEEPALIVE_S:
                return pipe, True
            await pipe.close()
        return await connect(self.sbx, port, self.no_direct), False

    async def give_back(self, port: int, pipe: Pipe) -> None:
        idle = self._idle.setdefault(port, [])
        if len(idle) >= MAX_IDLE or self.sbx.gone:
            await pipe.close()
            return
        idle.append((time.monotonic(), pipe))

    async def close(self) -> None:
        idle, self._idle = self._idle, {}
        for pipes in idle.values():
            for _, pipe in pipes:
                await pipe.close()


def _forward_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out = []
    for k, v in headers:
        name = k.lower()
        if name in HOP_NAMES:
            continue
        if name == b"authorization" and v.lower().startswith((b"bearer sl_", b"bearer e2b_")):
            continue  # a Sandlot API key (in either form), not the sandbox's business
        out.append((k, v))
    return out


def request_head(
    method: str, target: str, raw: Iterable[tuple[bytes, bytes]], port: int, scheme: str, client: str | None,
    *, chunked: bool, upgrade: bytes | None = None,
) -> bytes:  # fmt: skip
    """The head of a request as it goes on to the sandbox's server (`raw`: the client's headers; `upgrade`:
    the protocol it upgrades to, a WebSocket relayed as bytes)."""
    headers = _forward_headers(raw)
    if upgrade is not None:
        headers += [(b"connection", b"Upgrade"), (b"upgrade", upgrade)]
    if not any(k.lower() == b"host" for k, _ in raw):  # (an HTTP/1.0 client): HTTP/1.1 requires one
        headers.append((b"host", b"127.0.0.1:%d" % port))
    headers.append((b"x-forwarded-proto", scheme.encode()))
    if client is not None:
        headers.append((b"x-forwarded-for", client.encode()))
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    return http1.encode_head(method, target, headers)


def answer_headers(ex: http1.Exchange, extra: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers of the server's answer as they go on to the client (names lower-cased), `extra` added.

    Its Date is dropped: the API's server dates every answer it writes, and HTTP allows one Date."""
    return [(k.lower(), v) for k, v in ex.headers if k.lower() not in _NOT_PASSED] + list(extra)


def broken_exchange(exc: BaseException, sandbox_id: str, port: int) -> Response:
    msg = f"the server on port {port} of sandbox {sandbox_id} broke the HTTP exchange: {exc or type(exc).__name__}"
    return error_response(502, errors.PortNotListeningError.code, msg)


def port_error(exc: errors.SandlotError, sandbox_id: str, port: int) -> Response:
    if isinstance(exc, errors.PortNotListeningError):
        msg = f"nothing is listening on port {port} in sandbox {sandbox_id}: start a server on it (any address)"
        return error_response(502, exc.code, msg)
    return error_response(status_of(exc), exc.code, exc.message, exc.field)


class PortProxy:
    """Relays requests to sandbox ports; one pool of keep-alive connections per sandbox.

    Invariant: `_pools[id]` belongs to the live SandboxAgent object it was made
    for; a killed (or replaced) sandbox's pool is closed on the next lookup.
    """

    def __init__(self) -> None:
        self._pools: dict[str, Pool] = {}
        self._closing: set[asyncio.Future[None]] = set()

    def pool(self, sbx: SandboxAgent) -> Pool:
        for sid, old in list(self._pools.items()):
            if old.sbx.gone or (sid == sbx.id and old.sbx is not sbx):
                del self._pools[sid]
                closing = asyncio.ensure_future(old.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        pool = self._pools.get(sbx.id)
        if pool is None:
            pool = self._pools[sbx.id] = Pool(sbx)
        return pool

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            with contextlib.suppress(Exception):
                await pool.close()

    async def http(
        self, scope: Scope, receive: Receive, send: Send, sbx: SandboxAgent, port: int, path: str,
        extra: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    ) -> None:  # fmt: skip
        """Forward the request of `scope` to `path` (with its query) on `port` of `sbx`; stream the answer
        (with the `extra` headers added). Read from the scope as it is: no Request or URL is built (a
        tenth of the proxy's CPU per request)."""
        query: bytes = scope.get("query_string", b"")
        target = "/" + path.lstrip("/") + ("?" + query.decode("latin-1") if query else "")
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        length = next((v for k, v in raw if k.lower() == b"content-length"), None)
        method: str = scope["method"]
        body: bytes | None = b""
        request = Request(scope, receive)
        if length is not None and length.isdigit() and int(length) <= REPLAYABLE:
            body = await request.body()  # small: kept, so a stale keep-alive connection can be retried
        elif length is not None or method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            body = None  # streamed as it comes (chunked when its length is unknown)
        client = scope["client"][0] if scope.get("client") else None
        chunked = body is None and length is None
        head = request_head(method, target, raw, port, scope.get("scheme", "http"), client, chunked=chunked)
        pool = self.pool(sbx)
        try:
            ex = await self.exchange(pool, port, head, request.stream() if body is None else body, method, chunked)
        except errors.SandlotError as exc:
            await port_error(exc, sbx.id, port)(scope, receive, send)
            return
        except (http1.ProtocolError, OSError) as exc:
            await broken_exchange(exc, sbx.id, port)(scope, receive, send)
            return
        await _relay_answer(ex, answer_headers(ex, extra), pool, port, receive, send, sbx.id)

    async def exchange(
        self, pool: Pool, port: int, head: bytes, body: bytes | AsyncIterable[bytes], method: str, chunked: bool
    ) -> http1.Exchange:
        """Send the request (a `body` that is not bytes streams, `chunked` when its length is unknown); the
        answer's head read. A reused connection that turns out closed is retried once (a body in bytes)."""
        while True:
            pipe, reused = await pool.take(port)
            ex = http1.Exchange(pipe, method == "HEAD")
            try:
                if isinstance(body, bytes):
                    await pipe.send(head + body)
                else:
                    await pipe.send(head)
                    if not chunked:
                        async for chunk in body:
                            if chunk:
                                await pipe.send(chunk)
                    else:
                        await http1.send_body(pipe, body)
                await ex.start()
                return ex
            except BaseException as exc:
                await pipe.close()
                retry = reused and isinstance(body, bytes) and not ex.got_bytes
                if retry and not isinstance(exc, asyncio.CancelledError):
                    continue  # the server had closed that idle connection: a fresh one
                raise

    async def websocket(self, ws: WebSocket, sbx: SandboxAgent, port: int, path: str) -> None:
        """Relay a WebSocket to `path` on `port` of `sbx` (the client's handshake is answered by the server's)."""
        target = "/" + path.lstrip("/") + (("?" + ws.url.query) if ws.url.query else "")
        try:
            pipe = await connect(sbx, port, self.pool(sbx).no_direct)
        except errors.SandlotError as exc:
            await ws.close(code=1011, reason=_reason(port_error(exc, sbx.id, port)))
            return
        try:
            await ws_relay.relay(ws, pipe, port, target)
        finally:
            await pipe.close()


async def _relay_answer(
    ex: http1.Exchange, headers: list[tuple[bytes, bytes]], pool: Pool, port: int,
    receive: Receive, send: Send, sandbox_id: str,
) -> None:  # fmt: skip
    """Send the answer on; its connection goes back to the pool when it was read in full."""
    await send({"type": "http.response.start", "status": ex.status, "headers": headers})
    chunks = ex.body()
    watcher: asyncio.Task[None] | None = None
    try:
        first = await anext(chunks, None)
        if first is None or ex.finished:  # the whole answer is in: no need to watch the client
            if first is not None:
                await anext(chunks, None)  # (its end: whether the connection may be reused)
            await send({"type": "http.response.body", "body": first or b"", "more_body": False})
        else:
            # A streaming answer may go on for ever: stop relaying when its client leaves.
            watcher = asyncio.ensure_future(_until_disconnect(receive))
            relay = asyncio.ensure_future(_relay_body(first, chunks, send))
            done, _ = await asyncio.wait({relay, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if relay not in done:
                relay.cancel()
                with contextlib.suppress(BaseException):
                    await relay
                await ex.pipe.close()
                return
            relay.result()
    except (http1.ProtocolError, errors.SandlotError, OSError) as exc:
        log.info("sandbox %s port %d: response cut short: %s", sandbox_id, port, exc)
        await ex.pipe.close()
        return
    except BaseException:
        await ex.pipe.close()
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
    if ex.reusable:
        await pool.give_back(port, ex.pipe)
    else:
        await ex.pipe.close()


async def _relay_body(first: bytes, chunks: AsyncIterator[bytes], send: Send) -> None:
    await send({"type": "http.response.body", "body": first, "more_body": True})
    async for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _reason(resp: Response) -> str:
    return bytes(resp.body).decode(errors="replace")[:120]
