"""The API application: FastAPI around an embedded node.

`create_app(config)` builds the app; its lifespan opens the store, makes the
first admin key, starts the node and re-adopts the sandboxes a previous
process left running, then starts the reaper. The node runs on the server's
own event loop: there is one process and one loop.

This module is the composition root: the only one in `api/` that names the
in-process node (`Node`, wrapped in `LocalNode`); everything else reaches it
through `NodeClient` (node/client.py) as `app.state.service.node`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sandlot import errors
from sandlot.api import (
    e2b,
    mcp_http,
    routes_checkpoints,
    routes_code,
    routes_commands,
    routes_events,
    routes_files,
    routes_images,
    routes_keys,
    routes_metrics,
    routes_pools,
    routes_ports,
    routes_pty,
    routes_sandboxes,
    routes_ssh_keys,
    routes_teams,
    routes_tickets,
    routes_transfer,
    routes_volumes,
    routes_webhooks,
    ui,
)
from sandlot.api.auth import Tickets, bootstrap_admin_key
from sandlot.api.config import ApiConfig
from sandlot.api.e2b.access import load_secret
from sandlot.api.fleet import routes as routes_fleet
from sandlot.api.fleet.fleet import Fleet
from sandlot.api.host_routing import PortRoutedApp
from sandlot.api.http_errors import error_response, install_handlers
from sandlot.api.service import SandboxService
from sandlot.api.store import Store, database_url_for
from sandlot.api.webhooks import Dispatcher, Webhooks
from sandlot.node import Node, NodeConfig
from sandlot.node.client import NodeClient
from sandlot.node.local import LocalNode
from sandlot.node.remote import RemoteNode

if TYPE_CHECKING:
    from sandlot.api.ssh import SshGateway

__all__ = ["create_app"]

log = logging.getLogger("sandlot.api")


def create_app(config: ApiConfig | None = None, *, node: Node | NodeClient | None = None) -> FastAPI:
    """The API as an ASGI app (serve it with uvicorn, or test it in-process).

    Args:
        config: where state lives and how the server behaves.
        node: a node to embed instead of making one from `config` (it must use
            `config.data_dir`, so that restarts find its sandboxes), or any
            `NodeClient` to drive.
    """
    config = config or ApiConfig()
    given_node = node

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = Store(database_url_for(config.data_dir, config.database_url))
        await store.init()
        key = await bootstrap_admin_key(store, config.data_dir)
        if key is not None:
            print(
                f"sandlot: created the admin API key (shown once; also in {config.data_dir / 'admin.key'}):\n  {key}",
                file=sys.stderr,
                flush=True,
            )
        app.state.e2b_secret = await load_secret(store, config.data_dir)
        app.state.tickets.use_secret(await store.secret("ws-tickets", secrets.token_bytes(32)))  # one for a fleet
        node = _node_client(config, given_node, store)
        service = SandboxService(
            node,
            store,
            default_template=config.default_template,
            quotas=config.quotas,
            hibernate_after_s=config.hibernate_after_s,
            housekeeping_interval_s=config.housekeeping_interval_s,
        )
        app.state.config, app.state.store, app.state.service = config, store, service
        app.state.ready, app.state.not_ready_reason = False, "starting"
        app.state.runtimes = {}
        await service.start(config.reap_interval)
        app.state.webhooks = Webhooks(store, service.events)
        await app.state.webhooks.init()
        app.state.dispatcher = dispatcher = Dispatcher(store)
        dispatcher.start()
        warmup = asyncio.create_task(_warm_up(app, node, config))
        ssh = await _start_ssh(service, store, config)
        try:
            yield
        finally:
            warmup.cancel()
            if ssh is not None:
                await ssh.close()
            await app.state.port_proxy.close()
            await dispatcher.close()
            await service.stop()
            await node.close(kill_sandboxes=config.kill_on_shutdown)
            await store.close()

    app = PortRoutedApp(
        title="Sandlot",
        version="0.1.0",
        summary="Secure sandboxes for AI code execution",
        lifespan=lifespan,
    )
    install_handlers(app)
    app.state.tickets = Tickets()

    @app.get("/health", tags=["health"], responses={503: {"description": "not ready yet"}})
    async def health(request: Request) -> JSONResponse:
        """200 once sandboxes can be created; 503 (with the reason) before.

        `runtimes`: each isolation runtime, whether this host can run it, and
        for microvm its accelerator (kvm or tcg), once the node has chosen it.
        """
        if request.app.state.ready:
            return JSONResponse({"status": "ok", "runtimes": request.app.state.runtimes})
        reason = request.app.state.not_ready_reason
        return error_response(503, errors.RuntimeUnavailableError.code, f"not ready: {reason}")

    for module in (
        routes_sandboxes,
        routes_commands,
        routes_files,
        routes_keys,
        routes_pools,
        routes_pty,
        routes_transfer,  # before routes_images: its /templates/{name}/export beats /templates/{name}
        routes_images,
        routes_checkpoints,
        routes_volumes,
        routes_teams,
        routes_code,
        routes_ssh_keys,
        routes_fleet,
        routes_metrics,
        routes_events,
        routes_webhooks,
        routes_tickets,
    ):
        app.include_router(module.router)
    routes_ports.install(app, config.ports_domain)
    e2b.install(app)
    mcp_http.install(app)
    ui.install(app)
    return app


def _node_client(config: ApiConfig, given: Node | NodeClient | None, store: Store) -> NodeClient:
    """The node this server drives: the one given, the fleet's node daemons (`no_local_node`),
    else a node of its own on `config.data_dir`."""
    if isinstance(given, NodeClient):
        return given
    if config.no_local_node:
        return Fleet(
            store,
            config.node_token or "",
            lambda name, url, token, runtime: RemoteNode(name, url, token, default_runtime=runtime),
            node_timeout_s=config.node_timeout_s,
            default_runtime=config.default_runtime,
            overcommit=config.overcommit,
        )
    return LocalNode(
        given
        or Node(
            NodeConfig(
                data_dir=config.data_dir,
                images_dir=config.images_dir,
                registries=config.registries,
                registries_only=config.registries_only,
                gvisor_platform=config.gvisor_platform,
                default_runtime=config.default_runtime,
                dns_servers=config.dns_servers,
                disk_store_bytes=config.disk_store_bytes,
                agent_timeout_s=config.agent_timeout_s,
                max_concurrent_starts=config.max_concurrent_starts,
                max_queued_starts=config.max_queued_starts,
            )
        )
    )


async def _start_ssh(service: SandboxService, store: Store, config: ApiConfig) -> SshGateway | None:
    if config.ssh_port is None:
        return None
    from sandlot.api.ssh import SshGateway

    gateway = SshGateway(service, store, config.data_dir)
    port = await gateway.start(config.ssh_host, config.ssh_port)
    log.info("SSH gateway on %s:%d", config.ssh_host, port)
    return gateway


async def _warm_up(app: FastAPI, node: NodeClient, config: ApiConfig) -> None:
    """Build what creating a sandbox needs (agent bundle, runtime check, default image)."""
    try:
        await node.prepare(None)
        if config.warm_default_template:
            app.state.not_ready_reason = f"preparing the {config.default_template!r} image"
            await node.prepare(config.default_template)
        app.state.ready = True
        # After ready: the first microvm check on a host boots a probe guest (seconds).
        app.state.runtimes = await node.runtimes()
        pools = {(t, node.default_runtime): n for t, n in config.warm_pools.items()}
        pools.update({(t, r): n for t, r, n in await app.state.store.pools()})  # set over the API: they win
        for (template, runtime), size in pools.items():
            try:
                await node.set_pool(template, runtime, size)
            except errors.SandlotError as exc:
                log.error("the warm pool of %s (%s) cannot start: %s", template, runtime, exc)
    except errors.SandlotError as exc:
        app.state.not_ready_reason = str(exc)
        log.error("the node cannot create sandboxes: %s", exc)
