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
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

__all__ = [
    "PATH_FORM", "PREFIX_KEY", "SCOPE_KEY", "Finder", "HostRoutes", "HostRoutingMiddleware", "PortRoute",
    "PortRoutedApp",
]  # fmt: skip

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: headers (names lower-cased) -> (sandbox id, port), or None when the request is not for a sandbox
Finder = Callable[[Mapping[str, str]], "tuple[str, int] | None"]

SCOPE_KEY = "sandlot.port_target"
PREFIX_KEY = "sandlot.port_prefix"
PATH_FORM = re.compile(r"^(?P<prefix>/sandboxes/(?P<sid>[^/]+)/ports/(?P<port>[0-9]{1,9}))(?P<rest>/.*)?$")


@dataclass(frozen=True, slots=True)
class PortRoute:
    """Where a request for a sandbox's port goes, as `HostRoutes.locate` found it."""

    sandbox_id: str
    port: int
    #: what was taken off the front of the request's path: `/sandboxes/{S}/ports/{P}/`, or `/` for a host name
    prefix: str
    #: the path in the sandbox
    path: str
    #: for a mounted port, the path of the API's own route that serves it (else None: the port proxy)
    mounted: str | None

    def raw_path(self, raw: bytes) -> bytes:
        """The path to pass on as the client wrote it (escapes kept), from the request's raw path."""
        if self.mounted is not None:
            return self.mounted.encode()
        if self.prefix == "/":
            return raw or self.path.encode()
        m = PATH_FORM.match(raw.decode("latin-1"))
        return (m["rest"] or "/").encode("latin-1") if m else self.path.encode()


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

    def locate(self, path: str, headers: Callable[[], Mapping[str, str]]) -> PortRoute | None:
        """Where a request for `path` goes when it is for a sandbox's port (path form first, then the
        host name and the finders, from `headers()`, names lower-cased, read only when needed); else None."""
        m = PATH_FORM.match(path)
        if m is not None:
            return PortRoute(m["sid"], int(m["port"]), m["prefix"] + "/", m["rest"] or "/", None)
        target = self.target(headers())
        if target is None:
            return None
        return PortRoute(target[0], target[1], "/", path, self.mounted_path(target, path))


class HostRoutingMiddleware:
    def __init__(self, app: ASGIApp, routes: HostRoutes) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        route = self.routes.locate(scope.get("path", ""), lambda: _headers(scope))
        if route is None:
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope[SCOPE_KEY] = (route.sandbox_id, route.port)
        scope[PREFIX_KEY] = route.prefix
        scope["path"] = route.mounted or route.path
        scope["raw_path"] = route.raw_path(scope.get("raw_path", b""))
        await (self.app if route.mounted is not None else self.routes.default)(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


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
