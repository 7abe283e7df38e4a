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
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.api.harness import ROOT, agent_available
from tests.api.test_postgres import cluster, postgres_url  # noqa: F401 - fixtures
from tests.fleet.harness import NODE_TIMEOUT, Fleet, create, run, states, wait

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]


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
            wait("three active nodes", lambda: set(states(c).values()) == {"active"} and len(states(c)) == 3, 400)
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


def test_placement_spreads_and_every_path_works_through_the_other_replica(fleet: Fleet) -> None:
    with fleet.client(0) as a, fleet.client(1) as b:
        made = [create(a) for _ in range(3)]
        assert {m["node"] for m in made} == {"n1", "n2", "n3"}
        made.append(create(b, node_labels={"zone": "b"}))
        assert made[-1]["node"] == "n2"
        r = b.post("/sandboxes", json={"template": "busybox", "node_labels": {"gpu": "true"}})
        assert r.status_code == 503 and "gpu=true" in r.json()["message"], r.text
        for m in made:
            sid = m["sandbox_id"]
            assert b.get(f"/sandboxes/{sid}").json()["node"] == m["node"]
            # commands (and their streamed form), through the replica that did not create it
            assert run(b, sid, "echo hi from $(hostname)")["stdout"].startswith("hi from")
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
        page = wait(
            "the port", lambda: (r := b.get(f"/sandboxes/{sid}/ports/8081/index.html")).status_code == 200 and r
        )
        assert page.text == "page"
        # its metrics, sampled on its node, through the replica
        samples = wait("a sample", lambda: b.get(f"/sandboxes/{sid}/metrics").json()["metrics"])
        assert samples[-1]["mem_total"] > 0 and samples[-1]["pids"] > 0
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
        made = [create(a) for _ in range(3)]
        victim = next(m for m in made if m["node"] == "n3")
        sid = victim["sandbox_id"]
        run(b, sid, "echo before > /tmp/mark")
        fleet.nodes["n3"].kill()  # SIGKILL: its sandboxes keep running
        wait("n3 unreachable", lambda: states(a)["n3"] == "unreachable", NODE_TIMEOUT + 20)
        info = b.get(f"/sandboxes/{sid}").json()
        assert info["state"] == "unknown", info
        r = b.post(f"/sandboxes/{sid}/commands", json={"cmd": "true"})
        assert r.status_code == 503 and r.json()["code"] == "node_unreachable", r.text
        assert b.delete(f"/sandboxes/{sid}").status_code == 503  # never recorded killed behind its back
        assert {create(b)["node"] for _ in range(2)} <= {"n1", "n2"}  # creates go elsewhere
        fleet.nodes["n3"].start()  # it rejoins and re-adopts its sandboxes
        wait("n3 back", lambda: states(a)["n3"] == "active", 120)
        wait("the sandbox back", lambda: b.get(f"/sandboxes/{sid}").json()["state"] == "running", 60)
        assert run(b, sid, "cat /tmp/mark")["stdout"] == "before\n"
        for s in a.get("/sandboxes").json()["sandboxes"]:
            a.delete(f"/sandboxes/{s['sandbox_id']}")


def test_a_replica_killed_loses_nothing(fleet: Fleet) -> None:
    with fleet.client(0) as a:
        sid = create(a)["sandbox_id"]
    fleet.replicas[0].kill()
    try:
        with fleet.client(1) as b:
            assert b.get(f"/sandboxes/{sid}").json()["state"] == "running"
            assert run(b, sid, "echo still")["stdout"] == "still\n"
            assert create(b)["node"] in {"n1", "n2", "n3"}
    finally:
        fleet.replicas[0].start()
        wait("replica0 back", lambda: httpx.get(fleet.replica_urls[0] + "/openapi.json", timeout=2).status_code == 200)


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
        assert all(create(b)["node"] != "n2" for _ in range(3))
        assert states(b)["n2"] == "draining"
        fleet.nodes["n2"].stop()
        cli("nodes", "rm", "n2")
        assert "n2" not in states(b)
        r = b.post("/nodes/nope/drain")
        assert r.status_code == 404 and "nope" in r.json()["message"]
