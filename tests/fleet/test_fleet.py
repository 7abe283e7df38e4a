"""A fleet on one machine: PostgreSQL, two API replicas, three node daemons.

Each daemon has its own data directory (so its own runsc root and sandbox state),
its own port and its own sandbox subnet; every one shares the host's image cache.
The test proves: placement spreads; every path works through the replica that did
not create the sandbox; a node SIGKILLed leaves its sandboxes `unknown` (never
killed) and re-adopts them when it returns; a replica SIGKILLed loses nothing;
drain and remove; `sandlot nodes ls`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.api.harness import IMAGE_CACHE, ROOT, Subprocess, agent_available, free_port
from tests.api.test_postgres import postgres_url  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

TOKEN = "fleet-test-node-token"
NODE_TIMEOUT = 6  # seconds without a heartbeat before a node is unreachable (30 by default)


def _wait(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if result := check():
                return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Proc(Subprocess):
    """A `sandlot` subprocess (replica or node daemon) with its log."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name, self.args, self.log = name, args, log
        self.proc = None

    def start(self) -> Proc:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandlot.cli", *self.args],
                cwd=ROOT,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return self

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class Fleet:
    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.database_url = database_url
        self.replicas: list[Proc] = []
        self.replica_urls: list[str] = []
        self.nodes: dict[str, Proc] = {}

    def add_replica(self) -> str:
        i = len(self.replicas)
        port = free_port()
        data = self.root / f"replica{i}"
        args = ["serve", "--port", str(port), "--data-dir", str(data), "--database-url", self.database_url,
                "--no-local-node", "--node-token", TOKEN, "--node-timeout", str(NODE_TIMEOUT),
                "--default-template", "busybox", "--log-level", "info"]  # fmt: skip
        self.replicas.append(Proc(f"replica{i}", args, self.root / f"replica{i}.log").start())
        url = f"http://127.0.0.1:{port}"
        self.replica_urls.append(url)
        _wait(f"replica{i} to answer", lambda: httpx.get(url + "/openapi.json", timeout=5).status_code == 200, 300)
        return url

    def add_node(self, name: str, api_url: str, subnet: str, *labels: str) -> Proc:
        port = free_port()
        args = ["node", "--api-url", api_url, "--token", TOKEN, "--name", name,
                "--data-dir", str(self.root / name), "--images-dir", str(IMAGE_CACHE), "--port", str(port),
                "--subnet", subnet, "--warm-template", "busybox", "--no-dns", "--heartbeat", "1", "--kill-on-shutdown",
                "--log-level", "info"]  # fmt: skip
        for label in labels:
            args += ["--label", label]
        node = self.nodes[name] = Proc(name, args, self.root / f"{name}.log").start()
        return node

    @property
    def admin_key(self) -> str:
        return str(_wait("the admin key", lambda: (self.root / "replica0" / "admin.key").read_text().strip()))

    def client(self, i: int) -> httpx.Client:
        return httpx.Client(base_url=self.replica_urls[i], headers={"X-API-Key": self.admin_key}, timeout=120)


def _states(c: httpx.Client) -> dict[str, str]:
    return {n["name"]: n["state"] for n in c.get("/nodes").json()["nodes"]}


@pytest.fixture(scope="module")
def fleet(postgres_url: str) -> Iterator[Fleet]:  # noqa: F811
    if os.geteuid() != 0 or not agent_available():
        pytest.skip("a fleet runs real nodes: needs root and the agent's source")
    root = Path(tempfile.mkdtemp(prefix="sandlot-fleet-", dir="/var/tmp"))
    f = Fleet(root, postgres_url)
    try:
        a = f.add_replica()
        f.add_replica()
        f.add_node("n1", a, "10.242.240.0/24")
        f.add_node("n2", a, "10.242.241.0/24", "zone=b")
        f.add_node("n3", f.replica_urls[1], "10.242.242.0/24")  # any replica takes a node in
        with f.client(0) as c:
            _wait("three active nodes", lambda: set(_states(c).values()) == {"active"} and len(_states(c)) == 3, 400)
        yield f
    except BaseException:
        for p in (*f.replicas, *f.nodes.values()):
            print(f"--- {p.name}\n{p.tail()}")
        raise
    finally:
        with contextlib.suppress(Exception), f.client(1) as c:
            for sbx in c.get("/sandboxes", params={"limit": 200}).json()["sandboxes"]:
                c.delete(f"/sandboxes/{sbx['sandbox_id']}")
        for p in (*f.nodes.values(), *f.replicas):
            p.stop(60)
        shutil.rmtree(root, ignore_errors=True)


def _create(c: httpx.Client, **body: Any) -> dict[str, Any]:
    r = c.post("/sandboxes", json={"template": "busybox", **body})
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def _run(c: httpx.Client, sid: str, cmd: str) -> dict[str, Any]:
    """Run a command; its stdout and exit code, from the streamed NDJSON events."""
    r = c.post(f"/sandboxes/{sid}/commands", json={"cmd": cmd})
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    stdout = "".join(e["data"] for e in events if e["type"] == "stdout")
    return {"stdout": stdout, "exit_code": next(e["exit_code"] for e in events if e["type"] == "exit")}


