"""Sandlot as an MCP server: sandboxes as tools for Claude Desktop, Cursor and other MCP clients.

One set of tools (`sandlot.mcp.tools`), built on the official `mcp` SDK, serves
both transports:

- stdio: `sandlot mcp` (a client command: `pip install 'sandlot[mcp]'`), which
  may point at any Sandlot server with --api-url / --api-key;
- streamable HTTP at `/mcp` on the API server, authenticated with an API key
  (`sandlot.api.mcp_http`).

The tools are a client of Sandlot: they call it through its own SDK
(`AsyncSandbox`, ...) over HTTP, so they reach only what the caller's key may.
"""

from __future__ import annotations

__all__ = ["build_server"]

from sandlot.mcp.tools import build_server
