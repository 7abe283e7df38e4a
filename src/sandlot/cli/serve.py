"""`sandlot serve`: run the API server and its node in the foreground.

Ctrl-C stops the server; its sandboxes keep running and are adopted again by
the next start (the server runs with `kill_on_shutdown=False`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from sandlot import errors
from sandlot.cli._common import require_extra

__all__ = ["command"]


@click.command("serve")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="ADDR",
    help="address to listen on (repeatable; default 127.0.0.1 and ::1, where *.localhost names resolve)",
)
@click.option("--port", type=int, default=7770, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="state directory (default /var/lib/sandlot as root, else ~/.local/share/sandlot)",
)
@click.option("--images-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="image cache")
@click.option("--database-url", default=None, help="PostgreSQL URL (default: SQLite in the data dir)")
@click.option("--default-template", default="base", show_default=True)
@click.option("--log-level", default="info", show_default=True)
@click.option(
    "--warm-pool",
    "warm_pools",
    multiple=True,
    metavar="TEMPLATE=N",
    help="keep N started sandboxes of TEMPLATE ready for creates (repeatable)",
)
@click.option(
    "--ports-domain",
    default="localhost",
    show_default=True,
    help="sandbox ports also answer at {port}-{id}.DOMAIN (point a wildcard DNS name at this server)",
)
@click.option(
    "--dns",
    "dns_servers",
    multiple=True,
    metavar="ADDR",
    help="resolver for sandboxes' DNS and policy host names (repeatable; default: the host's own)",
)
@click.option(
    "--hibernate-after",
    type=float,
    default=900.0,
    show_default=True,
    help="seconds idle before a persistent sandbox hibernates",
)
@click.option(
    "--max-lifetime", type=int, default=None, help="seconds from creation a timeout may reach (default: no limit)"
)
@click.option(
    "--max-sandboxes",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="sandboxes each team may run at once (a quota, not the host's capacity)",
)
@click.option(
    "--max-concurrent-starts",
    type=click.IntRange(min=1),
    default=None,
    help="sandbox starts that run at once (default: 2 per core); more wait in a fair queue",
)
@click.option(
    "--max-queued-starts",
    type=click.IntRange(min=0),
    default=256,
    show_default=True,
    help="creates that may wait for a start; beyond, a create gets 503 with Retry-After",
)
@click.option(
    "--ssh-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="also serve SSH on this port: ssh -p PORT SANDBOX_ID@host (default: no SSH)",
)
@click.option("--ssh-host", default=None, help="address the SSH gateway listens on (default: the first --host)")
@click.option(
    "--no-local-node",
    is_flag=True,
    help="an API replica of a fleet: sandboxes run on `sandlot node` daemons; needs --database-url postgresql://",
)
@click.option("--node-token", default=None, help="the fleet's node token (default $SANDLOT_NODE_TOKEN)")
@click.option(
    "--node-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="seconds without a heartbeat before a node is unreachable",
)
@click.option(
    "--memory-overcommit",
    type=click.FloatRange(min=0, min_open=True, max=1000),
    default=None,
    metavar="RATIO",
    help="a fleet places no more on a node once its sandboxes' memory limits would pass RATIO x its memory "
    "(default 1.5)",
)
@click.option(
    "--cpu-overcommit",
    type=click.FloatRange(min=0, min_open=True, max=1000),
    default=None,
    metavar="RATIO",
    help="likewise for their cpu limits and its cores (default 4)",
)
def command(
    hosts: tuple[str, ...],
    port: int,
    data_dir: Path | None,
    images_dir: Path | None,
    database_url: str | None,
    default_template: str,
    log_level: str,
    warm_pools: tuple[str, ...],
    ports_domain: str,
    dns_servers: tuple[str, ...],
    hibernate_after: float,
    max_lifetime: int | None,
    max_sandboxes: int,
    max_concurrent_starts: int | None,
    max_queued_starts: int,
    ssh_port: int | None,
    ssh_host: str | None,
    no_local_node: bool,
    node_token: str | None,
    node_timeout: float,
    memory_overcommit: float | None,
    cpu_overcommit: float | None,
) -> None:
    """Run the Sandlot API server (Ctrl-C stops it; sandboxes keep running)."""
    require_extra("server", "serve")
    from sandlot.api import DEFAULT_HOSTS, serve
    from sandlot.api.fleet.placement import Overcommit
    from sandlot.api.service import Quotas

    pools: dict[str, int] = {}
    for item in warm_pools:
        template, _, size = item.partition("=")
        if not template or not size.isdigit():
            raise errors.InvalidArgumentError(f"--warm-pool wants TEMPLATE=N, got {item!r}", field="warm_pool")
        pools[template] = int(size)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    hosts = hosts or DEFAULT_HOSTS
    ratios = {"memory": memory_overcommit, "cpu": cpu_overcommit}
    overcommit = Overcommit(**{k: v for k, v in ratios.items() if v is not None})
    serve(
        hosts,
        port,
        data_dir,
        log_level=log_level,
        images_dir=images_dir,
        database_url=database_url,
        default_template=default_template,
        warm_pools=pools,
        ports_domain=ports_domain,
        dns_servers=list(dns_servers) or None,
        hibernate_after_s=hibernate_after,
        quotas=Quotas(max_sandboxes=max_sandboxes, max_lifetime_s=max_lifetime),
        max_concurrent_starts=max_concurrent_starts,
        max_queued_starts=max_queued_starts,
        ssh_port=ssh_port,
        ssh_host=ssh_host or hosts[0],
        no_local_node=no_local_node,
        node_token=node_token,
        node_timeout_s=node_timeout,
        overcommit=overcommit,
    )
