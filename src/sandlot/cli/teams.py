"""`sandlot teams ls|show|set-quota`: teams' limits and what they use (admin; `show` also for a team's own key).

sandlot teams set-quota research --max-sandboxes 20 --max-disk-mb 100000 --checkpoint-retention 86400
sandlot teams set-quota research --default max_sandboxes      # back to the server's default
"""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from sandlot import errors
from sandlot.cli._common import Api, console, json_option, pass_api, print_json, run_async, table
from sandlot.models import TeamInfo
from sandlot.sdk.teams import AsyncTeams

__all__ = ["command"]

_FIELDS = ("max_sandboxes", "max_disk_mb", "max_lifetime_s", "checkpoint_retention_s")


def _limit(info: TeamInfo, field: str, unit: str = "") -> str | Text:
    value = getattr(info.quota, field)
    text = "none" if value == 0 and field in ("max_lifetime_s", "checkpoint_retention_s") else f"{value}{unit}"
    return text if field in info.overrides else Text(text, style="dim")


def _rows(teams: list[TeamInfo]) -> list[list[str | Text]]:
    return [
        [
            t.team,
            f"{t.usage.sandboxes}/",
            _limit(t, "max_sandboxes"),
            f"{t.usage.disk_mb}/",
            _limit(t, "max_disk_mb", " MiB"),
            _limit(t, "max_lifetime_s", " s"),
            _limit(t, "checkpoint_retention_s", " s"),
        ]
        for t in teams
    ]


def _show(teams: list[TeamInfo], as_json: bool) -> None:
    if as_json:
        print_json(teams if len(teams) != 1 else teams[0])
        return
    headers = ["TEAM", "SANDBOXES", "MAX", "DISK MiB", "MAX DISK", "MAX LIFETIME", "CHECKPOINTS KEPT"]
    console().print(table(headers, _rows(teams)))
    console().print(Text("dim: the server's default", style="dim"))


@click.group("teams")
def command() -> None:
    """Teams' limits (sandboxes, disk, lifetime, checkpoint retention) and usage."""


@command.command("ls")
@json_option
@pass_api
def ls(api: Api, as_json: bool) -> None:
    """Every team the server knows (admin)."""
    _show(run_async(AsyncTeams.list(api_url=api.url, api_key=api.key)), as_json)


@command.command("show")
@click.argument("team")
@json_option
@pass_api
def show(api: Api, team: str, as_json: bool) -> None:
    """One team's limits and usage."""
    _show([run_async(AsyncTeams.get(team, api_url=api.url, api_key=api.key))], as_json)


@command.command("set-quota")
@click.argument("team")
@click.option("--max-sandboxes", type=int, default=None, help="live sandboxes at once")
@click.option("--max-disk-mb", type=int, default=None, help="sandboxes' disks + volumes + checkpoints, MiB")
@click.option("--max-lifetime", type=int, default=None, metavar="SECONDS", help="from creation; 0: no limit")
@click.option(
    "--checkpoint-retention", type=int, default=None, metavar="SECONDS", help="after a sandbox ends; 0: forever"
)
@click.option(
    "--default",
    "defaults",
    multiple=True,
    type=click.Choice(_FIELDS),
    help="return this limit to the server's default (repeatable)",
)
@json_option
@pass_api
def set_quota(
    api: Api,
    team: str,
    max_sandboxes: int | None,
    max_disk_mb: int | None,
    max_lifetime: int | None,
    checkpoint_retention: int | None,
    defaults: tuple[str, ...],
    as_json: bool,
) -> None:
    """Change a team's limits (admin); the others stay as they are."""
    given = {
        "max_sandboxes": max_sandboxes,
        "max_disk_mb": max_disk_mb,
        "max_lifetime_s": max_lifetime,
        "checkpoint_retention_s": checkpoint_retention,
    }
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    both = set(changes) & set(defaults)
    if both:
        raise errors.InvalidArgumentError(f"{', '.join(sorted(both))}: set a value or --default, not both")
    changes.update(dict.fromkeys(defaults))
    if not changes:
        raise errors.InvalidArgumentError("nothing to change: pass --max-sandboxes, --max-disk-mb, ... or --default")
    info = run_async(AsyncTeams.set_quota(team, api_url=api.url, api_key=api.key, **changes))
    _show([info], as_json)
