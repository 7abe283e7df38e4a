"""Sandlot's HTTP API: the control plane around an embedded node.

    from sandlot.api import serve
    serve(host="127.0.0.1", port=7770)        # what `sandlot serve` runs

Importing this package is cheap: the server's modules (FastAPI, the node, the
database) load when `create_app` or `serve` is called, so the SDK can import
`sandlot.models` (the wire protocol) alone.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sandlot.api.config import ApiConfig
    from sandlot.node import Node
    from sandlot.node.client import NodeClient

__all__ = ["DEFAULT_HOSTS", "create_app", "listen", "run_app", "serve"]

#: Where a server listens by default: the loopback of both families, because
#: `*.localhost` names (the ports' host names) resolve to ::1 first, then 127.0.0.1.
DEFAULT_HOSTS = ("127.0.0.1", "::1")

log = logging.getLogger("sandlot.api")


def create_app(config: ApiConfig | None = None, *, node: Node | NodeClient | None = None) -> FastAPI:
    """Build the ASGI app (see sandlot.api.app)."""
    from sandlot.api.app import create_app as _create_app

    return _create_app(config, node=node)


def serve(
    host: str | Sequence[str] = DEFAULT_HOSTS,
    port: int = 7770,
    data_dir: str | Path | None = None,
    *,
    log_level: str = "info",
    **config: Any,
) -> None:
    """Run the API and its node in this process until interrupted.

    Args:
        host: address(es) to listen on (keep loopback ones unless a proxy with TLS is in front).
        port: TCP port.
        data_dir: state directory (default /var/lib/sandlot as root, else ~/.local/share/sandlot).
        log_level: uvicorn's log level.
        **config: further `ApiConfig` fields (database_url, images_dir, default_runtime, ...).
    """
    from sandlot.api.config import ApiConfig

    if data_dir is not None:
        config["data_dir"] = Path(data_dir)
    cfg = ApiConfig(**config)
    run_app(create_app(cfg), host, port, log_level=log_level)


def listen(hosts: str | Sequence[str], port: int) -> list[socket.socket]:
    """Listening sockets on each of `hosts` at `port`.

    An address of the defaults that this host lacks (no IPv6 loopback) is
    skipped with a warning; one asked for by name must work.
    """
    hosts = [hosts] if isinstance(hosts, str) else list(hosts)
    socks: list[socket.socket] = []
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if host in DEFAULT_HOSTS and hosts == list(DEFAULT_HOSTS) and exc.errno == errno.EADDRNOTAVAIL:
                log.warning("not listening on %s: this host has no such address", host)
                continue
            for s in socks:
                s.close()
            raise
        sock.listen(2048)
        socks.append(sock)
    return socks


def run_app(app: FastAPI, hosts: str | Sequence[str], port: int, *, log_level: str = "info") -> None:
    """Serve `app` with uvicorn on every address of `hosts` until interrupted."""
    from sandlot.serving import quiet_server

    sockets = listen(hosts, port)
    server = quiet_server(app, log_level=log_level)
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # Ctrl-C, re-raised by uvicorn once it has shut down: a clean stop (as uvicorn.run)
        pass
    finally:
        for sock in sockets:
            sock.close()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE
