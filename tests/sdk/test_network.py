"""The SDK's network surface: `create(network=...)`, `get_url`/`get_host`, `network.update`, public ports."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from sandlot import Sandbox, errors
from tests.api.harness import agent_available

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SERVER_SRC = (Path(__file__).parent.parent / "api" / "port_server.py").read_text()


def test_a_server_in_a_sandbox_by_url_and_host(sdk_env: str) -> None:
    if not agent_available():
        pytest.skip("ports need the real agent")
    with Sandbox.create("debian", network={"mode": "egress", "allow": ["198.18.0.0/24"]}) as sbx:
        assert (
            sbx.access_token
            and sbx.get_host(8000) == f"8000-{sbx.sandbox_id}.localhost:{sbx.get_url(1).split(':')[2].split('/')[0]}"
        )
        sbx.files.write("/srv.py", SERVER_SRC)
        sbx.commands.run("python3 /srv.py 8000", background=True)
        url = sbx.get_url(8000, "/greet")
        deadline = time.monotonic() + 30
        while (r := httpx.get(url, headers={"X-Sandlot-Access-Token": sbx.access_token})).status_code == 502:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert r.status_code == 200 and r.text.startswith("hello /greet")
        host, port = sbx.get_host(8000).rsplit(":", 1)
        r = httpx.get(f"http://127.0.0.1:{port}/h", headers={"Host": f"{host}:{port}"})
        assert r.status_code == 401
        assert sbx.network.set_public(8000).public_ports == [8000]
        r = httpx.get(f"http://127.0.0.1:{port}/h", headers={"Host": f"{host}:{port}"})
        assert r.status_code == 200 and r.text.startswith("hello /h")
        info = sbx.network.update("full", deny=["198.18.0.3"])
        assert info.mode == "full" and info.deny == ["198.18.0.3/32"]
        assert sbx.network.get().mode == "full"
        with pytest.raises(errors.InvalidArgumentError) as exc:
            sbx.network.update("full", allow=["bad host!"])
        assert exc.value.field == "network.allow"


def test_get_host_answers_by_name_with_nothing_set_by_hand(sdk_env: str) -> None:
    """`*.localhost` resolves (nss-myhostname, from setup.sh) and the server answers at every address it gives."""
    if not agent_available():
        pytest.skip("ports need the real agent")
    with Sandbox.create("debian") as sbx:
        host = sbx.get_host(8000)
        name, port = host.rsplit(":", 1)
        addrs = {a[4][0] for a in socket.getaddrinfo(name, int(port), type=socket.SOCK_STREAM)}
        assert addrs <= {"127.0.0.1", "::1"} and "::1" in addrs, addrs  # ::1 first, then 127.0.0.1
        for addr in addrs:  # the server listens where the name leads, whichever a client tries first
            socket.create_connection((addr, int(port)), timeout=10).close()
        sbx.files.write("/srv.py", SERVER_SRC)
        sbx.commands.run("python3 /srv.py 8000", background=True)
        sbx.network.set_public(8000)
        deadline = time.monotonic() + 30
        while (r := httpx.get(f"http://{host}/by-name")).status_code == 502:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert r.status_code == 200 and r.text.startswith("hello /by-name"), r.text


def test_network_none_cannot_be_changed_live(sdk_env: str) -> None:
    with Sandbox.create() as sbx:
        assert sbx.network.get().mode == "none"
        with pytest.raises(errors.SandboxStateError, match="network 'none'"):
            sbx.network.update("full")
