"""MCP over streamable HTTP at `/mcp`: Sandlot's MCP tools for remote clients, behind an API key.

The tools are the same as `sandlot mcp` serves on stdio (`sandlot.mcp`): a
client of this API, calling it through the SDK. Here each call uses the key
the MCP client sent (`X-API-Key` or `Authorization: Bearer`) against this very
server (the local address the request came in on), so an MCP client reaches
exactly what its key reaches. A request without a valid key is answered 401
`{code, message}` before the MCP layer sees it.

Stateless mode: every request stands alone (no session to lose across a
restart or between replicas). The `mcp` package is loaded, and its session
manager started, on the first request to `/mcp`: importing it costs a server
start as much as FastAPI does, and most servers never serve MCP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sandlot import errors
from sandlot.api.auth import authenticated_key
from sandlot.api.http_errors import error_response, status_of

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

__all__ = ["install"]

PATH = "/mcp"


class _Endpoint:
    """ASGI: authenticate, then hand the request to the MCP session manager (started on first use).

    Invariant: `_manager` is set only while `_holder` (the task that entered the
    manager's `run()` context, as anyio wants one task to enter and leave it) runs.
    """

    def __init__(self) -> None:
        self._manager: StreamableHTTPSessionManager | None = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._holder: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from sandlot.mcp.tools import SCOPE_KEY, SCOPE_URL

        request = Request(scope, receive)
        try:
            _, key = await authenticated_key(request)
        except errors.SandlotError as exc:
            await error_response(status_of(exc), exc.code, exc.message)(scope, receive, send)
            return
        scope[SCOPE_URL] = _local_url(scope)
        scope[SCOPE_KEY] = key
        manager = await self._started()
        await manager.handle_request(scope, receive, send)

    async def _started(self) -> StreamableHTTPSessionManager:
        async with self._lock:
            if self._manager is None:
                self._manager = await self._start()
            return self._manager

    async def _start(self) -> StreamableHTTPSessionManager:
        from mcp.server.transport_security import TransportSecuritySettings

        from sandlot.mcp import build_server

        server = build_server()
        # The key, not the Host header, guards this endpoint (DNS rebinding buys an attacker no key).
        server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        manager = server.session_manager
        running = asyncio.Event()

        async def hold() -> None:
            async with manager.run():
                running.set()
                await self._stop.wait()

        self._holder = asyncio.create_task(hold())
        waiter = asyncio.ensure_future(running.wait())
        await asyncio.wait({waiter, self._holder}, return_when=asyncio.FIRST_COMPLETED)
        if not running.is_set():
            waiter.cancel()
            await self._holder  # raises what stopped the manager from starting
        return manager

    async def close(self) -> None:
        self._stop.set()
        if self._holder is not None:
            with contextlib.suppress(Exception):
                await self._holder


def _local_url(scope: Scope) -> str:
    """This server, at the address and port the request reached (so the tools' calls stay on this host)."""
    host, port = scope.get("server") or ("127.0.0.1", 80)
    if ":" in str(host):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def install(app: FastAPI) -> None:
    """Serve `/mcp`; a session manager started by a request stops with the app (wrapped around its lifespan)."""
    endpoint = _Endpoint()
    app.router.routes.append(Route(PATH, endpoint, include_in_schema=False))
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        try:
            async with inner(a) as state:
                yield state
        finally:
            await endpoint.close()

    app.router.lifespan_context = lifespan
