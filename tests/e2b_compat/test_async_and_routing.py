"""The async `e2b` SDK (its streaming watch, async callbacks) and host-name routing."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from e2b import AsyncSandbox, FilesystemEvent

from sandlot.api.e2b.routing import ENVD_PORT, SandboxTarget, sandbox_target
from tests.api.harness import Server


def test_sandbox_target_from_headers_and_host_names() -> None:
    assert sandbox_target({"e2b-sandbox-id": "sb-abc", "e2b-sandbox-port": "49999"}, None) == SandboxTarget(
        "sb-abc", 49999
    )
    assert sandbox_target({"e2b-sandbox-id": "sb-abc"}, "127.0.0.1:7770") == SandboxTarget("sb-abc", ENVD_PORT)
    assert sandbox_target({}, "49983-sb-0123456789abcdef.sandlot.example.com") == SandboxTarget(
        "sb-0123456789abcdef", 49983
    )
    assert sandbox_target({}, "api.sandlot.example.com") is None
    assert sandbox_target({}, "127.0.0.1:7770") is None


@pytest.mark.integration
@pytest.mark.slow
def test_async_sdk_commands_and_streaming_watch(e2b_env: dict[str, str], api_server: Server) -> None:
    async def scenario() -> tuple[list[str], list[FilesystemEvent], str]:
        sbx = await AsyncSandbox.create(template="base", timeout=120)
        try:
            out: list[str] = []

            async def on_stdout(text: str) -> None:
                out.append(text)

            await sbx.commands.run("echo async-out", on_stdout=on_stdout)
            events: list[FilesystemEvent] = []
            await sbx.files.make_dir("/tmp/aw")
            handle = await sbx.files.watch_dir("/tmp/aw", on_event=events.append)
            await sbx.files.write("/tmp/aw/f.txt", "x")
            for _ in range(50):
                if any(e.name == "f.txt" for e in events):
                    break
                await asyncio.sleep(0.1)
            await handle.stop()
            # The in-sandbox API by host name, as a wildcard-DNS deployment reaches it.
            async with httpx.AsyncClient() as c:
                r = await c.get(
                    f"{api_server.url}/files",
                    params={"path": "/tmp/aw/f.txt"},
                    headers={
                        "Host": f"{ENVD_PORT}-{sbx.sandbox_id}.sandlot.test",
                        "X-Access-Token": sbx._envd_access_token or "",
                    },
                )
            return out, events, r.text
        finally:
            await sbx.kill()

    out, events, via_host = asyncio.run(scenario())
    assert out == ["async-out\n"]
    assert any(e.name == "f.txt" for e in events), events
    assert via_host == "x"


@pytest.mark.integration
def test_envd_rejects_a_wrong_access_token(e2b_env: dict[str, str], api_server: Server) -> None:
    r = httpx.get(
        f"{api_server.url}/health",
        headers={"E2b-Sandbox-Id": "sb-0000000000000000", "X-Access-Token": "forged"},
    )
    assert r.status_code == 401 and "access token" in r.json()["message"]
    garbage = httpx.post(
        f"{api_server.url}/process.Process/List",
        headers={"E2b-Sandbox-Id": "../../etc", "Content-Type": "application/json"},
        content=b"{",
    )
    assert garbage.status_code in (401, 404)
