"""Network and exposed ports: a sandbox's policy, its port access, and the proxy itself.

- `GET/PUT /sandboxes/{id}/network`: the policy (changed live) and port access.
- `PUT/DELETE /sandboxes/{id}/public-ports/{port}`: open a port to anyone / close it again.
- `/sandboxes/{id}/ports/{port}/{path}` (any method, and WebSocket): the port itself,
  and `{port}-{id}.{domain}` host names reach the same ports: both are routed
  by host_routing, ahead of the API's router.

`install(app, domain)` adds all of it to the API app, with the fast path that serves plain
port requests from uvicorn's parser (port_front).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Request, WebSocket
from starlette.datastructures import Headers, QueryParams

from sandlot import errors
from sandlot.api.deps import SandboxId, Svc, Who
from sandlot.api.host_routing import PREFIX_KEY, SCOPE_KEY, HostRoutes, PortRoutedApp, Receive, Scope, Send
from sandlot.api.http_errors import error_response, status_of
from sandlot.api.port_access import first_visit_cookie, port_registry
from sandlot.api.port_front import PortHttpProtocol
from sandlot.api.port_proxy import PortProxy
from sandlot.models import ErrorBody, NetworkInfo, NetworkSettings
from sandlot.node.protocol import NetworkPolicy, SandboxStatus

__all__ = ["install", "network_info", "router"]

_ERRORS: dict[int | str, dict[str, object]] = {s: {"model": ErrorBody} for s in (400, 401, 404, 409, 422)}
router = APIRouter(tags=["network"], responses=_ERRORS)
Port = Annotated[int, Path(ge=1, le=65535, description="a TCP port inside the sandbox")]


async def network_info(app: FastAPI, sbx: SandboxStatus) -> NetworkInfo:
    access = await port_registry(app).get(sbx.sandbox_id)
    routes: HostRoutes = app.state.host_routes
    return NetworkInfo(
        **sbx.network,
        address=sbx.address,
        resolved=sbx.resolved,
        access_token=access.token,
        public_ports=sorted(access.public),
        port_host=routes.host_for(sbx.sandbox_id, 0).replace("0-", "{port}-", 1),
    )


@router.get("/sandboxes/{sandbox_id}/network", response_model=NetworkInfo)
async def get_network(sandbox_id: SandboxId, who: Who, svc: Svc, request: Request) -> NetworkInfo:
    """The sandbox's network policy, address, and what opens its ports."""
    return await network_info(request.app, await svc.live_status(who, sandbox_id))


@router.put("/sandboxes/{sandbox_id}/network", response_model=NetworkInfo)
async def set_network(
    sandbox_id: SandboxId, body: NetworkSettings, who: Who, svc: Svc, request: Request
) -> NetworkInfo:
    """Replace the policy of a running sandbox; it applies at once (no restart)."""
    sbx = await svc.live_status(who, sandbox_id)
    return await network_info(
        request.app, await svc.node.set_network(sbx.sandbox_id, NetworkPolicy.parse(body.model_dump()))
    )


@router.put("/sandboxes/{sandbox_id}/public-ports/{port}", response_model=NetworkInfo)
async def make_public(sandbox_id: SandboxId, port: Port, who: Who, svc: Svc, request: Request) -> NetworkInfo:
    """Anyone may reach this port now, without a token."""
    sbx = await svc.live_status(who, sandbox_id)
    await port_registry(request.app).set_public(sbx.sandbox_id, port, True)
    return await network_info(request.app, sbx)


@router.delete("/sandboxes/{sandbox_id}/public-ports/{port}", response_model=NetworkInfo)
async def make_private(sandbox_id: SandboxId, port: Port, who: Who, svc: Svc, request: Request) -> NetworkInfo:
    """The port needs the access token (or a team key) again."""
    sbx = await svc.live_status(who, sandbox_id)
    await port_registry(request.app).set_public(sbx.sandbox_id, port, False)
    return await network_info(request.app, sbx)


async def _serve_http(scope: Scope, receive: Receive, send: Send, sandbox_id: str, port: int) -> None:
    registry = port_registry(scope["app"])
    headers = Headers(scope=scope)  # (no Request: the proxy reads the scope as it is)
    query = QueryParams(scope.get("query_string", b""))
    try:
        sbx = await registry.authorize(sandbox_id, port, headers, query)
    except errors.SandlotError as exc:
        await error_response(status_of(exc), exc.code, exc.message, exc.field)(scope, receive, send)
        return
    extra = await first_visit_cookie(registry, sbx.id, query, scope[PREFIX_KEY])
    proxy: PortProxy = scope["app"].state.port_proxy
    path = scope.get("raw_path", b"").decode("latin-1") or scope.get("path", "/")  # (escapes kept)
    await proxy.http(scope, receive, send, sbx, port, path, extra)


async def _serve_ws(ws: WebSocket, sandbox_id: str, port: int, path: str) -> None:
    try:
        sbx = await port_registry(ws.app).authorize(sandbox_id, port, ws.headers, ws.query_params)
    except errors.SandlotError as exc:
        await ws.close(code=1008 if status_of(exc) in (401, 403, 404) else 1011, reason=exc.message[:120])
        return
    proxy: PortProxy = ws.app.state.port_proxy
    await proxy.websocket(ws, sbx, port, path)


def _port_handler(app: FastAPI) -> object:
    """What serves a request for a sandbox's port, as host_routing found it (host name or path form)."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        sandbox_id, port = scope[SCOPE_KEY]
        scope["app"] = app
        if scope["type"] == "http":
            await _serve_http(scope, receive, send, sandbox_id, port)
        else:
            await _serve_ws(WebSocket(scope, receive, send), sandbox_id, port, scope.get("path", "/"))

    return serve


def install(app: PortRoutedApp, domain: str) -> None:
    """Add the network routes, the port proxy and host-name routing to the API app."""
    app.state.port_proxy = PortProxy()
    routes = HostRoutes(domain, _port_handler(app))  # type: ignore[arg-type]
    app.state.host_routes = routes
    app.include_router(router)
    app.route_ports(routes)
    app.uvicorn_protocol = PortHttpProtocol
