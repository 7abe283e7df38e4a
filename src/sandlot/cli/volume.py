"""Volumes from the command line.

sandlot volume create NAME [--size-mb 1024]
sandlot volume ls
sandlot volume rm NAME...
sandlot create --volume NAME:/path[:ro]    (see create.py)
"""

from __future__ import annotations

import click
from rich.text import Text

from sandlot import errors
from sandlot.cli._common import Api, console, fmt_ago, json_option, pass_api, print_json, run_async, table
from sandlot.sdk import AsyncVolumes, VolumeMount

__all__ = ["parse_mount", "volume_group"]


def parse_mount(item: str) -> VolumeMount:
    """NAME:/path or NAME:/path:ro."""
    name, sep, rest = item.partition(":")
    path, _, mode = rest.partition(":")
    if not name or not sep or not path.startswith("/") or mode not in ("", "ro", "rw"):
        raise errors.InvalidArgumentError(f"--volume wants NAME:/path[:ro], got {item!r}", field="volume")
    return VolumeMount(name=name, path=path, read_only=mode == "ro")


@click.group("volume")
def volume_group() -> None:
    """Named volumes: filesystems that outlive sandboxes (create, ls, rm)."""


@volume_group.command("create")
@click.argument("name")
@click.option("--size-mb", type=int, default=1024, show_default=True, help="its size; writes past it get ENOSPC")
@pass_api
def create_command(api: Api, name: str, size_mb: int) -> None:
    """Create a volume; prints its name."""
    run_async(AsyncVolumes.create(name, size_mb=size_mb, api_url=api.url, api_key=api.key))
    click.echo(name)


@volume_group.command("ls")
@json_option
@pass_api
def ls_command(api: Api, as_json: bool) -> None:
    """List the team's volumes (with the node each one is on: in a fleet, its sandboxes run there)."""
    vols = run_async(AsyncVolumes.list(api_url=api.url, api_key=api.key))
    if as_json:
        print_json(vols)
    elif vols:
        rows: list[list[str | Text]] = [
            [
                v.name,
                v.volume_id,
                "unlimited" if v.size_mb is None else f"{v.size_mb} MiB",
                Text(f"{v.node} (unreachable)", style="red") if not v.reachable else (v.node or ""),
                fmt_ago(v.created_at),
            ]
            for v in vols
        ]
        console().print(table(["NAME", "ID", "SIZE", "NODE", "CREATED"], rows))
    else:
        click.echo("no volumes", err=True)


@volume_group.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@pass_api
def rm_command(api: Api, names: tuple[str, ...]) -> None:
    """Delete volumes and their files; prints each name deleted."""
    for name in names:
        run_async(AsyncVolumes.delete(name, api_url=api.url, api_key=api.key))
        click.echo(name)
