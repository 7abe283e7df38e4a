"""Sandlot's HTTP API: the control plane around an embedded node.

    from sandlot.api import serve
    serve(host="127.0.0.1", port=7770)        # what `sandlot serve` runs

Importing this package is cheap: the server's modules (FastAPI, the node, the
database) load when `create_app` or `serve` is called, so the SDK can import
`sandlot.models` (the wire protocol) alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from sandlot.api.config import ApiConfig
    from sandlot.node import Node
    from sandlot.node.client import NodeClient

__all__ = ["create_app", "serve"]


def create_app(config: ApiConfig | None = None, *, node: Node | NodeClient | None = None) -> FastAPI:
    """Build the ASGI app (see sandlot.api.app)."""
    from sandlot.api.app import create_app as _create_app

    return _create_app(config, node=node)


def serve(
    host: str = "127.0.0.1",
    port: int = 7770,
    data_dir: str | Path | None = None,
    *,
    log_level: str = "info",
    **config: Any,
) -> None:
    """Run the API and its node in this process until interrupted.

    Args:
        host: address to listen on (keep 127.0.0.1 unless a proxy with TLS is in front).
        port: TCP port.
        data_dir: state directory (default /var/lib/sandlot as root, else ~/.local/share/sandlot).
        log_level: uvicorn's log level.
        **config: further `ApiConfig` fields (database_url, images_dir, default_runtime, ...).
    """
    import uvicorn

    from sandlot.api.config import ApiConfig

    if data_dir is not None:
        config["data_dir"] = Path(data_dir)
    cfg = ApiConfig(**config)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level=log_level, ws="websockets-sansio")
