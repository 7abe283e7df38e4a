"""Network and exposed ports: a sandbox's policy, its port access, and the proxy itself.

- `GET/PUT /sandboxes/{id}/network`: the policy (changed live) and port access.
- `PUT/DELETE /sandboxes/{id}/public-ports/{port}`: open a port to anyone / close it again.
- `/sandboxes/{id}/ports/{port}/{path}` (any method, and WebSocket): the port itself.
- `{port}-{id}.{domain}` host names reach the same ports (see host_routing).

`install(app, domain)` adds all of it to the API app.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Request, WebSocket
from starlette.responses import Response

from sandlot import errors
from sandlot.api.deps import SandboxId, Svc, Who
from sandlot.api.host_routing import SCOPE_KEY, HostRoutes, HostRoutingMiddleware, Receive, Scope, Send
from sandlot.api.http_errors import error_response, status_of
from sandlot.api.port_access import TOKEN_QUERY, PortAccessRegistry
from sandlot.api.port_proxy import PortProxy
from sandlot.models import ErrorBody, NetworkInfo, NetworkSettings
from sandlot.node.protocol import NetworkPolicy, SandboxStatus

__all__ = ["install", "network_info", "port_registry", "router"]

_ERRORS: dict[int | str, dict[str, object]] = {s: {"model": ErrorBody} for s in (400, 401, 404, 409, 422)}
router = APIRouter(tags=["network"], responses=_ERRORS)
Port = Annotated[int, Path(ge=1, le=65535, description="a TCP port inside the sandbox")]
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def port_registry(app: FastAPI) -> PortAccessRegistry:
    reg = getattr(app.state, "port_access", None)
    if reg is None:
        svc = app.state.service
        reg = app.state.port_access = PortAccessRegistry(svc.node, app.state.store, svc)
    assert isinstance(reg, PortAccessRegistry)
    return reg


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


async def _serve_http(request: Request, sandbox_id: str, port: int, path: str, cookie_path: str) -> Response:
    registry = port_registry(request.app)
    try:
        sbx = await registry.authorize(sandbox_id, port, request.headers, request.query_params)
    except errors.SandlotError as exc:
        return error_response(status_of(exc), exc.code, exc.message, exc.field)
    proxy: PortProxy = request.app.state.port_proxy
    response = await proxy.http(request, sbx, port, path)
    token = (await registry.get(sbx.id)).token
    if request.query_params.get(TOKEN_QUERY) == token:  # a browser's first visit: keep it in a cookie
        response.set_cookie(TOKEN_QUERY, token, path=cookie_path, httponly=True, samesite="lax")
    return response


async def _serve_ws(ws: WebSocket, sandbox_id: str, port: int, path: str) -> None:
    try:
        sbx = await port_registry(ws.app).authorize(sandbox_id, port, ws.headers, ws.query_params)
    except errors.SandlotError as exc:
        await ws.close(code=1008 if status_of(exc) in (401, 403, 404) else 1011, reason=exc.message[:120])
        return
    proxy: PortProxy = ws.app.state.port_proxy
    await proxy.websocket(ws, sbx, port, path)


@router.api_route("/sandboxes/{sandbox_id}/ports/{port}/{path:path}", methods=_METHODS, include_in_schema=False)
async def port_http(sandbox_id: str, port: int, path: str, request: Request) -> Response:
    return await _serve_http(request, sandbox_id, port, path, f"/sandboxes/{sandbox_id}/ports/{port}/")


@router.api_route("/sandboxes/{sandbox_id}/ports/{port}", methods=_METHODS, include_in_schema=False)
async def port_http_root(sandbox_id: str, port: int, request: Request) -> Response:
    return await _serve_http(request, sandbox_id, port, "", f"/sandboxes/{sandbox_id}/ports/{port}/")


@router.websocket("/sandboxes/{sandbox_id}/ports/{port}/{path:path}")
async def port_ws(ws: WebSocket, sandbox_id: str, port: int, path: str) -> None:
    await _serve_ws(ws, sandbox_id, port, path)


@router.websocket("/sandboxes/{sandbox_id}/ports/{port}")
async def port_ws_root(ws: WebSocket, sandbox_id: str, port: int) -> None:
    await _serve_ws(ws, sandbox_id, port, "")


def _host_routed(app: FastAPI) -> object:
    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        sandbox_id, port = scope[SCOPE_KEY]
        scope["app"] = app
        path = scope.get("path", "/")
        if scope["type"] == "http":
            request = Request(scope, receive)
            response = await _serve_http(request, sandbox_id, port, path, "/")
            await response(scope, receive, send)
        else:
            await _serve_ws(WebSocket(scope, receive, send), sandbox_id, port, path)

    return serve


def install(app: FastAPI, domain: str) -> None:
    """Add the network routes, the port proxy and host-name routing to the API app."""
    app.state.port_proxy = PortProxy()
    routes = HostRoutes(domain, _host_routed(app))  # type: ignore[arg-type]
    app.state.host_routes = routes
    app.include_router(router)
    app.add_middleware(HostRoutingMiddleware, routes=routes)
