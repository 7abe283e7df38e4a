"""`sandlot keys create|list|revoke`: API keys (needs an admin key).

The SDK has no keys client yet, so these speak the documented endpoints
(POST/GET /keys, DELETE /keys/{id}) through the SDK's HTTP transport, which
maps error bodies to SandlotError like every other call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich.text import Text

from sandlot.cli._common import Api, console, fmt_time, json_option, pass_api, print_json, run_async, table
from sandlot.models import KeyCreated, KeyInfo, KeyList
from sandlot.sdk._transport import Transport

__all__ = ["command"]

T = TypeVar("T")


async def _call(api: Api, fn: Callable[[Transport], Awaitable[T]]) -> T:
    transport = Transport(api.url, api.key, None)
    try:
        return await fn(transport)
    finally:
        await transport.close()


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
    """Manage API keys (admin)."""


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
    raw = run_async(_call(api, lambda t: t.json("POST", "/keys", json=body)))
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
    keys = KeyList.model_validate(run_async(_call(api, lambda t: t.json("GET", "/keys")))).keys
    if as_json:
        print_json(keys)
    else:
        console().print(table(["KEY ID", "TEAM", "ADMIN", "CREATED", "STATE", "NAME"], rows(keys)))


@command.command("revoke")
@click.argument("key_id")
@pass_api
def revoke(api: Api, key_id: str) -> None:
    """Revoke a key: it stops working at once."""
    run_async(_call(api, lambda t: t.request("DELETE", f"/keys/{key_id}")))
    click.echo(key_id)
