"""The port proxy's fast path: plain HTTP requests for a sandbox's port, served from uvicorn's parser.

Measured on the bench's port rows (`python bench/ports.py`, the API's CPU per
request from /proc): through ASGI a proxied request cost the API ~400 µs of
CPU (uvicorn's request cycle, a task, ASGI messages, Starlette's request), and
uvicorn writes an answer's head and its body as two writes, so the client
read and parsed two segments (httpx: +370 µs of the client's CPU a request).
Here a request that needs none of ASGI is proxied from the parser's callbacks
(`PortHttpProtocol`, uvicorn's `http` protocol for the API), and an answer
that is complete goes out in one write.

The fast path takes a request for a sandbox's port (path form or host name,
as host_routing finds them; not a mounted port) that is HTTP/1.1, not an
upgrade, has no `Expect: 100-continue`, no `X-Forwarded-*` (a proxy in front:
uvicorn's proxy-header handling applies) and a body of known length up to
`port_proxy.REPLAYABLE`, and that finds its connection idle (not pipelined).
Everything else takes the ASGI path (routes_ports, port_proxy: WebSocket,
streamed request bodies). Both use the same authorization, keep-alive pool,
request head and error answers, so a client cannot tell which path served it.

Invariant: while a fast request runs it stands as the connection's `cycle` to
uvicorn (the attributes uvicorn reads: `response_complete`, `keep_alive`,
`disconnected`, `message_event`), so a request pipelined behind it waits in
uvicorn's queue, and `on_response_complete` starts it once the answer is out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import httptools
from starlette.datastructures import QueryParams
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from sandlot import errors
from sandlot.api import http1
from sandlot.api.host_routing import PortRoutedApp
from sandlot.api.http_errors import error_response, status_of
from sandlot.api.port_access import first_visit_cookie, port_registry
from sandlot.api.port_proxy import (
    REPLAYABLE,
    PortProxy,
    answer_headers,
    broken_exchange,
    connect,
    port_error,
    request_head,
    reset_on_close,
)

__all__ = ["PortHttpProtocol"]

log = logging.getLogger("sandlot.api.ports")

#: Headers that send a request the ASGI way (a proxy in front, or a body that streams).
_SLOW_HEADERS = ("transfer-encoding", "x-forwarded-for", "x-forwarded-proto", "forwarded")
_NO_QUERY = QueryParams()


#: What the fast path reads and calls of uvicorn's protocol, as a new one has them (its internals, stable so far).
_UVICORN_PARTS = (
    "cycle", "pipeline", "parser", "headers", "expect_100_continue", "flow", "server_state", "tasks",
    "connections", "client", "scheme", "loop", "transport", "on_response_complete", "handle_websocket_upgrade",
)  # fmt: skip
_warned = False


def uvicorn_fits(protocol: HttpToolsProtocol) -> bool:
    """Whether this uvicorn's protocol has every part the fast path uses; if not, its requests all take the
    ASGI path (a warning, once), so a new uvicorn makes ports slower, never broken."""
    global _warned
    missing = [name for name in _UVICORN_PARTS if not hasattr(protocol, name)]
    if missing and not _warned:
        _warned = True
        log.warning("uvicorn's protocol lacks %s: the port proxy's fast path is off", ", ".join(missing))
    return not missing


class _Target:
    """A request for a sandbox's port: which, where in it, and the credentials it brings."""

    def __init__(
        self, sandbox_id: str, port: int, prefix: str, target: str, raw: list[tuple[bytes, bytes]],
        headers: dict[str, str], query: QueryParams,
    ) -> None:  # fmt: skip
        self.sandbox_id, self.port, self.prefix, self.target = sandbox_id, port, prefix, target
        self.raw, self.headers, self.query = raw, headers, query


