"""`sandlot network SANDBOX_ID [--mode M --allow X --deny Y ...]`: show or change a sandbox's network policy.

Without options it prints the policy; with `--mode` it replaces it (the
running sandbox keeps running; the new policy applies at once).
"""

from __future__ import annotations

import click

from sandlot.cli._common import Api, connect, json_option, pass_api, print_json, run_async
from sandlot.models import NetworkInfo

__all__ = ["command", "network_options"]


def network_options(fn: click.decorators.FC) -> click.decorators.FC:
    """--network/--mode, --allow, --deny, --egress-bytes-per-s, --max-connections (shared with create)."""
    for opt in reversed(
        [
            click.option("--allow", multiple=True, metavar="CIDR|HOST", help="may reach it (repeatable)"),
            click.option("--deny", multiple=True, metavar="CIDR|HOST", help="may not reach it; wins (repeatable)"),
            click.option("--egress-bytes-per-s", type=int, default=None, help="bandwidth cap of what it sends"),
            click.option("--max-connections", type=int, default=None, help="connections open at once"),
        ]
    ):
        fn = opt(fn)
    return fn


def policy(
    mode: str, allow: tuple[str, ...], deny: tuple[str, ...], rate: int | None, conns: int | None
) -> dict[str, object]:
    out: dict[str, object] = {"mode": mode, "allow": list(allow), "deny": list(deny)}
    if rate is not None:
        out["egress_bytes_per_s"] = rate
    if conns is not None:
        out["max_connections"] = conns
    return out


def _show(info: NetworkInfo) -> None:
    click.echo(f"mode: {info.mode}")
    for name in ("allow", "deny"):
        if getattr(info, name):
            click.echo(f"{name}: {', '.join(getattr(info, name))}")
    if info.address:
        click.echo(f"address: {info.address}")
    if info.egress_bytes_per_s:
        click.echo(f"egress bytes/s: {info.egress_bytes_per_s}")
    click.echo(f"max connections: {info.max_connections}")
    click.echo(f"public ports: {', '.join(map(str, info.public_ports)) or '-'}")


@click.command("network")
@click.argument("sandbox_id")
@click.option("--mode", type=click.Choice(["none", "egress", "full"]), default=None, help="replace the policy")
@network_options
@json_option
@pass_api
def command(
    api: Api,
    sandbox_id: str,
    mode: str | None,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    egress_bytes_per_s: int | None,
    max_connections: int | None,
    as_json: bool,
) -> None:
    """Show SANDBOX_ID's network policy, or replace it with --mode (and the lists)."""
    if mode is None and (allow or deny or egress_bytes_per_s or max_connections):
        raise click.UsageError("--allow, --deny and the limits replace the policy: give --mode too")

    async def run() -> NetworkInfo:
        async with connect(api, sandbox_id) as sbx:
            if mode is None:
                return await sbx.network.get()
            body = policy(mode, allow, deny, egress_bytes_per_s, max_connections)
            return await sbx.network.update(**body)  # type: ignore[arg-type]

    info = run_async(run())
    print_json(info) if as_json else _show(info)
