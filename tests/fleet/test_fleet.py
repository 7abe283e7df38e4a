"""A fleet on one machine: PostgreSQL, two API replicas, three node daemons.

Each daemon has its own data directory (so its own runsc root and sandbox state),
its own port and its own sandbox subnet; every one shares the host's image cache.
The test proves: placement spreads, and stops at a node's committed limits; every
path works through the replica that did not create the sandbox; a template made on
one node is copied to a node without it; a node SIGKILLed leaves its sandboxes
`unknown` (never killed) and re-adopts them when it returns; a volume keeps every
sandbox that mounts it on its node; a replica SIGKILLed loses nothing; drain moves
persistent sandboxes (their disks) to other nodes that carry their labels, and a move
cut short by a node killed midway loses nothing; remove; `sandlot nodes ls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from sandlot import errors
from sandlot.api.fleet.fleet import Fleet as Fleet_
from sandlot.api.fleet.fleet import NodeTaken
from sandlot.api.store import Store, database_url_for
from sandlot.api.teams import Teams
from sandlot.e2b_env import env_exports
from sandlot.node.protocol import Limits, NodeInfo, SandboxSpec
from tests.api.harness import ROOT, agent_available, tar_of
from tests.api.test_postgres import Cluster, cluster, postgres_url  # noqa: F401 - fixtures
from tests.fleet.harness import NODE_TIMEOUT, Fleet, create, node_templates, run, states, wait

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

HIBERNATE_AFTER = 6  # seconds without a request before a persistent sandbox hibernates


@pytest.fixture(scope="module")
def fleet(postgres_url: str) -> Iterator[Fleet]:  # noqa: F811
    if os.geteuid() != 0 or not agent_available():
        pytest.skip("a fleet runs real nodes: needs root and the agent's source")
    root = Path(tempfile.mkdtemp(prefix="sandlot-fleet-", dir="/var/tmp"))
    f = Fleet(root, postgres_url)
    try:
        a = f.add_replica("--hibernate-after", str(HIBERNATE_AFTER))
        f.add_replica("--hibernate-after", str(HIBERNATE_AFTER))
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


def test_two_replicas_never_overshoot_a_team_quota_or_overcommit_a_node(cluster: Cluster) -> None:  # noqa: F811
    """Admission and placement as two replicas see them: two stores on one PostgreSQL database,
    many creates at once, each holding its room until released."""
    url = database_url_for(Path("/nonexistent"), cluster.new_database("reservations"))

    async def held_at_once(cms: list[contextlib.AbstractAsyncContextManager[None]], fit: int) -> None:
        """Enter every one at once and hold them: exactly `fit` get in (the rest are refused)."""
        release = asyncio.Event()

        async def hold(cm: contextlib.AbstractAsyncContextManager[None]) -> bool:
            try:
                async with cm:
                    await release.wait()
                    return True
            except (errors.LimitReachedError, NodeTaken):
                return False

        tasks = [asyncio.ensure_future(hold(cm)) for cm in cms]
        deadline = time.monotonic() + 60
        while sum(not t.done() for t in tasks) > fit and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # none of the held ones is refused late
        held = sum(not t.done() for t in tasks)
        release.set()
        assert held == fit
        assert sum(await asyncio.gather(*tasks)) == fit

    async def main() -> None:
        stores = [Store(url), Store(url)]
        await stores[0].init()
        fleets = [Fleet_(s, "token", lambda *_: None) for s in stores]
        # 8 creates of one team at once, half through each replica: exactly 3 are admitted
        await stores[0].set_team_quota("t", {"max_sandboxes": 3})
        teams = [Teams(f, s) for f, s in zip(fleets, stores, strict=True)]
        await held_at_once([teams[i % 2].admit("t", sandboxes=1, what="create") for i in range(8)], 3)
        async with teams[1].admit("t", sandboxes=3, what="create"):
            pass  # released: the room is back
        # 8 creates of 4 GiB at once onto a node with 10 GiB free: exactly 2 are placed
        gib = 1 << 30
        info = NodeInfo(name="big", version="0", default_runtime="gvisor", runtimes=["gvisor"], sandboxes=0,
                        cpus=2, memory_total_bytes=16 * gib, memory_available_bytes=10 * gib,
                        disk_total_bytes=100 * gib, disk_free_bytes=100 * gib, templates=[])  # fmt: skip
        await fleets[0].registry.join("big", "http://127.0.0.1:9", {}, info)
        await fleets[0].registry.heartbeat("big", info)
        spec = SandboxSpec(image="busybox", runtime="gvisor", limits=Limits(memory_mb=4096, disk_mb=1024))
        await held_at_once([fleets[i % 2].reserve("big", spec) for i in range(8)], 2)
        async with fleets[0].reserve("big", spec), fleets[1].reserve("big", spec):
            assert [n.sandboxes for n in await fleets[1].registry.list()] == [2]  # ranking counts them
        for s in stores:
            await s.close()

    asyncio.run(main())


def test_placement_spreads_and_every_path_works_through_the_other_replica(fleet: Fleet) -> None:
    with fleet.client(0) as a, fleet.client(1) as b:
        made = [create(a) for _ in range(3)]
        assert {m["node"] for m in made} == {"n1", "n2", "n3"}
        made.append(create(b, node_labels={"zone": "b"}))
        assert made[-1]["node"] == "n2"
        r = b.post("/sandboxes", json={"template": "busybox", "node_labels": {"gpu": "true"}})
        assert r.status_code == 503 and "gpu=true" in r.json()["message"], r.text
        # what each node has committed (limits of 1 cpu and 512 MiB each), and no more than its cores x 4
        nodes = {n["name"]: n for n in b.get("/nodes").json()["nodes"]}
        assert {k: n["committed_cpu"] for k, n in nodes.items()} == {"n1": 1, "n2": 2, "n3": 1}
        assert {k: n["committed_memory_bytes"] >> 20 for k, n in nodes.items()} == {"n1": 512, "n2": 1024, "n3": 512}
        most = max(n["committed_cpu_max"] for n in nodes.values())
        assert most == 4 * max(n["cpus"] for n in nodes.values())
        if most < 64:  # the most a sandbox may ask
            r = b.post("/sandboxes", json={"template": "busybox", "cpu": most})
            assert r.status_code == 503 and "--cpu-overcommit" in r.json()["message"], r.text
            assert all(f"node {k} has" in r.json()["message"] for k in nodes), r.text
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


def test_a_template_is_copied_to_a_node_that_lacks_it(fleet: Fleet) -> None:
    """A template built on one node runs on a node without it (n1-n3 share an image cache, so a
    fourth node with its own joins for this): the replica copies it there first, its start
    command included, and the node keeps it."""
    name = "fleet-copied"
    with fleet.client(0) as a, fleet.client(1) as b:
        dockerfile = b"FROM busybox\nCOPY hello.txt /hello.txt\n"
        context = tar_of({"Dockerfile": dockerfile, "hello.txt": b"from the template\n"})
        r = a.post("/templates/build", params={"name": name}, content=context, timeout=300)
        assert '"type":"template"' in r.text.replace(" ", ""), r.text
        start = {"cmd": "echo started > /tmp/started; exec sleep 100000", "ready_cmd": "test -f /tmp/started"}
        assert a.put(f"/templates/{name}/start", json=start).status_code == 200
        n4 = fleet.add_node("n4", fleet.replica_urls[0], "10.242.243.0/24", "zone=d", images=fleet.root / "n4-images")
        try:
            wait("n4 active", lambda: states(a).get("n4") == "active", 300)
            assert name not in node_templates(a, "n4")
            # twice: the second create comes before n4's heartbeat lists the template
            made = [create(b, template=name, node_labels={"zone": "d"}) for _ in range(2)]
            assert [m["node"] for m in made] == ["n4", "n4"]
            for m in made:
                out = run(b, m["sandbox_id"], "cat /hello.txt /tmp/started")["stdout"]
                assert out == "from the template\nstarted\n"
                assert b.delete(f"/sandboxes/{m['sandbox_id']}").status_code == 204
            assert name in node_templates(a, "n4")
        finally:
            n4.stop(60)
            a.delete("/nodes/n4")
        assert a.delete(f"/templates/{name}").status_code == 204


def test_watch_network_pause_checkpoints_through_the_other_replica(fleet: Fleet) -> None:
    with fleet.client(0) as a, fleet.client(1) as b:
        sid = create(a, network={"mode": "egress", "allow": ["198.18.0.0/24"]})["sandbox_id"]
        assert run(a, sid, "mkdir -p /tmp/w && echo v1 > /tmp/w/f")["exit_code"] == 0
        assert run(a, sid, "true")["exit_code"] == 0  # replica a now holds the sandbox's status
        # a watch through b sees a write through a
        with b.stream("GET", f"/sandboxes/{sid}/files/watch", params={"path": "/tmp/w"}) as stream:
            assert a.put(f"/sandboxes/{sid}/files", params={"path": "/tmp/w/new"}, content=b"x").status_code == 200
            ev = next(json.loads(line) for line in stream.iter_lines() if line.strip() and "new" in line)
        assert ev["type"] == "fs" and ev["path"].endswith("/tmp/w/new")
        # a network policy changed through b reads back through a (its status there is stale now)
        r = b.put(f"/sandboxes/{sid}/network", json={"mode": "full", "deny": ["198.18.0.3"]})
        assert r.status_code == 200 and r.json()["mode"] == "full", r.text
        assert a.get(f"/sandboxes/{sid}/network").json()["deny"] == ["198.18.0.3/32"]
        assert a.get(f"/sandboxes/{sid}").json()["network"]["mode"] == "full"
        # pause through b: a sees it paused and refuses commands; resume through b, a runs again
        assert b.post(f"/sandboxes/{sid}/pause").json()["state"] == "paused"
        assert a.get(f"/sandboxes/{sid}").json()["state"] == "paused"
        assert a.post(f"/sandboxes/{sid}/commands", json={"cmd": "true"}).status_code == 409
        assert b.post(f"/sandboxes/{sid}/resume").json()["state"] == "running"
        assert run(a, sid, "cat /tmp/w/f")["stdout"] == "v1\n"
        # checkpoint, restore and fork through b
        r = b.post(f"/sandboxes/{sid}/checkpoints", json={"name": "c1"})
        assert r.status_code == 201, r.text
        ck = r.json()["checkpoint_id"]
        run(a, sid, "echo v2 > /tmp/w/f")
        assert b.post(f"/sandboxes/{sid}/restore", json={"checkpoint_id": ck}).status_code == 200
        assert run(a, sid, "cat /tmp/w/f")["stdout"] == "v1\n"
        r = b.post(f"/checkpoints/{ck}/fork", json={"count": 1})
        assert r.status_code == 201, r.text
        child = r.json()["sandboxes"][0]
        assert child["node"] == a.get(f"/sandboxes/{sid}").json()["node"]  # where the checkpoint is
        assert run(a, child["sandbox_id"], "cat /tmp/w/f")["stdout"] == "v1\n"
        for s in (sid, child["sandbox_id"]):
            assert b.delete(f"/sandboxes/{s}").status_code == 204
        assert b.delete(f"/checkpoints/{ck}").status_code == 204


def test_e2b_sdk_and_code_interpreter_through_the_other_replica(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    from e2b import Sandbox as E2BSandbox
    from e2b_code_interpreter import Sandbox as CodeSandbox

    with fleet.client(0) as a:
        key = a.post("/keys", json={"team": "fleet-e2b"}).json()["key"]

    def sdk_to(replica: int) -> None:  # the official SDKs, pointed at one replica
        for k, v in env_exports(fleet.replica_urls[replica], key).items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("E2B_DOMAIN", raising=False)

    sdk_to(0)
    made = CodeSandbox.create(timeout=300)  # code-interpreter-v1, through replica 0
    try:
        sdk_to(1)  # everything else through replica 1: E2B's control plane and envd routes
        s = E2BSandbox.connect(made.sandbox_id)
        assert s.commands.run("echo from-$((6*7))").stdout == "from-42\n"
        s.files.write("/tmp/e2b.txt", "through the other replica")
        assert s.files.read("/tmp/e2b.txt") == "through the other replica"
        assert CodeSandbox.connect(made.sandbox_id).run_code("x = 6\nx * 7").text == "42"
        # Sandlot's own code interpreter route, through replica 1
        with httpx.Client(base_url=fleet.replica_urls[1], headers={"X-API-Key": key}, timeout=120) as b:
            r = b.post(f"/sandboxes/{made.sandbox_id}/code", json={"code": "open('/tmp/e2b.txt').read()"})
            assert r.status_code == 200, r.text
            events = [json.loads(line) for line in r.text.splitlines() if line.strip()]
            assert any(e["type"] == "result" and "other replica" in e["text"] for e in events), events
    finally:
        made.kill()


def test_a_dead_node_makes_its_sandboxes_unknown_and_adopts_them_back(fleet: Fleet) -> None:
    with fleet.client(0) as a, fleet.client(1) as b:
        made = [create(a) for _ in range(6)]  # two on each node
        on_n3 = [m["sandbox_id"] for m in made if m["node"] == "n3"]
        assert len(on_n3) == 2, made
        sid, dead = on_n3
        run(b, sid, "echo before > /tmp/mark")
        fleet.nodes["n3"].kill()  # SIGKILL: its sandboxes keep running
        # one of them dies while its node is away
        os.kill(int((fleet.root / "n3" / "sandboxes" / dead / "bundle" / "pid").read_text()), signal.SIGKILL)
        wait("n3 unreachable", lambda: states(a)["n3"] == "unreachable", NODE_TIMEOUT + 20)
        info = b.get(f"/sandboxes/{sid}").json()
        assert info["state"] == "unknown", info
        r = b.post(f"/sandboxes/{sid}/commands", json={"cmd": "true"})
        assert r.status_code == 503 and r.json()["code"] == "node_unreachable", r.text
        assert b.delete(f"/sandboxes/{sid}").status_code == 503  # never recorded killed behind its back
        assert {create(b)["node"] for _ in range(2)} <= {"n1", "n2"}  # creates go elsewhere
        # a warm pool set while n3 is away: the live nodes keep one each, and n3 once it is back
        r = b.put("/pools/busybox", json={"size": 1})
        assert r.status_code == 200, r.text

        def pool() -> dict[str, int]:
            found = [p for p in a.get("/pools").json()["pools"] if p["template"] == "busybox"]
            return {"size": found[0]["size"], "idle": found[0]["idle"]} if found else {}

        assert pool()["size"] == 2
        fleet.nodes["n3"].start()  # it rejoins and re-adopts its sandboxes
        wait("n3 back", lambda: states(a)["n3"] == "active", 120)
        wait("the sandbox back", lambda: b.get(f"/sandboxes/{sid}").json()["state"] == "running", 60)
        assert run(b, sid, "cat /tmp/mark")["stdout"] == "before\n"
        # the one that died while n3 was away: reported by n3 on its return, killed with the reason
        info = wait("the dead one reconciled", lambda: (i := a.get(f"/sandboxes/{dead}").json())["state"] != "unknown"
                    and i)  # fmt: skip
        assert info["state"] == "killed" and info["exit_reason"].startswith("lost"), info
        wait("n3's pool", lambda: pool() == {"size": 3, "idle": 3}, 120)
        assert b.put("/pools/busybox", json={"size": 0}).status_code == 200
        for s in a.get("/sandboxes").json()["sandboxes"]:
            a.delete(f"/sandboxes/{s['sandbox_id']}")


def test_idle_clocks_are_the_fleets(fleet: Fleet) -> None:
    """Requests through one replica keep a persistent sandbox awake for every replica's reaper;
    once idle it hibernates, and a request through the other replica wakes it."""
    with fleet.client(0) as a, fleet.client(1) as b:
        sid = create(a, persistent=True)["sandbox_id"]
        busy_until = time.monotonic() + HIBERNATE_AFTER * 1.5
        while time.monotonic() < busy_until:
            assert run(a, sid, "true")["exit_code"] == 0
            assert b.get(f"/sandboxes/{sid}").json()["state"] == "running"
            time.sleep(1)
        wait("idle hibernation", lambda: b.get(f"/sandboxes/{sid}").json()["state"] == "hibernated", 60)
        assert run(b, sid, "echo awake")["stdout"] == "awake\n"
        assert a.get(f"/sandboxes/{sid}").json()["state"] == "running"
        assert a.delete(f"/sandboxes/{sid}").status_code == 204


def test_a_team_quota_holds_across_replicas(fleet: Fleet) -> None:
    with fleet.client(0) as a:
        assert a.patch("/teams/fleet-quota/quota", json={"max_sandboxes": 1}).status_code == 200
        key = a.post("/keys", json={"team": "fleet-quota"}).json()["key"]
    clients = [httpx.Client(base_url=u, headers={"X-API-Key": key}, timeout=120) for u in fleet.replica_urls]
    try:
        with ThreadPoolExecutor(2) as pool:  # one create through each replica, at once
            answers = list(pool.map(lambda c: c.post("/sandboxes", json={"template": "busybox"}), clients))
        assert sorted(r.status_code for r in answers) == [201, 429], [r.text for r in answers]
        refused = next(r for r in answers if r.status_code == 429).json()
        assert "max_sandboxes" in refused["message"]
        made = next(r for r in answers if r.status_code == 201).json()["sandbox_id"]
        assert clients[1].delete(f"/sandboxes/{made}").status_code == 204
    finally:
        for c in clients:
            c.close()


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


def _last_seen(c: httpx.Client, name: str) -> float:
    return float(next(n["last_seen"] for n in c.get("/nodes").json()["nodes"] if n["name"] == name))


def test_a_volume_keeps_its_sandboxes_on_its_node(fleet: Fleet) -> None:
    """Every sandbox that mounts a volume is placed on the node that holds it, through either
    replica; with that node dead, such a create fails at once naming the volume and the node,
    while other creates go elsewhere; back, the node serves the volume's files again."""
    mount = {"volumes": [{"name": "kept", "path": "/kept"}]}
    with fleet.client(0) as a, fleet.client(1) as b:
        r = a.post("/volumes", json={"name": "kept", "size_mb": 16})
        assert r.status_code == 201, r.text
        home = r.json()["node"]
        writer = create(a, **mount)
        assert writer["node"] == home
        assert run(a, writer["sandbox_id"], "echo written > /kept/f")["exit_code"] == 0
        assert b.delete(f"/sandboxes/{writer['sandbox_id']}").status_code == 204
        readers = [create(b, **mount) for _ in range(3)]  # placement alone would spread them
        assert [m["node"] for m in readers] == [home] * 3
        for m in readers:
            assert run(b, m["sandbox_id"], "cat /kept/f")["stdout"] == "written\n"
            assert a.delete(f"/sandboxes/{m['sandbox_id']}").status_code == 204
        # The listing of a dead node's volumes is its last heartbeat's: let one come that was
        # wholly taken since the volume exists (on a fast host all of the above fits in one beat).
        for _ in range(2):
            since = _last_seen(a, home)
            wait(f"a heartbeat of {home}", lambda since=since: _last_seen(a, home) > since, NODE_TIMEOUT)
        fleet.nodes[home].kill()
        try:
            for now in ("not answering", "unreachable"):  # at once, then once its heartbeats are stale
                if now == "unreachable":
                    wait(f"{home} unreachable", lambda: states(a)[home] == "unreachable", NODE_TIMEOUT + 20)
                r = b.post("/sandboxes", json={"template": "busybox", **mount}, timeout=NODE_TIMEOUT)
                assert r.status_code == 503 and r.json()["code"] == "node_unreachable", r.text
                # named with its node (from the heartbeats; or the node that did not answer, when its
                # heartbeats had not listed the volume yet): never a 404 while its node is down
                message = r.json()["message"]
                assert "volume 'kept' is on" in message and f"node {home}" in message, r.text
                # still listed, from its node's last heartbeat
                listed = {v["name"]: v for v in a.get("/volumes").json()["volumes"]}
                assert listed["kept"]["node"] == home and listed["kept"]["reachable"] is False, listed
                assert listed["kept"]["size_mb"] == 16 and listed["kept"]["created_at"] > 0, listed
            elsewhere = create(b)
            assert elsewhere["node"] != home
            assert b.delete(f"/sandboxes/{elsewhere['sandbox_id']}").status_code == 204
        finally:
            fleet.nodes[home].start()
        wait(f"{home} back", lambda: states(a)[home] == "active", 120)
        listed = {v["name"]: v for v in b.get("/volumes").json()["volumes"]}
        assert listed["kept"]["node"] == home and listed["kept"]["reachable"] is True, listed
        back = create(b, **mount)
        assert back["node"] == home
        assert run(a, back["sandbox_id"], "cat /kept/f")["stdout"] == "written\n"
        assert a.delete(f"/sandboxes/{back['sandbox_id']}").status_code == 204
        assert b.delete("/volumes/kept").status_code == 204