class _FastRequest:
    """One request on the fast path: what it asks for, and its state as uvicorn sees a cycle."""

    def __init__(self, where: _Target, method: str, keep_alive: bool) -> None:
        self.where, self.method = where, method
        self.body: list[bytes] = []
        self.task: asyncio.Task[None] | None = None
        self.answered = False  # the answer's head was written
        # (read by uvicorn: see the module's invariant)
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.message_event = asyncio.Event()


class PortHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with requests for a sandbox's port proxied from its parser where they
    may be (see the module's docstring); any other request is uvicorn's as before."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.config.app
        self._app: PortRoutedApp | None = None
        if isinstance(app, PortRoutedApp) and app.port_routing is not None and uvicorn_fits(self):
            self._app = app
        self._parsing: _FastRequest | None = None  # between its head and its end, in the parser
        self._running: _FastRequest | None = None  # until its answer is out

    # parser callbacks (uvicorn's, where the request is not for the fast path)
    def on_headers_complete(self) -> None:
        fast = self._claim()
        if fast is None:
            super().on_headers_complete()
            return
        self._parsing = self._running = fast
        self.cycle = fast  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if self._parsing is None:
            super().on_body(body)
        else:
            self._parsing.body.append(body)

    def on_message_complete(self) -> None:
        fast = self._parsing
        if fast is None:
            super().on_message_complete()
            return
        self._parsing = None
        fast.task = task = self.loop.create_task(self._serve(fast))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        fast = self._running
        super().connection_lost(exc)
        if fast is not None and fast.task is not None and not fast.response_complete:
            fast.task.cancel()  # (its client is gone: stop reading the sandbox's answer)

    def _target(self) -> _Target | None:
        """What the request whose head the parser just read asks of a sandbox's port, when it does so in a
        way the fast path serves (see the module's docstring)."""
        if self._app is None or self._app.port_routing is None:
            return None
        headers: dict[str, str] = {}
        for k, v in self.headers:  # (names lower-cased by uvicorn)
            headers.setdefault(k.decode("latin-1"), v.decode("latin-1"))
        if any(name in headers for name in _SLOW_HEADERS) or self.expect_100_continue:
            return None
        url = httptools.parse_url(self.url)
        route = self._app.port_routing.routes.locate(url.path.decode("latin-1"), lambda: headers)
        if route is None or route.mounted is not None:
            return None
        target = "/" + route.path.lstrip("/") + ("?" + url.query.decode("latin-1") if url.query else "")
        query = QueryParams(url.query) if url.query else _NO_QUERY
        return _Target(route.sandbox_id, route.port, route.prefix, target, list(self.headers), headers, query)

    def _claim(self) -> _FastRequest | None:
        """The request whose head the parser just read, when the fast path takes it."""
        if self._running is not None or self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            return None
        if self.parser.should_upgrade() or self.parser.get_http_version() != "1.1":
            return None
        where = self._target()
        if where is None:
            return None
        length = where.headers.get("content-length")
        if length is not None and not (length.isdigit() and int(length) <= REPLAYABLE):
            return None
        method = self.parser.get_method().decode("ascii")
        return _FastRequest(where, method, self.parser.should_keep_alive())

    def handle_websocket_upgrade(self) -> None:
        where = self._target()
        if where is None:
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        relay = _UpgradeRelay(self, where)
        self.transport.set_protocol(relay)
        relay.start()

    async def _serve(self, fast: _FastRequest) -> None:
        try:
            await self._proxy(fast)
        except asyncio.CancelledError:
            fast.keep_alive = False
        except Exception:
            log.exception("sandbox %s port %d: the proxied request failed", fast.where.sandbox_id, fast.where.port)
            if not fast.answered:
                with contextlib.suppress(Exception):
                    self._write_response(fast, error_response(500, "internal", "internal error in the port proxy"))
            fast.keep_alive = False
        finally:
            fast.response_complete = True
            self._running = None
            if not fast.keep_alive and not self.transport.is_closing():
                self.transport.close()
            self.on_response_complete()

    async def _proxy(self, fast: _FastRequest) -> None:
        assert self._app is not None
        where = fast.where
        registry = port_registry(self._app)
        try:
            sbx = await registry.authorize(where.sandbox_id, where.port, where.headers, where.query)
        except errors.SandlotError as exc:
            self._write_response(fast, error_response(status_of(exc), exc.code, exc.message, exc.field))
            return
        extra = await first_visit_cookie(registry, sbx.id, where.query, where.prefix)
        client = self.client[0] if self.client else None
        head = request_head(
            fast.method, where.target, where.raw, where.port, self.scheme or "http", client, chunked=False
        )
        proxy: PortProxy = self._app.state.port_proxy
        pool = proxy.pool(sbx)
        try:
            ex = await proxy.exchange(pool, where.port, head, b"".join(fast.body), fast.method, False)
        except errors.SandlotError as exc:
            self._write_response(fast, port_error(exc, sbx.id, where.port))
            return
        except (http1.ProtocolError, OSError) as exc:
            self._write_response(fast, broken_exchange(exc, sbx.id, where.port))
            return
        try:
            await self._relay(fast, ex, answer_headers(ex, extra))
        except (http1.ProtocolError, errors.SandlotError, OSError) as exc:
            log.info("sandbox %s port %d: response cut short: %s", sbx.id, where.port, exc)
            fast.keep_alive = False  # (its head is out: the client learns of it by the connection's end)
            await ex.pipe.close()
            return
        except BaseException:
            await ex.pipe.close()
            raise
        if ex.reusable:
            await pool.give_back(where.port, ex.pipe)
        else:
            await ex.pipe.close()

    def _head(self, fast: _FastRequest, status: int, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bool]:
        """The answer's head, and whether its body goes chunked (neither a length nor bodiless)."""
        fast.answered = True
        return _encode_head(self.server_state.default_headers, status, headers, fast.method, fast.keep_alive)

    def _write_response(self, fast: _FastRequest, resp: Response) -> None:
        """A whole answer of the API's own (an error): its head and body in one write."""
        head, _ = self._head(fast, resp.status_code, list(resp.raw_headers))
        self.transport.write(head if fast.method == "HEAD" else head + bytes(resp.body))

    async def _relay(self, fast: _FastRequest, ex: http1.Exchange, headers: list[tuple[bytes, bytes]]) -> None:
        """The server's answer on to the client: in one write when it is all in, else as it comes. Pieces
        of the body go out as they came in (`writelines`, each chunk framed where the answer is chunked):
        no copy of them is made here."""
        head, chunked = self._head(fast, ex.status, headers)
        out = [head]
        pieces = ex.pieces()
        async for got in pieces:
            _frame(out, got, chunked)
            if ex.finished:
                await anext(pieces, None)  # (its end: whether the connection may be reused)
                break
            self.transport.writelines(out)  # a streaming answer (it may go on for ever: a client that
            out = []  # leaves cancels this, see connection_lost)
            if self.flow.write_paused:
                await self.flow.drain()
        if chunked:
            out.append(b"0\r\n\r\n")
        self.transport.writelines(out)


def _frame(out: list[bytes], pieces: list[bytes], chunked: bool) -> None:
    if not chunked:
        out += pieces
        return
    for piece in pieces:
        if piece:
            out += (b"%x\r\n" % len(piece), piece, b"\r\n")


def _encode_head(
    default: list[tuple[bytes, bytes]], status: int, headers: list[tuple[bytes, bytes]], method: str, keep_alive: bool
) -> tuple[bytes, bool]:
    """An answer's head (uvicorn's `default` headers first, as uvicorn writes them), and whether its body
    goes chunked (it has neither a length nor no body at all)."""
    lines = [STATUS_LINE[status] if status in STATUS_LINE else b"HTTP/1.1 %d \r\n" % status]
    for name, value in [*default, *headers]:
        lines += [name, b": ", value, b"\r\n"]
    bodiless = method == "HEAD" or status in (204, 304) or status < 200
    chunked = not bodiless and not any(k == b"content-length" for k, _ in headers)
    if chunked:
        lines.append(b"transfer-encoding: chunked\r\n")
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines), chunked


