"""`sandlot mcp`: Sandlot's tools for an MCP client (Claude Desktop, Cursor, ...) over stdio.

    {"mcpServers": {"sandlot": {"command": "sandlot", "args": ["mcp"],
                                "env": {"SANDLOT_API_URL": "https://sandlot.example", "SANDLOT_API_KEY": "sl_..."}}}}

The tools call the Sandlot server at --api-url / $SANDLOT_API_URL with the key
--api-key / $SANDLOT_API_KEY, so this machine needs only the client and the
`mcp` package (`pip install 'sandlot[mcp]'`). stdout carries the protocol:
nothing else is printed there.
"""

from __future__ import annotations

import logging
import sys

import click

from sandlot.cli._common import Api, pass_api, require_extra

__all__ = ["command"]


@click.command("mcp")
@pass_api
def command(api: Api) -> None:
    """Serve Sandlot's MCP tools on stdin/stdout (for Claude Desktop, Cursor, ...)."""
    require_extra("mcp", "mcp")
    from sandlot.mcp import build_server

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    build_server(api.url, api.key).run("stdio")
