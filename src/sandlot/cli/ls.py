"""`sandlot ls`: the team's sandboxes as a table (or JSON)."""

from __future__ import annotations

import click
from rich.text import Text

from sandlot.cli._common import Api, console, fmt_ago, json_option, pairs, pass_api, print_json, run_async, table
from sandlot.sdk import AsyncSandbox, SandboxInfo

__all__ = ["command"]

_STATE_STYLE = {"running": "green", "paused": "yellow", "killed": "red"}


def rows(sandboxes: list[SandboxInfo]) -> list[list[str | Text]]:
    out: list[list[str | Text]] = []
    for s in sandboxes:
        state = s.state.value
        if s.exit_reason and state != "running":  # "killed by request", "timed out", ...
            state = s.exit_reason if s.exit_reason.startswith(state) else f"{state} ({s.exit_reason})"
        ends = "-" if s.state.value == "killed" else fmt_ago(s.ends_at)
        labels = " ".join(f"{k}={v}" for k, v in sorted(s.metadata.items()))
        styled = Text(state, style=_STATE_STYLE.get(s.state.value, ""))
        out.append([s.sandbox_id, s.template, s.runtime, styled, fmt_ago(s.created_at), ends, labels])
    return out


@click.command("ls")
@click.option(
    "--state", "-s", multiple=True, help="only this state: running, paused, killed (repeatable; default: live)"
)
@click.option(
    "--metadata", "-m", multiple=True, metavar="KEY=VALUE", help="only sandboxes with this label (repeatable)"
)
@click.option("--limit", type=int, default=None, help="at most this many")
@json_option
@pass_api
def command(api: Api, state: tuple[str, ...], metadata: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """List sandboxes (by default the live ones)."""
    labels = pairs(metadata, "--metadata")
    sandboxes = run_async(
        AsyncSandbox.list(metadata=labels, state=list(state) or None, limit=limit, api_url=api.url, api_key=api.key)
    )
    if as_json:
        print_json(sandboxes)
    elif sandboxes:
        headers = ["ID", "TEMPLATE", "RUNTIME", "STATE", "CREATED", "ENDS AT", "METADATA"]
        console().print(table(headers, rows(sandboxes)))
    else:
        click.echo("no sandboxes", err=True)
