"""Sandlot's MCP tools over both transports, with the `mcp` client library, on real gVisor sandboxes.

HTTP: `/mcp` on the API server, with the caller's API key. stdio: `sandlot mcp`
as an MCP client launches it, pointed at the same server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from typing import Any

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, ImageContent, TextContent

from sandlot.node.images import ImageStore
from tests.api.harness import IMAGE_CACHE, ROOT, Server
from tests.mcp_tools.conftest import http_session

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


async def call(session: ClientSession, tool: str, **args: Any) -> dict[str, Any]:
    res = await session.call_tool(tool, args)
    assert not res.is_error, f"{tool}: {_text(res)}"
    assert res.structured_content is not None
    return res.structured_content


async def fails(session: ClientSession, tool: str, **args: Any) -> str:
    res = await session.call_tool(tool, args)
    assert res.is_error, f"{tool} should have failed: {res}"
    text = _text(res)
    assert "Traceback" not in text
    return text


def _text(res: CallToolResult) -> str:
    return "".join(c.text for c in res.content if isinstance(c, TextContent))


def test_http_needs_a_valid_key(api_server: Server) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    r = httpx.post(f"{api_server.url}/mcp", json=body, timeout=60)
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    r = httpx.post(f"{api_server.url}/mcp", json=body, headers={"Authorization": "Bearer sl_nope"}, timeout=60)
    assert r.status_code == 401 and "not valid" in r.json()["message"]


def test_http_tools_drive_a_sandbox(api_server: Server, mcp_key: str) -> None:
    async def scenario() -> None:
        async with http_session(api_server.url, mcp_key) as s:
            names = {t.name for t in (await s.list_tools()).tools}
            assert {"create_sandbox", "run_command", "run_code", "read_file", "fork", "expose_port"} <= names
            sid = (await call(s, "create_sandbox", template="busybox", timeout=300))["sandbox_id"]
            assert sid in [x["sandbox_id"] for x in (await call(s, "list_sandboxes"))["sandboxes"]]

            res = await call(s, "run_command", sandbox_id=sid, command="echo out; echo err >&2; exit 3")
            assert (res["exit_code"], res["stdout"], res["stderr"]) == (3, "out\n", "err\n")
            res = await call(s, "run_command", sandbox_id=sid, command="sleep 30", timeout=1)
            assert res["timed_out"] is True

            await call(s, "write_file", sandbox_id=sid, path="/data/www/a.txt", content="hello mcp")
            blob = bytes(range(256))
            b64 = base64.b64encode(blob).decode()
            await call(s, "write_file", sandbox_id=sid, path="/data/b.bin", content=b64, encoding="base64")
            assert (await call(s, "read_file", sandbox_id=sid, path="/data/www/a.txt"))["content"] == "hello mcp"
            got = await call(s, "read_file", sandbox_id=sid, path="/data/b.bin", encoding="base64")
            assert base64.b64decode(got["content"]) == blob
            assert "encoding='base64'" in await fails(s, "read_file", sandbox_id=sid, path="/data/b.bin")
            entries = (await call(s, "list_files", sandbox_id=sid, path="/data"))["entries"]
            assert {"www", "b.bin"} <= {e["name"] for e in entries}

            # A server in the sandbox: its URL through the API, and a download from inside the sandbox.
            started = await call(
                s, "run_command", sandbox_id=sid, command="httpd -p 8000 -h /data/www", background=True
            )
            assert started["pid"] > 0
            port = await call(s, "expose_port", sandbox_id=sid, port=8000)
            async with httpx.AsyncClient() as http:
                for _ in range(50):
                    r = await http.get(port["url"] + "a.txt", headers={port["header"]: port["access_token"]})
                    if r.status_code == 200:
                        break
                    await asyncio.sleep(0.2)
            assert r.text == "hello mcp"
            up = await call(
                s, "upload_from_url", sandbox_id=sid, url="http://127.0.0.1:8000/a.txt", path="/data/dl/copy.txt"
            )
            assert up["size"] == len("hello mcp")
            # network "none": nothing outside the sandbox is reachable, and the error says why
            msg = await fails(
                s, "upload_from_url", sandbox_id=sid, url="http://203.0.113.1/x", path="/tmp/x", timeout=20
            )
            assert "downloading http://203.0.113.1/x" in msg

            ck = await call(s, "checkpoint", sandbox_id=sid, name="clean")
            await call(s, "write_file", sandbox_id=sid, path="/data/www/a.txt", content="changed")
            await call(s, "restore", sandbox_id=sid, checkpoint_id=ck["checkpoint_id"])
            assert (await call(s, "read_file", sandbox_id=sid, path="/data/www/a.txt"))["content"] == "hello mcp"
            kids = (await call(s, "fork", checkpoint_id=ck["checkpoint_id"], count=1))["sandbox_ids"]
            res = await call(s, "run_command", sandbox_id=kids[0], command="cat /data/www/a.txt")
            assert res["stdout"] == "hello mcp"
            for x in [*kids, sid]:
                assert (await call(s, "kill_sandbox", sandbox_id=x))["killed"] is True

    asyncio.run(scenario())


def test_bad_input_and_other_teams_get_clear_tool_errors(api_server: Server, admin: httpx.Client, mcp_key: str) -> None:
    other = admin.post("/keys", json={"team": "mcp-other"}).json()["key"]

    async def scenario() -> None:
        async with http_session(api_server.url, mcp_key) as s:
            msg = await fails(s, "run_command", sandbox_id="nope", command="true")
            assert msg.startswith("invalid arguments for run_command: sandbox_id: String should match pattern")
            assert "pydantic.dev" not in msg
            assert "timeout" in await fails(s, "create_sandbox", template="busybox", timeout=0)
            assert "network" in await fails(s, "create_sandbox", network="everything")
            assert "image_not_found" in await fails(s, "create_sandbox", template="no-such-template")
            missing = "sb-0000000000000000"
            assert f"sandbox {missing} not found" in await fails(s, "kill_sandbox", sandbox_id=missing)
            sid = (await call(s, "create_sandbox", template="busybox"))["sandbox_id"]
            assert "no such file or directory: /no/such/file" in await fails(
                s, "read_file", sandbox_id=sid, path="/no/such/file"
            )
            assert "base64" in await fails(
                s, "write_file", sandbox_id=sid, path="/tmp/x", content="%%", encoding="base64"
            )
            async with http_session(api_server.url, other) as o:  # another team's key sees nothing of it
                assert "not found" in await fails(o, "run_command", sandbox_id=sid, command="true")
                assert sid not in [x["sandbox_id"] for x in (await call(o, "list_sandboxes"))["sandboxes"]]
            await call(s, "kill_sandbox", sandbox_id=sid)

    asyncio.run(scenario())


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_run_code_returns_figures_as_images(api_server: Server, mcp_key: str) -> None:
    ImageStore(IMAGE_CACHE).ensure("code-interpreter")  # built once per cache (minutes), not inside a tool call

    async def scenario() -> None:
        async with http_session(api_server.url, mcp_key) as s:
            sid = (await call(s, "create_sandbox", template="code-interpreter"))["sandbox_id"]
            await s.call_tool("run_code", {"sandbox_id": sid, "code": "x = 6 * 7"})
            res = await s.call_tool(
                "run_code",
                {"sandbox_id": sid, "code": "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]); plt.show()\nx"},
            )
            assert not res.is_error, _text(res)
            summary = json.loads(_text(res))
            assert summary["text"] == "42" and summary["error"] is None
            images = [c for c in res.content if isinstance(c, ImageContent)]
            assert images and base64.b64decode(images[0].data).startswith(b"\x89PNG")
            res = await s.call_tool("run_code", {"sandbox_id": sid, "code": "1 / 0"})
            assert json.loads(_text(res))["error"]["name"] == "ZeroDivisionError"
            await call(s, "kill_sandbox", sandbox_id=sid)

    asyncio.run(scenario())


def test_stdio_server_points_at_a_remote_sandlot(api_server: Server, mcp_key: str) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "sandlot.cli", "mcp"],
        env={"SANDLOT_API_URL": api_server.url, "SANDLOT_API_KEY": mcp_key, "PATH": os.environ["PATH"]},
        cwd=str(ROOT),
    )

    async def scenario() -> None:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            assert "run_command" in {t.name for t in (await s.list_tools()).tools}
            sid = (await call(s, "create_sandbox", template="busybox"))["sandbox_id"]
            res = await call(s, "run_command", sandbox_id=sid, command="uname -s; cat /proc/version")
            assert res["exit_code"] == 0 and res["stdout"].startswith("Linux")
            assert "sandbox_id" in await fails(s, "kill_sandbox", sandbox_id="x")
            await call(s, "kill_sandbox", sandbox_id=sid)

    asyncio.run(scenario())
