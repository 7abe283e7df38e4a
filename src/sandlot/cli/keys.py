"""`sandlot keys create|list|revoke`: API keys (needs an admin key); `sandlot keys ssh add|list|rm`: SSH keys.

The SDK has no keys client yet, so these speak the documented endpoints
(POST/GET /keys, DELETE /keys/{id}) through the SDK's HTTP transport, which
maps error bodies to SandlotError like every other call.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from sandlot.cli._common import Api, call_api, console, fmt_time, json_option, pass_api, print_json, run_async, table
from sandlot.models import KeyCreated, KeyInfo, KeyList, SshKeyInfo, SshKeyList

__all__ = ["command"]


def rows(keys: list[KeyInfo]) -> list[list[str | Text]]:
    return [
        [
            k.key_id,
            k.team,
            "yes" if k.admin else "",
            fmt_time(k.created_at),
            Text("revoked", style="red") if k.revoked else Text("active", style="green"),
            k.name,
        ]
        for k in keys
    ]


@click.group("keys")
def command() -> None:
    """Manage API keys (admin) and your team's SSH keys (keys ssh)."""


@command.command("create")
@click.option("--team", default="default", show_default=True, help="the team whose sandboxes the key sees")
@click.option("--name", default="", help="a note: who or what uses it")
@click.option("--admin", is_flag=True, help="the key may also manage keys")
@click.option("--e2b", "e2b", is_flag=True, help="print it in the form the E2B SDKs accept (e2b_ + hex; the same key)")
@json_option
@pass_api
def create(api: Api, team: str, name: str, admin: bool, e2b: bool, as_json: bool) -> None:
    """Make a key; prints it (the only time it is shown)."""
    body: dict[str, Any] = {"team": team, "name": name, "admin": admin}
    raw = run_async(call_api(api, lambda t: t.json("POST", "/keys", json=body)))
    created = KeyCreated.model_validate(raw)
    if as_json:
        print_json(created)
        return
    click.echo(created.e2b_key if e2b else created.key)
    click.echo(f"sandlot: key {created.key_id} for team {created.team} (shown once: store it now)", err=True)


@command.command("list")
@json_option
@pass_api
def list_(api: Api, as_json: bool) -> None:
    """List keys (never the keys themselves)."""
    keys = KeyList.model_validate(run_async(call_api(api, lambda t: t.json("GET", "/keys")))).keys
    if as_json:
        print_json(keys)
    else:
        console().print(table(["KEY ID", "TEAM", "ADMIN", "CREATED", "STATE", "NAME"], rows(keys)))


@command.command("revoke")
@click.argument("key_id")
@pass_api
def revoke(api: Api, key_id: str) -> None:
    """Revoke a key: it stops working at once."""
    run_async(call_api(api, lambda t: t.request("DELETE", f"/keys/{key_id}")))
    click.echo(key_id)


@command.group("ssh")
def ssh_group() -> None:
    """SSH public keys of your team: they log in with ssh -p PORT SANDBOX_ID@host."""


@ssh_group.command("add")
@click.argument("pubkey_file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--name", default="", help="a note (default: the key's comment)")
@click.option("--team", default=None, help="another team's (admin keys only)")
@json_option
@pass_api
def ssh_add(api: Api, pubkey_file: Path, name: str, team: str | None, as_json: bool) -> None:
    """Register a public key (e.g. ~/.ssh/id_ed25519.pub; - reads stdin)."""
    text = sys.stdin.read() if str(pubkey_file) == "-" else pubkey_file.read_text()
    body: dict[str, Any] = {"public_key": text, "name": name, "team": team}
    info = SshKeyInfo.model_validate(run_async(call_api(api, lambda t: t.json("POST", "/ssh-keys", json=body))))
    if as_json:
        print_json(info)
        return
    click.echo(info.key_id)
    click.echo(f"sandlot: {info.algorithm} key {info.fingerprint} logs in for team {info.team}", err=True)


@ssh_group.command("list")
@json_option
@pass_api
def ssh_list(api: Api, as_json: bool) -> None:
    """List the team's SSH keys."""
    keys = SshKeyList.model_validate(run_async(call_api(api, lambda t: t.json("GET", "/ssh-keys")))).keys
    if as_json:
        print_json(keys)
        return
    rows: list[list[str | Text]] = [
        [k.key_id, k.team, k.algorithm, k.fingerprint, fmt_time(k.created_at), k.name] for k in keys
    ]
    console().print(table(["KEY ID", "TEAM", "TYPE", "FINGERPRINT", "ADDED", "NAME"], rows))


@ssh_group.command("rm")
@click.argument("key_id")
@pass_api
def ssh_rm(api: Api, key_id: str) -> None:
    """Remove an SSH key: it stops logging in at once."""
    run_async(call_api(api, lambda t: t.request("DELETE", f"/ssh-keys/{key_id}")))
    click.echo(key_id)
