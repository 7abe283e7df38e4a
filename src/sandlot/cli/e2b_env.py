"""`sandlot e2b-env`: the environment that points the official E2B SDKs at this Sandlot.

    eval "$(sandlot e2b-env)"
    python my_e2b_agent.py        # unchanged code using `e2b` / `e2b-code-interpreter`

The key is checked against the server first, so a wrong URL or key fails here
rather than inside the E2B code.
"""

from __future__ import annotations

import shlex

import click

from sandlot import errors
from sandlot.cli._common import Api, pass_api, run_async
from sandlot.e2b_env import env_exports
from sandlot.sdk import AsyncSandbox
from sandlot.sdk._transport import Transport

__all__ = ["command"]


async def _resolve(api: Api) -> tuple[str, str]:
    transport = Transport(api.url, api.key, None)
    try:
        if not transport.api_key:
            raise errors.AuthenticationError("no API key: pass --api-key or set SANDLOT_API_KEY")
        await AsyncSandbox.list(limit=1, api_url=transport.api_url, api_key=transport.api_key)
        return transport.api_url, transport.api_key
    finally:
        await transport.close()


@click.command("e2b-env")
@click.option(
    "--domain",
    default=None,
    metavar="DOMAIN",
    help="reach sandboxes as https://PORT-ID.DOMAIN (wildcard DNS + TLS in front) instead of through the API's host",
)
@click.option(
    "--public-url", default=None, metavar="URL", help="the API's URL as E2B clients see it (default: the API URL)"
)
@pass_api
def command(api: Api, domain: str | None, public_url: str | None) -> None:
    """Print `export` lines for the E2B SDKs (E2B_API_KEY, E2B_API_URL, ...): eval "$(sandlot e2b-env)"."""
    url, key = run_async(_resolve(api))
    for name, value in env_exports(public_url or url, key, domain).items():
        click.echo(f"export {name}={shlex.quote(value)}")
