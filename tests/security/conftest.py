"""The security battery: what untrusted code (and another team) tries first, each asserting it fails.

Fixtures here give every module a host-side canary (files an escape would read
or change, and a TCP service on the host's loopback an escape would reach), a
victim team and an attacker team on the session's API server, and helpers to
run commands and probes in their sandboxes. Every test ends by checking that
the canary is untouched: an attack must fail without side effects on the host.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import admin, api_server, new_team_client  # noqa: F401 - fixtures
from tests.api.harness import Server, agent_available

pytestmark = pytest.mark.integration

#: A probe run inside a sandbox (python3): connect to each host:port, print {target: outcome}.
PROBE = r"""
import json, socket, sys, concurrent.futures as cf
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()  # the control: its own loopback works
targets = [("127.0.0.1", srv.getsockname()[1])] + [tuple(t) for t in json.loads(sys.argv[1])]
def probe(t):
    try:
        socket.create_connection(t, timeout=3).close()
        return "open"
    except Exception as e:
        return type(e).__name__
with cf.ThreadPoolExecutor(32) as ex:
    out = dict(zip(["%s:%s" % t for t in targets], ex.map(probe, targets)))
print(json.dumps(out))
"""


@dataclass
class Canary:
    """Host files an escape would read or change, and a host loopback service it would reach."""

    dir: Path
    token: str
    port: int
    connections: list[str] = field(default_factory=list)

    @property
    def secret(self) -> Path:
        return self.dir / "secret"

    def snapshot(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted(self.dir.iterdir())}


@pytest.fixture(scope="session")
def canary() -> Iterator[Canary]:
    d = Path(f"/var/tmp/sandlot-sec-{secrets.token_hex(6)}")
    d.mkdir(mode=0o755)
    token = secrets.token_hex(16)
    (d / "secret").write_text(token + "\n")
    (d / "ld.so.preload").write_text("# the host's own\n")  # what the node writes into sandboxes, by name
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    c = Canary(d, token, srv.getsockname()[1])

    def accept() -> None:
        while True:
            try:
                conn, peer = srv.accept()
            except OSError:
                return
            c.connections.append(str(peer))
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    before = c.snapshot()
    yield c
    srv.close()
    assert c.snapshot() == before, "a sandbox changed the host's files"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def canary_untouched(canary: Canary) -> Iterator[None]:
    """After every attack: the host's canary files are as they were, and nothing reached its service."""
    before = canary.snapshot()
    yield
    assert canary.snapshot() == before, "the host's canary files changed"
    assert canary.connections == [], f"something reached the host's loopback service: {canary.connections}"


@pytest.fixture(scope="session")
def real_agent() -> None:
    if not agent_available():
        pytest.skip("the security battery needs real sandboxes")


def _team(api_server: Server, admin: httpx.Client, name: str) -> httpx.Client:  # noqa: F811
    team = f"{name}-{secrets.token_hex(3)}"
    c = new_team_client(api_server, admin, team)
    c.headers[TEAM_HEADER] = team  # for the tests' own use (the server ignores it)
    return c


#: where a team client keeps its team's name
TEAM_HEADER = "X-Test-Team"


def team_of(c: httpx.Client) -> str:
    return c.headers[TEAM_HEADER]


@pytest.fixture(scope="module")
def victim(api_server: Server, admin: httpx.Client, real_agent: None) -> Iterator[httpx.Client]:  # noqa: F811
    with _team(api_server, admin, "victim") as c:
        yield c
        _clean(c)


@pytest.fixture(scope="module")
def attacker(api_server: Server, admin: httpx.Client, real_agent: None) -> Iterator[httpx.Client]:  # noqa: F811
    with _team(api_server, admin, "attacker") as c:
        yield c
        _clean(c)


def _clean(c: httpx.Client) -> None:
    for s in c.get("/sandboxes").json()["sandboxes"]:
        c.delete(f"/sandboxes/{s['sandbox_id']}")
    for v in c.get("/volumes").json()["volumes"]:
        c.delete(f"/volumes/{v['name']}")


def create(c: httpx.Client, **body: object) -> dict:  # type: ignore[type-arg]
    r = c.post("/sandboxes", json={"timeout": 600, **body})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def sh(c: httpx.Client, sid: str, cmd: str, timeout: float = 60) -> tuple[str, str, int | None]:
    """Run a shell command in a sandbox: (stdout, stderr, exit code)."""
    r = c.post(f"/sandboxes/{sid}/commands", json={"cmd": cmd, "timeout": timeout}, timeout=timeout + 30)
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.text.splitlines() if line]
    out = "".join(e["data"] for e in events if e["type"] == "stdout")
    err = "".join(e["data"] for e in events if e["type"] == "stderr")
    code = next((e.get("exit_code") for e in events if e["type"] == "exit"), None)
    return out, err, code


def probe(c: httpx.Client, sid: str, targets: list[tuple[str, int]]) -> dict[str, str]:
    """Try TCP connections from inside the sandbox; the first entry of the answer is its own loopback (open)."""
    out, err, code = sh(c, sid, f"python3 -c '{PROBE}' '{json.dumps(targets)}'")
    assert code == 0, err
    result: dict[str, str] = json.loads(out)
    assert next(iter(result.values())) == "open", result  # the probe itself works
    return result


def host_addresses() -> list[str]:
    """Every IPv4 address of the host (loopback and its interfaces)."""
    addrs = {"127.0.0.1"}
    for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
        addrs.add(str(info[4][0]))
    import subprocess

    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    addrs |= {line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3}
    return sorted(addrs)