def test_placement_spreads_and_every_path_works_through_the_other_replica(fleet: Fleet) -> None:
    with fleet.client(0) as a, fleet.client(1) as b:
        made = [_create(a) for _ in range(3)]
        assert {m["node"] for m in made} == {"n1", "n2", "n3"}
        made.append(_create(b, node_labels={"zone": "b"}))
        assert made[-1]["node"] == "n2"
        r = b.post("/sandboxes", json={"template": "busybox", "node_labels": {"gpu": "true"}})
        assert r.status_code == 503 and "gpu=true" in r.json()["message"], r.text
        for m in made:
            sid = m["sandbox_id"]
            assert b.get(f"/sandboxes/{sid}").json()["node"] == m["node"]
            # commands (and their streamed form), through the replica that did not create it
            assert _run(b, sid, "echo hi from $(hostname)")["stdout"].startswith("hi from")
            with b.stream("POST", f"/sandboxes/{sid}/commands", json={"cmd": "for i in 1 2 3; do echo $i; done"},
                          headers={"Accept": "text/event-stream"}) as r:  # fmt: skip
                assert r.status_code == 200 and "3" in r.read().decode()
            # files
            r = b.put(f"/sandboxes/{sid}/files", params={"path": "/tmp/f.txt"}, content=b"fleet file")
            assert r.status_code == 200, r.text
            assert a.get(f"/sandboxes/{sid}/files", params={"path": "/tmp/f.txt"}).content == b"fleet file"
        sid = made[0]["sandbox_id"]
        # a port, through the replica
        assert b.put(f"/sandboxes/{sid}/files", params={"path": "/www/index.html"}, content=b"page").status_code == 200
        r = b.post(f"/sandboxes/{sid}/commands", json={"cmd": "httpd -f -p 8081 -h /www", "background": True})
        assert r.status_code in (200, 201), r.text
        page = _wait(
            "the port", lambda: (r := b.get(f"/sandboxes/{sid}/ports/8081/index.html")).status_code == 200 and r
        )
        assert page.text == "page"
        # a terminal (WebSocket) through the replica
        ws_url = fleet.replica_urls[1].replace("http", "ws") + f"/sandboxes/{sid}/pty?cmd=/bin/sh"
        with connect(ws_url, additional_headers={"X-API-Key": fleet.admin_key}) as ws:
            ws.send(b"echo pty-$((6*7)); exit\n")
            seen = b""
            with contextlib.suppress(Exception):
                while b"pty-42" not in seen:
                    msg = ws.recv(timeout=30)
                    seen += msg if isinstance(msg, bytes) else msg.encode()
            assert b"pty-42" in seen
        # kill through the other replica
        for m in made:
            assert b.delete(f"/sandboxes/{m['sandbox_id']}").status_code == 204
            assert a.get(f"/sandboxes/{m['sandbox_id']}").json()["state"] == "killed"


def test_a_dead_node_makes_its_sandboxes_unknown_and_adopts_them_back(fleet: Fleet) -> None:
    with fleet.client(0) as a, fleet.client(1) as b:
        made = [_create(a) for _ in range(3)]
        victim = next(m for m in made if m["node"] == "n3")
        sid = victim["sandbox_id"]
        _run(b, sid, "echo before > /tmp/mark")
        fleet.nodes["n3"].kill()  # SIGKILL: its sandboxes keep running
        _wait("n3 unreachable", lambda: _states(a)["n3"] == "unreachable", NODE_TIMEOUT + 20)
        info = b.get(f"/sandboxes/{sid}").json()
        assert info["state"] == "unknown", info
        r = b.post(f"/sandboxes/{sid}/commands", json={"cmd": "true"})
        assert r.status_code == 503 and r.json()["code"] == "node_unreachable", r.text
        assert b.delete(f"/sandboxes/{sid}").status_code == 503  # never recorded killed behind its back
        assert {_create(b)["node"] for _ in range(2)} <= {"n1", "n2"}  # creates go elsewhere
        fleet.nodes["n3"].start()  # it rejoins and re-adopts its sandboxes
        _wait("n3 back", lambda: _states(a)["n3"] == "active", 120)
        _wait("the sandbox back", lambda: b.get(f"/sandboxes/{sid}").json()["state"] == "running", 60)
        assert _run(b, sid, "cat /tmp/mark")["stdout"] == "before\n"
        for s in a.get("/sandboxes").json()["sandboxes"]:
            a.delete(f"/sandboxes/{s['sandbox_id']}")


def test_a_replica_killed_loses_nothing(fleet: Fleet) -> None:
    with fleet.client(0) as a:
        sid = _create(a)["sandbox_id"]
    fleet.replicas[0].kill()
    try:
        with fleet.client(1) as b:
            assert b.get(f"/sandboxes/{sid}").json()["state"] == "running"
            assert _run(b, sid, "echo still")["stdout"] == "still\n"
            assert _create(b)["node"] in {"n1", "n2", "n3"}
    finally:
        fleet.replicas[0].start()
        _wait("replica0 back", lambda: httpx.get(fleet.replica_urls[0] + "/openapi.json", timeout=2).status_code == 200)


def test_nodes_ls_drain_and_rm(fleet: Fleet) -> None:
    env = {**os.environ, "SANDLOT_API_URL": fleet.replica_urls[1], "SANDLOT_API_KEY": fleet.admin_key}

    def cli(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "sandlot.cli", *args], env=env, capture_output=True, text=True,
                           timeout=60, cwd=ROOT)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = cli("nodes", "ls")
    assert "n1" in out and "n2" in out and "zone=b" in out and "active" in out
    assert "n2 draining" in cli("nodes", "drain", "n2")
    with fleet.client(1) as b:
        assert all(_create(b)["node"] != "n2" for _ in range(3))
        assert _states(b)["n2"] == "draining"
        fleet.nodes["n2"].stop()
        cli("nodes", "rm", "n2")
        assert "n2" not in _states(b)
        r = b.post("/nodes/nope/drain")
        assert r.status_code == 404 and "nope" in r.json()["message"]
