"""`sandlot port ...`: reach a port of a sandbox through the server, and open or close it to everyone.

sandlot port url SANDBOX_ID PORT [--host] [--token]   print its URL (path form, or host-name form)
sandlot port public SANDBOX_ID PORT                   anyone may reach it, no token
sandlot port private SANDBOX_ID PORT                  it needs the access token again
"""

from __future__ import annotations

import click

from sandlot.cli._common import Api, connect, pass_api, run_async

__all__ = ["command"]


@click.group("port")
def command() -> None:
    """Exposed ports: a server listening in a sandbox, reached through the Sandlot server."""


@command.command("url")
@click.argument("sandbox_id")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option("--host", "host_form", is_flag=True, help="the {port}-{id}.{domain} form (needs wildcard DNS)")
@click.option("--token", "with_token", is_flag=True, help="append ?sandlot_access_token= (for a browser)")
@pass_api
def url_command(api: Api, sandbox_id: str, port: int, host_form: bool, with_token: bool) -> None:
    """Print the URL of PORT in SANDBOX_ID."""

    async def url() -> str:
        async with connect(api, sandbox_id) as sbx:
            base = f"http://{sbx.get_host(port)}/" if host_form else sbx.get_url(port)
            token = sbx.access_token
            return base + (f"?sandlot_access_token={token}" if with_token and token else "")

    click.echo(run_async(url()))


def _set_public(api: Api, sandbox_id: str, port: int, public: bool) -> None:
    async def apply() -> None:
        async with connect(api, sandbox_id) as sbx:
            await sbx.network.set_public(port, public)

    run_async(apply())
    click.echo(f"port {port} of {sandbox_id} is {'public' if public else 'private'}")


@command.command("public")
@click.argument("sandbox_id")
@click.argument("port", type=click.IntRange(1, 65535))
@pass_api
def public_command(api: Api, sandbox_id: str, port: int) -> None:
    """Let anyone reach PORT of SANDBOX_ID, without its access token."""
    _set_public(api, sandbox_id, port, True)


@command.command("private")
@click.argument("sandbox_id")
@click.argument("port", type=click.IntRange(1, 65535))
@pass_api
def private_command(api: Api, sandbox_id: str, port: int) -> None:
    """PORT of SANDBOX_ID needs the access token (or a team key) again."""
    _set_public(api, sandbox_id, port, False)
