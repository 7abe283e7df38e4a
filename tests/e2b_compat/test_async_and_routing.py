"""The async `e2b` SDK (its streaming watch, async callbacks) and host-name routing."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from e2b import AsyncSandbox, FilesystemEvent

from sandlot.api.e2b import routing
from sandlot.api.e2b.routing import ENVD_PORT, find_target
from sandlot.api.host_routing import HostRoutes
from tests.api.harness import Server


async def _proxy(scope: object, receive: object, send: object) -> None:
    raise AssertionError("not called")


def test_e2b_targets_from_headers_and_host_names() -> None:
    assert find_target({"e2b-sandbox-id": "sb-abc", "e2b-sandbox-port": "49999"}) == ("sb-abc", 49999)
    assert find_target({"e2b-sandbox-id": "sb-abc", "host": "127.0.0.1:7770"}) == ("sb-abc", ENVD_PORT)
    assert find_target({"e2b-sandbox-id": "../../etc"}) == ("invalid", ENVD_PORT)
    assert find_target({"host": "127.0.0.1:7770"}) is None
    routes = HostRoutes("sandlot.example.com", _proxy)
    routing.install(routes)
    sid = "sb-0123456789abcdef"
    assert routes.target({"host": f"49983-{sid}.sandlot.example.com"}) == (sid, 49983)
    assert routes.target({"e2b-sandbox-id": sid, "e2b-sandbox-port": "8000"}) == (sid, 8000)
    assert routes.mounted_path((sid, 49983), "/files") == f"/e2b-sandbox/{sid}/49983/files"
    assert routes.mounted_path((sid, 8000), "/") is None  # any other port: the port proxy's
    assert routes.target({"host": "api.sandlot.example.com"}) is None
    assert routes.target({"host": "127.0.0.1:7770"}) is None


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
                        "Host": sbx.get_host(ENVD_PORT),
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