def test_drain_moves_persistent_sandboxes_and_a_move_cut_short_loses_nothing(fleet: Fleet) -> None:
    """Drain ships a persistent sandbox's disk and checkpoints to another node that carries its labels:
    it keeps its id, files, metadata and checkpoints and wakes there through either replica. While no
    other node carries them, it stays (and wakes) where it is. Its node killed mid-stream: nothing lands
    elsewhere, the sandbox stays whole where it was, and the drain run again moves it."""
    n2, n3 = fleet.nodes["n2"], fleet.nodes["n3"]
    n2.stop()
    n2.start(SANDLOT_FAILPOINTS="node.move.sending=kill")  # dies in the middle of the first disk it sends
    body = {"template": "busybox", "persistent": True, "node_labels": {"zone": "b"}, "metadata": {"owner": "drain"}}
    with fleet.client(0) as a, fleet.client(1) as b:
        made = wait("a sandbox on n2", lambda: (r := a.post("/sandboxes", json=body)).status_code == 201 and r.json())
        sid = made["sandbox_id"]
        assert made["node"] == "n2" and run(a, sid, "mkdir -p /work && echo kept > /work/f")["exit_code"] == 0
        assert b.get(f"/sandboxes/{sid}").json()["node"] == "n2"  # the other replica knows where it was
        r = a.post(f"/sandboxes/{sid}/checkpoints", json={"name": "kept"})  # it moves with the sandbox
        assert r.status_code == 201, r.text
        checkpoint = r.json()["checkpoint_id"]
        assert run(a, sid, "echo later > /work/g")["exit_code"] == 0

        # Only n2 carries zone=b: the drain leaves the sandbox there (nothing is sent), and it wakes there.
        drained = a.post("/nodes/n2/drain").json()
        assert drained["state"] == "draining" and drained["moved"] == {}, drained
        assert "zone=b" in drained["stayed"][sid], drained  # why it stayed: its labels
        assert n2.proc is not None and n2.proc.poll() is None
        assert b.get(f"/sandboxes/{sid}").json()["node"] == "n2"
        assert run(b, sid, "cat /work/f")["stdout"] == "kept\n"
        assert b.get(f"/sandboxes/{sid}").json()["node"] == "n2"

        # n3 rejoins carrying zone=b too (it holds no sandbox of this test).
        n3.stop(60)
        n3.args += ["--label", "zone=b"]
        n3.start()

        def labelled() -> bool:
            nodes = {n["name"]: n for n in a.get("/nodes").json()["nodes"]}
            return nodes["n3"]["state"] == "active" and nodes["n3"]["labels"] == {"zone": "b"}

        wait("n3 back with zone=b", labelled, 300)

        def left(node: str) -> list[Path]:  # what of the sandbox a node holds, and moves half made
            d = fleet.root / node
            return [*(d / "disks" / "sandboxes").glob(f"*{sid}*"), *(d / "sandboxes").glob(sid)]

        assert a.post("/nodes/n2/drain").status_code == 200
        wait("n2 killed mid-move", lambda: n2.proc is not None and n2.proc.poll() is not None)
        assert a.get(f"/sandboxes/{sid}").json()["node"] == "n2"
        assert left("n1") == [] and left("n3") == []
        n2.start()
        seen: list[dict[str, str]] = []

        def back() -> bool:  # live again, and holding it
            seen.append(b.get(f"/sandboxes/{sid}").json())
            return seen[-1]["state"] == "hibernated" and states(a)["n2"] == "draining"

        try:
            wait("n2 back", back, 300)
        except AssertionError:
            raise AssertionError(f"n2 did not come back holding {sid}: {seen[-1:]}") from None

        drained = a.post("/nodes/n2/drain").json()
        assert drained["state"] == "draining" and drained["moved"] == {sid: "n3"} and drained["stayed"] == {}, drained
        info = b.get(f"/sandboxes/{sid}").json()
        assert info["node"] == "n3" and info["state"] == "hibernated", info  # the one node with its labels
        assert info["metadata"] == {"owner": "drain"}
        assert list((fleet.root / "n2" / "disks" / "sandboxes").iterdir()) == []  # the drained node holds no disk
        assert not list((fleet.root / "n2" / "disks" / "checkpoints").glob("ck-*"))  # nor its checkpoint
        listed = b.get(f"/sandboxes/{sid}/checkpoints").json()["checkpoints"]
        assert [(c["checkpoint_id"], c["name"]) for c in listed] == [(checkpoint, "kept")], listed
        assert run(b, sid, "cat /work/f /work/g")["stdout"] == "kept\nlater\n"  # woken on its new node, from its disk
        r = a.post(f"/sandboxes/{sid}/restore", json={"checkpoint_id": checkpoint})
        assert r.status_code == 200, r.text
        assert run(b, sid, "cat /work/f; test -e /work/g || echo rolled back")["stdout"] == "kept\nrolled back\n"
        now = a.get(f"/sandboxes/{sid}").json()
        assert (now["node"], now["state"], now["exit_reason"]) == (info["node"], "running", None), now
        assert a.delete(f"/sandboxes/{sid}").status_code == 204


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
