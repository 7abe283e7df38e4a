"""`sandlot pause SANDBOX_ID...` and `sandlot resume SANDBOX_ID...`: freeze and continue sandboxes."""

from __future__ import annotations

import click

from sandlot.cli._common import Api, pass_api, run_async
from sandlot.sdk import AsyncSandbox

__all__ = ["pause_command", "resume_command"]


async def _each(api: Api, sandbox_ids: tuple[str, ...], pause: bool, memory: bool = False) -> int:
    for sandbox_id in sandbox_ids:
        sbx = await AsyncSandbox.connect(sandbox_id, api_url=api.url, api_key=api.key)
        try:
            await (sbx.pause(memory=memory) if pause else sbx.resume())
        finally:
            await sbx.close()
        click.echo(sandbox_id)
    return 0


@click.command("pause")
@click.argument("sandbox_ids", nargs=-1, required=True, metavar="SANDBOX_ID...")
@click.option("--memory", is_flag=True, help="save processes and memory to disk and release them (gvisor)")
@pass_api
def pause_command(api: Api, sandbox_ids: tuple[str, ...], memory: bool) -> int:
    """Freeze every process of the sandboxes (no CPU used); prints each id paused."""
    return run_async(_each(api, sandbox_ids, pause=True, memory=memory))


@click.command("resume")
@click.argument("sandbox_ids", nargs=-1, required=True, metavar="SANDBOX_ID...")
@pass_api
def resume_command(api: Api, sandbox_ids: tuple[str, ...]) -> int:
    """Continue paused sandboxes where they stopped; prints each id resumed."""
    return run_async(_each(api, sandbox_ids, pause=False))
