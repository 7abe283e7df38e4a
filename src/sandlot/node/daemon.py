"""`sandlot node`: one host's node, served over HTTP to the fleet's API replicas.

`node_app(local, token)` serves a `LocalNode` under `/v1` with the mapping of
`NodeClient` (node/client.py's docstring); `RemoteNode` (node/remote.py) is
its client. Every request carries `Authorization: Bearer <node token>`, the
secret shared by the fleet; a request without it is refused before anything
else is read. Errors answer `{code, message, field}` with the API's statuses
(api/http_errors.py), so `RemoteNode` raises the exception the node raised.

A sandbox's data plane is the WebSocket `/v1/sandboxes/{id}/agent`, bridged to
its agent's connection by `agent/relay.py`.

With `api_url`, the daemon joins the fleet (fleet/membership.py): it tells the
replicas where it listens, recovers the sandboxes the fleet's records place on
it, and heartbeats its capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandlot import errors
from sandlot.agent.client import AgentConnection
from sandlot.agent.relay import CHANGED, relay
from sandlot.api.http_errors import install_handlers
from sandlot.node.client import TemplateEvents
from sandlot.node.local import LocalNode
from sandlot.node.protocol import (
    NetworkPolicy,
    RegistryAuth,
    TemplateStart,
    spec_from_dict,
)

__all__ = ["event_line", "node_app", "run_daemon"]

log = logging.getLogger("sandlot.node")

#: how long a request that changed a sandbox waits for its notices to leave (a replica's full WebSocket)
NOTICE_WAIT_S = 5.0


def event_line(event: BaseModel | BaseException) -> bytes:
    """One NDJSON line of a template stream: an event, or the error that ended it."""
    if isinstance(event, BaseException):
        code = errors.code_of(event)
        return json.dumps({"type": "error", "code": code, "message": str(event)}).encode() + b"\n"
    return event.model_dump_json().encode() + b"\n"


async def _ndjson(events: TemplateEvents) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield event_line(event)
    except errors.SandlotError as exc:
        yield event_line(exc)
    except Exception as exc:
        log.exception("template stream failed")
        yield event_line(errors.InternalError(str(exc)))


def _checker(token: str) -> Callable[[Request], Awaitable[None]]:
    expected = f"Bearer {token}".encode()

    async def check(request: Request) -> None:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise errors.AuthenticationError("this node answers only its fleet (a valid node token)")

    return check


def _router(local: LocalNode) -> APIRouter:
    r = APIRouter()

    @r.get("/info")
    async def info() -> Any:
        return (await local.info()).model_dump()

    @r.get("/runtimes")
    async def runtimes() -> Any:
        return await local.runtimes()

    @r.post("/prepare")
    async def prepare(body: dict[str, Any]) -> Any:
        await local.prepare(body.get("template"))
        return {}

    @r.post("/sandboxes")
    async def create(body: dict[str, Any]) -> Any:
        return (await local.create(spec_from_dict(body).validate())).model_dump()

    @r.get("/sandboxes/{sandbox_id}")
    async def status(sandbox_id: str) -> Any:
        st = await local.status(sandbox_id)
        if st is None and local.recovering:  # restarted, and replicas still take it for live: never "gone"
            raise errors.NodeUnreachableError(f"node {local.name} is recovering its sandboxes after a restart")
        if st is None:
            raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found on node {local.name}")
        return st.model_dump()

    @r.delete("/sandboxes/{sandbox_id}")
    async def kill(sandbox_id: str) -> Any:
        await local.kill(sandbox_id)
        return {}

    @r.post("/sandboxes/{sandbox_id}/{action}")
    async def act(sandbox_id: str, action: str, body: dict[str, Any]) -> Any:
        if action == "pause":
            await local.pause(sandbox_id, memory=bool(body.get("memory")))
        elif action == "resume":
            await local.resume(sandbox_id)
        elif action == "hibernate":
            await local.hibernate(sandbox_id, memory=bool(body.get("memory", True)))
        elif action == "file-metadata":
            return await local.file_metadata(sandbox_id, [str(p) for p in body.get("paths", [])])
        elif action == "wake":
            await local.wake(sandbox_id)
        elif action == "checkpoints":
            ck = await local.checkpoint(sandbox_id, str(body.get("name", "")), memory=bool(body.get("memory")))
            return ck.model_dump()
        elif action == "restore":
            await local.restore(sandbox_id, str(body.get("checkpoint_id", "")))
        else:
            raise errors.NotFoundError(f"no sandbox action {action!r}")
        return {}

    @r.get("/sandboxes/{sandbox_id}/metrics")
    async def metrics(sandbox_id: str, start: float | None = None, end: float | None = None) -> Any:
        return [m.model_dump() for m in await local.metrics(sandbox_id, start, end)]

    @r.put("/sandboxes/{sandbox_id}/file-metadata")
    async def set_file_metadata(sandbox_id: str, body: dict[str, Any]) -> Any:
        await local.set_file_metadata(sandbox_id, str(body["path"]), dict(body.get("metadata") or {}))
        return {}

    @r.get("/ended/{sandbox_id}")
    async def exit_reason(sandbox_id: str) -> Any:
        reason = await local.exit_reason(sandbox_id)
        if reason is None:
            raise errors.SandboxNotFoundError(f"node {local.name} knows of no end of sandbox {sandbox_id}")
        return {"reason": reason}

    @r.post("/exited")
    async def exited() -> Any:
        return await local.exited()

    @r.put("/sandboxes/{sandbox_id}/network")
    async def set_network(sandbox_id: str, body: dict[str, Any]) -> Any:
        return (await local.set_network(sandbox_id, NetworkPolicy.parse(body))).model_dump()

    @r.get("/sandboxes/{sandbox_id}/export")
    async def export_sandbox(sandbox_id: str, tag: str) -> Any:
        return StreamingResponse(await local.export_sandbox(sandbox_id, tag), media_type="application/x-tar")

    @r.get("/sandboxes/{sandbox_id}/disk")
    async def export_disk(sandbox_id: str) -> Any:
        return StreamingResponse(await local.export_disk(sandbox_id), media_type="application/octet-stream")

    @r.put("/sandboxes/{sandbox_id}/disk")
    async def import_disk(sandbox_id: str, request: Request) -> Any:
        return (await local.import_disk(sandbox_id, request.stream())).model_dump()

    @r.post("/checkpoints/{checkpoint_id}/fork")
    async def fork(checkpoint_id: str, body: dict[str, Any]) -> Any:
        return [s.model_dump() for s in await local.fork(checkpoint_id, int(body.get("count", 1)))]

    @r.get("/checkpoints")
    async def list_checkpoints(sandbox_id: str | None = None) -> Any:
        return [c.model_dump() for c in await local.list_checkpoints(sandbox_id)]

    @r.get("/checkpoints/{checkpoint_id}")
    async def get_checkpoint(checkpoint_id: str) -> Any:
        return (await local.get_checkpoint(checkpoint_id)).model_dump()

    @r.delete("/checkpoints/{checkpoint_id}")
    async def delete_checkpoint(checkpoint_id: str) -> Any:
        await local.delete_checkpoint(checkpoint_id)
        return {}

    @r.get("/teams/{team}/volumes")
    async def list_volumes(team: str) -> Any:
        return [v.model_dump() for v in await local.list_volumes(team)]

    @r.post("/teams/{team}/volumes/{name}")
    async def create_volume(team: str, name: str, body: dict[str, Any]) -> Any:
        return (await local.create_volume(team, name, int(body.get("size_mb", 1024)))).model_dump()

    @r.get("/teams/{team}/volumes/{name}")
    async def find_volume(team: str, name: str) -> Any:
        return (await local.find_volume(team, name)).model_dump()

    @r.delete("/teams/{team}/volumes/{name}")
    async def delete_volume(team: str, name: str) -> Any:
        await local.delete_volume(team, name)
        return {}

    @r.get("/templates")
    async def list_templates() -> Any:
        return [t.model_dump() for t in await local.list_templates()]

    @r.post("/templates/fetch")
    async def fetch_template(body: dict[str, Any]) -> Any:
        auth = RegistryAuth.model_validate(body.get("auth") or {})
        await local.fetch_template(str(body["ref"]), auth, team=body.get("team"))
        return {}

    @r.post("/templates/pull")
    async def pull_template(body: dict[str, Any]) -> Any:
        auth = RegistryAuth.model_validate(body["auth"]) if body.get("auth") else None
        events = await local.pull_template(
            str(body["ref"]), name=body.get("name"), platform=body.get("platform"), auth=auth, team=body.get("team")
        )
        return StreamingResponse(_ndjson(events), media_type="application/x-ndjson")

    @r.post("/templates/build")
    async def build_template(
        request: Request, name: str, dockerfile: str = "Dockerfile", network: str = "full", team: str | None = None
    ) -> Any:
        args = json.loads(request.headers.get("x-build-args") or "{}")
        if network not in ("full", "none"):
            raise errors.InvalidArgumentError(f"network must be full or none, got {network!r}", field="network")
        events = await local.build_template(
            name,
            request.stream(),
            dockerfile=dockerfile,
            build_args=args,
            network="none" if network == "none" else "full",
            team=team,
        )
        return StreamingResponse(_ndjson(events), media_type="application/x-ndjson")

    @r.post("/templates/import")
    async def import_template(request: Request, name: str, tag: str | None = None, team: str | None = None) -> Any:
        events = await local.import_template(name, request.stream(), tag=tag, team=team)
        return StreamingResponse(_ndjson(events), media_type="application/x-ndjson")

    @r.get("/templates/{name:path}/export")
    async def export_template(name: str, tag: str) -> Any:
        return StreamingResponse(await local.export_template(name, tag), media_type="application/x-tar")

    @r.get("/templates/{name:path}")
    async def get_template(name: str) -> Any:
        t = await local.get_template(name)
        if t is None:
            raise errors.ImageNotFoundError(f"template {name!r} not found on node {local.name}")
        return t.model_dump()

    @r.put("/templates/{name:path}/start")
    async def set_template_start(name: str, request: Request) -> Any:
        raw = await request.json()
        start = TemplateStart.model_validate(raw) if raw is not None else None
        return (await local.set_template_start(name, start)).model_dump()

    @r.delete("/templates/{name:path}")
    async def delete_template(name: str) -> Any:
        await local.delete_template(name)
        return {}

    @r.get("/pools")
    async def list_pools() -> Any:
        return [p.model_dump() for p in await local.list_pools()]

    @r.put("/pools/{template}")
    async def set_pool(template: str, body: dict[str, Any]) -> Any:
        return (await local.set_pool(template, body.get("runtime"), int(body.get("size", 0)))).model_dump()

    @r.post("/recover")
    async def recover(body: dict[str, Any]) -> Any:
        wanted = {sid: spec_from_dict(spec) for sid, spec in body.items()}
        return (await local.recover(wanted)).model_dump()

    return r


class NoticesFirst:
    """A change's notices are on their way to every replica before the request that made it is
    answered: a client that changed a sandbox through one replica reads the change through any.
    (Plain ASGI: bodies stream through untouched; reads never wait.)"""

    def __init__(self, app: ASGIApp, notices: set[asyncio.Task[None]]) -> None:
        self.app = app
        self.notices = notices

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "GET":
            await self.app(scope, receive, send)
            return

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start" and self.notices:
                await asyncio.wait(set(self.notices), timeout=NOTICE_WAIT_S)
            await send(message)

        await self.app(scope, receive, answer)


def node_app(
    local: LocalNode,
    token: str,
    *,
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The node daemon's HTTP API over `local` (every route needs `token`)."""
    if not token:
        raise errors.InvalidArgumentError("a node needs a node token (--token or SANDLOT_NODE_TOKEN)", field="token")
    app = FastAPI(title="Sandlot node", lifespan=lifespan)
    install_handlers(app)
    check = _checker(token)
    app.include_router(_router(local), prefix="/v1", dependencies=[Depends(check)])
    expected = f"Bearer {token}"
    # each relay WebSocket's way to tell its replica the sandbox's status changed, by sandbox
    watchers: dict[str, set[Callable[[], None]]] = {}
    notices: set[asyncio.Task[None]] = set()  # being sent

    def changed(sandbox_id: str) -> None:
        for notify in list(watchers.get(sandbox_id, ())):
            notify()

    local.node.on_change(changed)

    app.add_middleware(NoticesFirst, notices=notices)

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse({"status": "ok", "name": local.name})

    @app.websocket("/v1/sandboxes/{sandbox_id}/agent")
    async def agent(ws: WebSocket, sandbox_id: str) -> None:
        if not hmac.compare_digest(ws.headers.get("authorization", "").encode(), expected.encode()):
            await ws.close(code=1008)
            return
        sending = asyncio.Lock()  # frames and notices share the WebSocket

        async def tell() -> None:
            with contextlib.suppress(Exception):
                async with sending:
                    await ws.send_text(CHANGED)

        def notify() -> None:
            task = asyncio.ensure_future(tell())
            notices.add(task)
            task.add_done_callback(notices.discard)

        # Watching from before the accept: a change the replica could miss never falls in between.
        watchers.setdefault(sandbox_id, set()).add(notify)
        try:
            async with sending:
                await ws.accept()
            await _relay_agent(ws, sandbox_id, local, sending)
        finally:
            mine = watchers.get(sandbox_id, set())
            mine.discard(notify)
            if not mine:
                watchers.pop(sandbox_id, None)

    return app


async def _relay_agent(ws: WebSocket, sandbox_id: str, local: LocalNode, sending: asyncio.Lock) -> None:
    """Bridge an accepted WebSocket to the sandbox's agent until either end goes."""

    def resolve() -> tuple[AgentConnection, dict[str, str]]:
        handle = local.node.get(sandbox_id).handle
        return handle.agent.conn, handle.environment()

    async def receive() -> bytes | None:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("bytes")
        return data if data is not None else b""

    async def send(data: bytes) -> None:
        async with sending:
            await ws.send_bytes(data)

    with contextlib.suppress(Exception):
        await relay(receive, send, resolve)
    with contextlib.suppress(Exception):
        await ws.close()


def run_daemon(
    *,
    api_url: str | None,
    token: str,
    name: str,
    data_dir: Path,
    images_dir: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 7771,
    advertise_url: str | None = None,
    subnet: str | None = None,
    labels: Mapping[str, str] | None = None,
    default_runtime: str = "gvisor",
    warm_template: str | None = "base",
    dns_servers: list[str] | None = None,
    heartbeat: float = 3.0,
    log_level: str = "info",
    kill_on_shutdown: bool = False,
) -> None:
    """Run a node daemon in the foreground (`sandlot node`) until interrupted; sandboxes keep running."""
    from sandlot.node import Node, NodeConfig
    from sandlot.node.membership import membership
    from sandlot.serving import quiet_server

    config = NodeConfig(
        data_dir=data_dir, images_dir=images_dir, default_runtime=default_runtime, dns_servers=dns_servers
    )
    if subnet:
        config.net_subnet = subnet
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    local = LocalNode(Node(config), name)
    local.recovering = bool(api_url)  # until the fleet's records are recovered (membership.py)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await local.prepare(warm_template)
        joined = (
            asyncio.create_task(
                membership(
                    local, api_url, token, advertise_url or f"http://{host}:{port}", labels or {}, interval=heartbeat
                )
            )
            if api_url
            else None
        )
        try:
            yield
        finally:
            if joined is not None:
                joined.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await joined
            await local.close(kill_sandboxes=kill_on_shutdown)

    app = node_app(local, token, lifespan=lifespan)
    quiet_server(app, host=host, port=port, log_level=log_level).run()
