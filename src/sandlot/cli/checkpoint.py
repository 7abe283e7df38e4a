"""Checkpoints from the command line.

sandlot checkpoint create SANDBOX_ID NAME    print the new checkpoint's id
sandlot checkpoint ls SANDBOX_ID
sandlot checkpoint rm CHECKPOINT_ID...
sandlot restore SANDBOX_ID CHECKPOINT_ID     roll the sandbox's filesystem back
sandlot fork CHECKPOINT_ID [-n COUNT]        print each new sandbox's id
"""

from __future__ import annotations

import click
from rich.text import Text

from sandlot.cli._common import Api, connect, console, fmt_ago, json_option, pairs, pass_api, print_json, run_async
from sandlot.cli._common import table as make_table
from sandlot.sdk import AsyncSandbox, CheckpointInfo

__all__ = ["checkpoint_group", "fork_command", "restore_command"]


@click.group("checkpoint")
def checkpoint_group() -> None:
    """Checkpoints of sandbox filesystems: create, ls, rm (restore and fork are commands of their own)."""


@checkpoint_group.command("create")
@click.argument("sandbox_id")
@click.argument("name")
@click.option("--memory", is_flag=True, help="also its processes and memory (gvisor); restore brings them back")
@json_option
@pass_api
def create_command(api: Api, sandbox_id: str, name: str, memory: bool, as_json: bool) -> None:
    """Checkpoint the sandbox's filesystem under NAME; prints the checkpoint's id."""

    async def go() -> CheckpointInfo:
        async with connect(api, sandbox_id) as sbx:
            return await sbx.checkpoint(name, memory=memory)

    ck = run_async(go())
    if as_json:
        print_json(ck)
    else:
        click.echo(ck.checkpoint_id)


@checkpoint_group.command("ls")
@click.argument("sandbox_id")
@json_option
@pass_api
def ls_command(api: Api, sandbox_id: str, as_json: bool) -> None:
    """List a sandbox's checkpoints, oldest first."""

    async def go() -> list[CheckpointInfo]:
        async with connect(api, sandbox_id) as sbx:
            return await sbx.list_checkpoints()

    cks = run_async(go())
    if as_json:
        print_json(cks)
    elif cks:
        rows: list[list[str | Text]] = [
            [c.checkpoint_id, c.name, fmt_ago(c.created_at), _size(c.size_bytes)] for c in cks
        ]
        console().print(make_table(["ID", "NAME", "CREATED", "SIZE"], rows))
    else:
        click.echo("no checkpoints", err=True)


@checkpoint_group.command("rm")
@click.argument("checkpoint_ids", nargs=-1, required=True, metavar="CHECKPOINT_ID...")
@pass_api
def rm_command(api: Api, checkpoint_ids: tuple[str, ...]) -> None:
    """Delete checkpoints and free their disks; prints each id deleted."""
    for ck in checkpoint_ids:
        run_async(AsyncSandbox.delete_checkpoint(ck, api_url=api.url, api_key=api.key))
        click.echo(ck)


@click.command("restore")
@click.argument("sandbox_id")
@click.argument("checkpoint_id")
@pass_api
def restore_command(api: Api, sandbox_id: str, checkpoint_id: str) -> None:
    """Roll the sandbox's filesystem back to one of its checkpoints (its processes start afresh)."""

    async def go() -> None:
        async with connect(api, sandbox_id) as sbx:
            await sbx.restore(checkpoint_id)

    run_async(go())
    click.echo(sandbox_id)


@click.command("fork")
@click.argument("checkpoint_id")
@click.option("--count", "-n", type=int, default=1, show_default=True, help="how many sandboxes to start")
@click.option("--timeout", type=int, default=300, show_default=True, help="seconds until each is killed")
@click.option("--metadata", "-m", multiple=True, metavar="KEY=VALUE", help="a label for each (repeatable)")
@pass_api
def fork_command(api: Api, checkpoint_id: str, count: int, timeout: int, metadata: tuple[str, ...]) -> None:
    """Start sandboxes from a checkpoint, each on its own copy of its filesystem; prints their ids."""
    labels = pairs(metadata, "--metadata")

    async def go() -> list[str]:
        kids = await AsyncSandbox.fork(
            checkpoint_id, count, timeout=timeout, metadata=labels, api_url=api.url, api_key=api.key
        )
        for kid in kids:
            await kid.close()
        return [k.sandbox_id for k in kids]

    for sid in run_async(go()):
        click.echo(sid)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size, unit = float(n) / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"
