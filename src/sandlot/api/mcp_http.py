"""MCP over streamable HTTP at `/mcp`: Sandlot's MCP tools for remote clients, behind an API key.

The tools are the same as `sandlot mcp` serves on stdio (`sandlot.mcp`): a
client of this API, calling it through the SDK. Here each call uses the key
the MCP client sent (`X-API-Key` or `Authorization: Bearer`) against this very
server (the local address the request came in on), so an MCP client reaches
exactly what its key reaches. A request without a valid key is answered 401
`{code, message}` before the MCP layer sees it.

Stateless mode: every request stands alone (no session to lose across a
restart or between replicas).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sandlot import errors
from sandlot.api.auth import authenticated_key
from sandlot.api.http_errors import error_response, status_of
from sandlot.mcp import build_server
from sandlot.mcp.tools import SCOPE_KEY, SCOPE_URL

__all__ = ["install"]

PATH = "/mcp"


class _Endpoint:
    """ASGI: authenticate, then hand the request to the MCP session manager."""

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            _, key = await authenticated_key(request)
        except errors.SandlotError as exc:
            await error_response(status_of(exc), exc.code, exc.message)(scope, receive, send)
            return
        scope[SCOPE_URL] = _local_url(scope)
        scope[SCOPE_KEY] = key
        await self.manager.handle_request(scope, receive, send)


def _local_url(scope: Scope) -> str:
    """This server, at the address and port the request reached (so the tools' calls stay on this host)."""
    host, port = scope.get("server") or ("127.0.0.1", 80)
    if ":" in str(host):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def install(app: FastAPI) -> None:
    """Serve `/mcp`; its session manager runs for as long as the app (wrapped around the app's lifespan)."""
    server = build_server()
    # The key, not the Host header, guards this endpoint (DNS rebinding buys an attacker no key).
    server.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager
    app.router.routes.append(Route(PATH, _Endpoint(manager), include_in_schema=False))
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with manager.run(), inner(a) as state:
            yield state

    app.router.lifespan_context = lifespan
