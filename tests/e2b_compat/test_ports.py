"""`get_host(port)` of the e2b SDK reaches a server in the sandbox through Sandlot's port proxy.

The host name is E2B's `{port}-{id}.{domain}`; the domain the server hands out
is its ports domain plus its own port. On a host set up by scripts/setup.sh
`*.localhost` resolves (nss-myhostname) and the server listens on both
loopbacks, so `http://{get_host(port)}/` works as it is; the other tests send
the Host header to the server's address, as a wildcard DNS name would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox

from tests.api.harness import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVER = "cd /tmp && echo served > index.html && exec python3 -m http.server 8000"


def _get(api_server: Server, host: str, headers: dict[str, str] | None = None) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(f"{api_server.url}/index.html", headers={"Host": host, **(headers or {})}, timeout=10)
        if r.status_code != 502 or time.monotonic() > deadline:  # 502: the server is not listening yet
            return r
        time.sleep(0.3)


@pytest.fixture(scope="module")
def private_sbx(e2b_env: dict[str, str]) -> Iterator[Sandbox]:
    s = Sandbox.create(template="base", timeout=300, network={"allow_public_traffic": False})
    yield s
    s.kill()


def test_get_host_reaches_a_server_in_the_sandbox(e2b_env: dict[str, str], api_server: Server) -> None:
    sbx = Sandbox.create(template="base", timeout=300)
    try:
        sbx.commands.run(SERVER, background=True)
        host = sbx.get_host(8000)
        assert host == f"8000-{sbx.sandbox_id}.localhost:{api_server.url.rsplit(':', 1)[1]}"
        r = _get(api_server, host)
        assert r.status_code == 200 and r.text == "served\n"
        r = httpx.get(f"http://{host}/index.html", timeout=10)  # by name, nothing set by hand
        assert r.status_code == 200 and r.text == "served\n"
        nothing_there = {"Host": sbx.get_host(8001)}  # one try: _get would wait out its 30 s for a 502
        r = httpx.get(f"{api_server.url}/index.html", headers=nothing_there, timeout=10)
        assert r.status_code == 502 and "8001" in r.json()["message"]
    finally:
        sbx.kill()


def test_private_traffic_needs_the_traffic_token(private_sbx: Sandbox, api_server: Server) -> None:
    private_sbx.commands.run(SERVER, background=True)
    host = private_sbx.get_host(8000)
    assert _get(api_server, host).status_code == 401
    token = private_sbx.traffic_access_token
    assert token
    r = _get(api_server, host, {"e2b-traffic-access-token": token})
    assert r.status_code == 200 and r.text == "served\n"
