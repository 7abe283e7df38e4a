"""`sandlot node`: run this host's node daemon for a fleet (see sandlot.node.daemon).

    sandlot node --api-url http://api:7770 --token T --name n1 --data-dir /var/lib/sandlot-node \\
        [--port 7771] [--subnet 10.242.0.0/16] [--label gpu=true]

It serves its node to the fleet's API replicas over HTTP (the node token
authenticates both ways), joins the fleet at --api-url, re-adopts the sandboxes
the fleet's records place on it, and heartbeats its capacity. Ctrl-C stops the
daemon; its sandboxes keep running for the next start to adopt.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import click

from sandlot import errors
from sandlot.cli._common import pairs, require_extra

__all__ = ["command"]


@click.command("node")
@click.option("--api-url", required=True, metavar="URL", help="an API replica of the fleet (any one)")
@click.option("--token", default=None, help="the fleet's node token (default $SANDLOT_NODE_TOKEN)")
@click.option("--name", default=None, help="this node's name in the fleet (default: the host name)")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="the node's state directory"
)
@click.option("--images-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="image cache")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=int, default=7771, show_default=True)
@click.option("--advertise-url", default=None, help="how replicas reach this daemon (default http://HOST:PORT)")
@click.option("--subnet", default=None, help="sandbox addresses come from this IPv4 CIDR (default 10.242.0.0/16)")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="placement label (repeatable)")
@click.option("--default-runtime", default="gvisor", show_default=True)
@click.option("--warm-template", default="base", show_default=True, help="template to cache at start ('' for none)")
@click.option("--dns", "dns_servers", multiple=True, metavar="ADDR", help="resolver for sandboxes (repeatable)")
@click.option("--no-dns", is_flag=True, help="sandboxes get no DNS resolver")
@click.option("--heartbeat", type=float, default=3.0, show_default=True, help="seconds between heartbeats")
@click.option("--log-level", default="info", show_default=True)
@click.option("--kill-on-shutdown", is_flag=True, hidden=True, help="kill every sandbox when stopped (tests)")
def command(
    api_url: str,
    token: str | None,
    name: str | None,
    data_dir: Path,
    images_dir: Path | None,
    host: str,
    port: int,
    advertise_url: str | None,
    subnet: str | None,
    labels: tuple[str, ...],
    default_runtime: str,
    warm_template: str,
    dns_servers: tuple[str, ...],
    no_dns: bool,
    heartbeat: float,
    log_level: str,
    kill_on_shutdown: bool,
) -> None:
    """Run this host's node daemon and join the fleet at --api-url."""
    require_extra("server", "node")
    from sandlot.node.daemon import run_daemon

    token = token or os.environ.get("SANDLOT_NODE_TOKEN")
    if not token:
        raise errors.InvalidArgumentError("give the fleet's node token: --token or SANDLOT_NODE_TOKEN", field="token")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_daemon(
        api_url=api_url,
        token=token,
        name=name or socket.gethostname(),
        data_dir=data_dir,
        images_dir=images_dir,
        host=host,
        port=port,
        advertise_url=advertise_url or f"http://{host}:{port}",
        subnet=subnet,
        labels=pairs(labels, "label"),
        default_runtime=default_runtime,
        warm_template=warm_template or None,
        dns_servers=[] if no_dns else list(dns_servers) or None,
        heartbeat=heartbeat,
        log_level=log_level,
        kill_on_shutdown=kill_on_shutdown,
    )
