"""`sandlot kill SANDBOX_ID...`: kill sandboxes (one that is already dead is not an error)."""

from __future__ import annotations

import click

from sandlot import errors
from sandlot.cli._common import Api, pass_api, run_async
from sandlot.sdk import AsyncSandbox

__all__ = ["command"]


async def _kill(api: Api, sandbox_ids: tuple[str, ...]) -> int:
    status = 0
    for sandbox_id in sandbox_ids:
        try:
            sbx = await AsyncSandbox.connect(sandbox_id, api_url=api.url, api_key=api.key)
        except errors.SandboxStateError:  # already killed: killing is idempotent
            click.echo(sandbox_id)
            continue
        except errors.NotFoundError as exc:  # report it, and still kill the others
            click.echo(f"sandlot: {exc}", err=True)
            status = 2
            continue
        try:
            await sbx.kill()
        finally:
            await sbx.close()
        click.echo(sandbox_id)
    return status


@click.command("kill")
@click.argument("sandbox_ids", nargs=-1, required=True, metavar="SANDBOX_ID...")
@pass_api
def command(api: Api, sandbox_ids: tuple[str, ...]) -> int:
    """Kill sandboxes and free what they hold; prints each id killed."""
    return run_async(_kill(api, sandbox_ids))
