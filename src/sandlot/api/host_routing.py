"""Host-name routing: `{port}-{sandbox id}.{domain}` reaches that port of that sandbox.

`HostRoutingMiddleware` wraps the whole API app. A request whose Host header
matches the pattern for the configured domain never reaches the API's routes:
it goes to the handler registered for its port in `HostRoutes`, or else to the
default handler (the port proxy). Everything else passes through untouched.

The hook: `app.state.host_routes.register(port, asgi_app)` sends one port of
every sandbox to another ASGI app (E2B's reserved ports, for instance). That
app finds the target in `scope["sandlot.port_target"]` as (sandbox id, port).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["SCOPE_KEY", "HostRoutes", "HostRoutingMiddleware"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "sandlot.port_target"


class HostRoutes:
    """Which ASGI app serves `{port}-{id}.{domain}` requests, per port; `default` for the rest."""

    def __init__(self, domain: str, default: ASGIApp) -> None:
        self.domain = domain.strip(".").lower()
        self.default = default
        self._by_port: dict[int, ASGIApp] = {}
        self._pattern = re.compile(
            r"^(?P<port>[0-9]{1,5})-(?P<sid>sb-[0-9a-z]{16})\." + re.escape(self.domain) + r"(:[0-9]{1,5})?$"
        )

    def register(self, port: int, app: ASGIApp) -> None:
        """Serve port `port` of every sandbox's host name with `app` instead of the port proxy."""
        self._by_port[port] = app

    def host_for(self, sandbox_id: str, port: int) -> str:
        return f"{port}-{sandbox_id}.{self.domain}"

    def match(self, host: str) -> tuple[str, int] | None:
        m = self._pattern.match(host.lower())
        if m is None:
            return None
        return m["sid"], int(m["port"])

    def app_for(self, port: int) -> ASGIApp:
        return self._by_port.get(port, self.default)


class HostRoutingMiddleware:
    def __init__(self, app: ASGIApp, routes: HostRoutes) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
            target = self.routes.match(host) if host else None
            if target is not None:
                scope = dict(scope)
                scope[SCOPE_KEY] = target
                await self.routes.app_for(target[1])(scope, receive, send)
                return
        await self.app(scope, receive, send)