class _UpgradeRelay(asyncio.Protocol):
    """A WebSocket to a sandbox's port, relayed as bytes: the client's handshake goes on to the server
    (credentials taken out), the server's answer comes back as it is, and from then on bytes pass both
    ways untouched (frames, masks, extensions and close are the two ends' business, as with any
    proxy that tunnels an upgrade). Measured on the bench's WebSocket rows, decoding and encoding every
    message (ws_relay, over ASGI) cost the API ~170 µs of CPU per round trip.

    It takes over the client's transport from uvicorn's protocol after the head of the upgrade was read;
    a request refused (credentials, a sandbox not running, nothing listening) is answered in HTTP, as
    the API answers any other request, and closed. Over the direct route the two transports are joined
    (`_Splice`: each one's bytes are written to the other from the loop's callback, no task in between);
    over the agent's tunnel two pumps move them.
    """

    #: Bytes from the client held while the server's side does not keep up (or is not connected yet).
    HELD_MAX = 1 << 20

    def __init__(self, http: PortHttpProtocol, where: _Target) -> None:
        self._http, self._where = http, where
        self._transport = http.transport
        self._connections = http.connections
        self._loop = http.loop
        self._pipe: http1.Pipe | None = None
        self._splice: _Splice | None = None  # once joined (the direct route)
        self._to_server: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._held = 0
        self._reading = True
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def start(self) -> None:
        self._connections.add(self)  # type: ignore[arg-type]
        self._task = self._loop.create_task(self._run())
        self._http.tasks.add(self._task)
        self._task.add_done_callback(self._http.tasks.discard)

    # asyncio.Protocol (the client's side)
    def data_received(self, data: bytes) -> None:
        if self._splice is not None:
            self._splice.write(data)
            return
        self._to_server.put_nowait(data)
        self._held += len(data)
        if self._held > self.HELD_MAX and self._reading:
            self._reading = False
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self._splice is not None:
            self._splice.write_eof()
        else:
            self._to_server.put_nowait(None)
        return True  # (the server's side may still answer: the transport is closed once it is done)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._connections.discard(self)
        self._writable.set()
        if self._splice is not None:
            self._splice.close_now()
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        self._writable.clear()
        if self._splice is not None:
            self._splice.pause_reading()

    def resume_writing(self) -> None:
        self._writable.set()
        if self._splice is not None:
            self._splice.resume_reading()

    def shutdown(self) -> None:
        """uvicorn's server stops."""
        self._transport.close()

    # (the server's side, joined)
    def from_server(self, data: bytes) -> None:
        self._transport.write(data)

    def server_eof(self) -> None:
        if self._transport.can_write_eof():
            self._transport.write_eof()

    def server_closed(self) -> None:
        self._transport.close()

    def pause_client(self) -> None:
        self._transport.pause_reading()

    def resume_client(self) -> None:
        self._transport.resume_reading()

    async def _run(self) -> None:
        try:
            pipe = await self._open()
            if pipe is None:
                return
            if isinstance(pipe, _Splice):
                self._join(pipe)
                return
            self._pipe = pipe
            to_client = asyncio.ensure_future(self._pump_to_client(pipe))
            to_server = asyncio.ensure_future(self._pump_to_server(pipe))
            try:
                await asyncio.wait({to_client, to_server}, return_when=asyncio.FIRST_COMPLETED)
                if to_server.done() and not to_client.done():
                    await to_client  # the client finished sending: the server may still answer
            finally:
                for t in (to_client, to_server):
                    t.cancel()
                for t in (to_client, to_server):
                    with contextlib.suppress(BaseException):
                        await t
        except asyncio.CancelledError:
            pass
        except Exception:
            w = self._where
            log.exception("sandbox %s port %d: the WebSocket relay failed", w.sandbox_id, w.port)
        if self._pipe is not None:
            await self._pipe.close()
        self._transport.close()

    def _join(self, splice: _Splice) -> None:
        """From now on each side's bytes go straight to the other (what the client sent so far first)."""
        if self.closed:
            splice.close_now()
            return
        while not self._to_server.empty():
            data = self._to_server.get_nowait()
            if data is None:
                splice.write_eof()
                break
            splice.write(data)
        self._splice = splice
        if not self._reading:
            self._reading = True
            self._transport.resume_reading()

    async def _open(self) -> http1.Pipe | _Splice | None:
        """The connection to the server, the client's handshake sent on; None once refused (answered)."""
        http, w = self._http, self._where
        assert http._app is not None
        registry = port_registry(http._app)
        try:
            sbx = await registry.authorize(w.sandbox_id, w.port, w.headers, w.query)
        except errors.SandlotError as exc:
            self._refuse(error_response(status_of(exc), exc.code, exc.message, exc.field))
            return None
        proxy: PortProxy = http._app.state.port_proxy

        async def splice_to(address: str, port: int) -> _Splice:
            _, splice = await self._loop.create_connection(lambda: _Splice(self), address, port)
            return splice

        try:
            pipe = await connect(sbx, w.port, proxy.pool(sbx).no_direct, direct=splice_to)
        except errors.SandlotError as exc:
            self._refuse(port_error(exc, sbx.id, w.port))
            return None
        client = http.client[0] if http.client else None
        upgrade = w.headers.get("upgrade", "websocket").encode("latin-1")
        scheme = http.scheme or "http"
        head = request_head("GET", w.target, w.raw, w.port, scheme, client, chunked=False, upgrade=upgrade)
        try:
            await pipe.send(head)
        except BaseException:
            await pipe.close()
            raise
        return pipe

    def _refuse(self, resp: Response) -> None:
        head, _ = _encode_head(self._http.server_state.default_headers, resp.status_code, list(resp.raw_headers),
                               "GET", keep_alive=False)  # fmt: skip
        self._transport.write(head + bytes(resp.body))
        self._transport.close()

    async def _pump_to_client(self, pipe: http1.Pipe) -> None:
        while data := await pipe.recv():
            self._transport.write(data)
            if not self._writable.is_set():
                await self._writable.wait()

    async def _pump_to_server(self, pipe: http1.Pipe) -> None:
        while (data := await self._to_server.get()) is not None:
            self._held -= len(data)
            await pipe.send(data)
            if not self._reading and self._held <= self.HELD_MAX // 2:
                self._reading = True
                self._transport.resume_reading()


class _Splice(asyncio.Protocol):
    """The server's side of a relayed WebSocket over the direct route, joined to the client's transport
    (`_UpgradeRelay`): what one sends is written to the other, each pausing the other's reads while its
    own writes back up. It ends with a reset, as every direct connection (port_proxy)."""

    def __init__(self, relay: _UpgradeRelay) -> None:
        self._relay = relay
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # (uvloop's is one in all but its class)
        reset_on_close(transport.get_extra_info("socket"))

    def data_received(self, data: bytes) -> None:
        self._relay.from_server(data)

    def eof_received(self) -> bool | None:
        self._relay.server_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.server_closed()

    def pause_writing(self) -> None:
        self._relay.pause_client()

    def resume_writing(self) -> None:
        self._relay.resume_client()

    # toward the server
    def write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def write_eof(self) -> None:
        if self._transport is not None and self._transport.can_write_eof():
            self._transport.write_eof()

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def close_now(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # as an http1.Pipe, until joined (the handshake's head)
    async def send(self, data: bytes) -> None:
        self.write(data)

    async def close(self) -> None:
        self.close_now()
