"""MCP tests drive a real server (gVisor sandboxes) with the official `mcp` client library."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.api.conftest import admin, api_server, new_team_client  # noqa: F401 - fixtures
from tests.api.harness import Server


@pytest.fixture(scope="module")
def mcp_key(api_server: Server, admin: httpx.Client) -> Iterator[str]:  # noqa: F811
    """A key of a team of its own; its sandboxes are killed afterwards."""
    r = admin.post("/keys", json={"team": "mcp-tests"})
    assert r.status_code == 201, r.text
    key = str(r.json()["key"])
    yield key
    with httpx.Client(base_url=api_server.url, headers={"X-API-Key": key}) as c:
        for s in c.get("/sandboxes").json()["sandboxes"]:
            c.delete(f"/sandboxes/{s['sandbox_id']}")


@asynccontextmanager
async def http_session(url: str, key: str) -> AsyncIterator[ClientSession]:
    async with (
        create_mcp_http_client(headers={"X-API-Key": key}) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session
