"""Routing of requests meant for a port of a sandbox, before the API's own routes.

A request is for port P of sandbox S when its Host header is `{P}-{S}.{domain}`
(the configured domain), or when a registered *finder* says so from its headers
(E2B's SDKs, for instance, name the target in `E2b-Sandbox-Id`/`-Port` headers
when they are given one URL for every sandbox). Such a request never reaches
the API's routes as it came:

- a port that has a *mount* (`HostRoutes.mount(port, prefix)`) is served by the
  API's own routes under `{prefix}/{S}/{P}{path}` (E2B's envd and code
  interpreter ports are implemented by the API itself, not by a process in the
  sandbox);
- any other port goes to the default handler: the port proxy.

The path form, `/sandboxes/{S}/ports/{P}{path}`, goes to the default handler
too, straight from here: the API's router (a hundred routes matched in turn,
then FastAPI's dependency machinery) was a large share of a proxied request's
cost on the port proxy's bench row, and the proxy needs none of it. For the
same reason the routing runs ahead of FastAPI itself (`PortRoutedApp`): its
middleware (errors, telemetry, body limits, each a coroutine per request) was
a tenth of the proxy's CPU per request, and a request for a port needs none
of it either (an error in the handler is still a 500, from uvicorn).

Everything else passes through untouched. The handler finds the target in
`scope["sandlot.port_target"]` as (sandbox id, port), the path in the sandbox
in `scope["path"]` (as the client wrote it, escapes kept, in `raw_path`), and
the prefix that was stripped from it (where a cookie
for the port belongs) in `scope["sandlot.port_prefix"]`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fastapi import FastAPI

__all__ = ["PATH_FORM", "PREFIX_KEY", "SCOPE_KEY", "Finder", "HostRoutes", "HostRoutingMiddleware", "PortRoutedApp"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: headers (names lower-cased) -> (sandbox id, port), or None when the request is not for a sandbox
Finder = Callable[[Mapping[str, str]], "tuple[str, int] | None"]

SCOPE_KEY = "sandlot.port_target"
PREFIX_KEY = "sandlot.port_prefix"
PATH_FORM = re.compile(r"^(?P<prefix>/sandboxes/(?P<sid>[^/]+)/ports/(?P<port>[0-9]{1,9}))(?P<rest>/.*)?$")


class HostRoutes:
    """How requests for a sandbox's port are recognised and who serves them."""

    def __init__(self, domain: str, default: ASGIApp) -> None:
        self.domain = domain.strip(".").lower()
        self.default = default
        self._mounts: dict[int, str] = {}
        self._finders: list[Finder] = []
        self._pattern = re.compile(
            r"^(?P<port>[0-9]{1,5})-(?P<sid>sb-[0-9a-z]{16})\." + re.escape(self.domain) + r"(:[0-9]{1,5})?$"
        )

    def mount(self, port: int, prefix: str) -> None:
        """Serve port `port` of every sandbox with the API's routes under `{prefix}/{id}/{port}`."""
        self._mounts[port] = prefix.rstrip("/")

    def add_finder(self, finder: Finder) -> None:
        """Also treat requests as sandbox-bound when `finder` names a target from their headers."""
        self._finders.append(finder)

    def host_for(self, sandbox_id: str, port: int) -> str:
        return f"{port}-{sandbox_id}.{self.domain}"

    def match(self, host: str) -> tuple[str, int] | None:
        m = self._pattern.match(host.lower())
        if m is None:
            return None
        return m["sid"], int(m["port"])

    def target(self, headers: Mapping[str, str]) -> tuple[str, int] | None:
        host = headers.get("host", "")
        found = self.match(host) if host else None
        for finder in self._finders:
            if found is not None:
                break
            found = finder(headers)
        return found

    def mounted_path(self, target: tuple[str, int], path: str) -> str | None:
        prefix = self._mounts.get(target[1])
        return None if prefix is None else f"{prefix}/{target[0]}/{target[1]}{path}"


class HostRoutingMiddleware:
    def __init__(self, app: ASGIApp, routes: HostRoutes) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        m = PATH_FORM.match(scope.get("path", "")) if scope["type"] in ("http", "websocket") else None
        if m is not None:
            raw = PATH_FORM.match(scope.get("raw_path", b"").decode("latin-1"))
            scope = dict(scope)
            scope[SCOPE_KEY] = (m["sid"], int(m["port"]))
            scope[PREFIX_KEY] = m["prefix"] + "/"
            scope["path"] = m["rest"] or "/"
            scope["raw_path"] = (raw["rest"] or "/").encode("latin-1") if raw else scope["path"].encode()
            await self.routes.default(scope, receive, send)
            return
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            target = self.routes.target(headers)
            if target is not None:
                scope = dict(scope)
                scope[SCOPE_KEY] = target
                scope[PREFIX_KEY] = "/"
                path = self.routes.mounted_path(target, scope.get("path", "/"))
                if path is None:
                    await self.routes.default(scope, receive, send)
                    return
                scope["path"] = path
                scope["raw_path"] = path.encode()
        await self.app(scope, receive, send)


class PortRoutedApp(FastAPI):
    """A FastAPI app whose HTTP and WebSocket requests pass `port_routing` first, ahead of FastAPI's own
    middleware; `route_ports` installs it."""

    port_routing: HostRoutingMiddleware | None = None
    #: the protocol uvicorn serves this app with (`http=`): port_front's fast path, once installed
    uvicorn_protocol: type | str = "auto"

    def route_ports(self, routes: HostRoutes) -> None:
        async def rest(scope: Scope, receive: Receive, send: Send) -> None:
            await FastAPI.__call__(self, scope, receive, send)

        self.port_routing = HostRoutingMiddleware(rest, routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.port_routing is None or scope["type"] == "lifespan":
            await super().__call__(scope, receive, send)
        else:
            await self.port_routing(scope, receive, send)
