"""State that outlives a restart, and an agent killed or wedged from the host.

- Idle clocks of persistent sandboxes, timeouts (kill or pause), public ports
  and warm pool sizes are in the store or the node's data directory, never
  only in the server's memory: a server killed and started again acts on
  them as if it had run all along.
- An agent stopped (SIGSTOP) or wedged makes requests fail with a clear 503
  (`agent_unresponsive`) instead of hanging; one killed ends its sandbox, which
  is reported killed with the reason; either kind is killed cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.crash import admin_client, ok, run
from tests.api.harness import Server, agent_available
from tests.leftovers import assert_clean, leftovers

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

HIBERNATE_AFTER = 20
AGENT_TIMEOUT = 3
TIMEOUT = 12


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    if not agent_available():
        pytest.skip("needs the real agent")
    base = Path(tempfile.mkdtemp(prefix="sandlot-resilience-", dir="/var/tmp"))
    extra = ("--hibernate-after", str(HIBERNATE_AFTER), "--agent-timeout", str(AGENT_TIMEOUT))
    srv = Server(base / "data", extra=extra).start()
    try:
        yield srv
    finally:
        srv.stop()
        problems = leftovers(srv.data_dir)
        if not problems:
            shutil.rmtree(base, ignore_errors=True)
        assert problems == [], problems


def _info(c: httpx.Client, sid: str) -> dict[str, Any]:
    return dict(ok(c.get(f"/sandboxes/{sid}")))


def _until(c: httpx.Client, sid: str, state: str, deadline: float) -> dict[str, Any]:
    while (info := _info(c, sid))["state"] != state and time.monotonic() < deadline:
        time.sleep(0.2)
    return info


def test_idle_clocks_timeouts_ports_and_pools_survive_a_restart(server: Server) -> None:
    with admin_client(server) as c:
        ok(c.put("/pools/busybox", json={"size": 1}))
        idle = c.post("/sandboxes", json={"persistent": True}).json()["sandbox_id"]
        web = c.post("/sandboxes", json={"timeout": 3600}).json()["sandbox_id"]
        ok(c.put(f"/sandboxes/{web}/files", params={"path": "/www/index.html"}, content=b"still public"))
        ok(c.post(f"/sandboxes/{web}/commands", json={"cmd": "httpd -f -p 8000 -h /www", "background": True}))
        ok(c.put(f"/sandboxes/{web}/public-ports/8000"))
        token = ok(c.get(f"/sandboxes/{web}/network"))["access_token"]
        dies = c.post("/sandboxes", json={"timeout": TIMEOUT}).json()["sandbox_id"]
        sleeps = c.post("/sandboxes", json={"timeout": TIMEOUT, "on_timeout": "pause"}).json()["sandbox_id"]
        assert run(c, idle, "echo used")[1] == "used\n"
        used = time.monotonic()
    server.kill()
    # Down for longer than the idle time and the timeouts: the restarted server must act on them at
    # once, as if it had run all along (not count from its own start).
    time.sleep(max(0.0, used + HIBERNATE_AFTER + 1 - time.monotonic()))
    server.start()
    ready = time.monotonic()
    with admin_client(server) as c:
        soon = ready + HIBERNATE_AFTER / 2
        assert _until(c, idle, "hibernated", soon)["state"] == "hibernated"
        info = _until(c, dies, "killed", soon)
        assert (info["state"], info["exit_reason"]) == ("killed", "its timeout passed"), info
        info = _until(c, sleeps, "paused", soon)
        assert (info["state"], info["exit_reason"]) == ("paused", "paused at its timeout"), info
        # The port is still public (no token), and the token still opens the sandbox's private ones.
        deadline = time.monotonic() + 20
        while (r := httpx.get(f"{server.url}/sandboxes/{web}/ports/8000/index.html")).status_code == 502:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert (r.status_code, r.text) == (200, "still public")
        assert ok(c.get(f"/sandboxes/{web}/network"))["access_token"] == token
        # The pool set over the API is kept, and filled again.
        deadline = time.monotonic() + 60
        while (pools := ok(c.get("/pools"))["pools"]) and pools[0]["idle"] < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [(p["template"], p["size"], p["idle"]) for p in pools] == [("busybox", 1, 1)]
        ok(c.put("/pools/busybox", json={"size": 0}))
        while ok(c.get("/pools"))["pools"][0]["idle"] and time.monotonic() < deadline:
            time.sleep(0.5)
        for sid in (idle, web, sleeps):
            assert c.delete(f"/sandboxes/{sid}").status_code == 204


def _host_pids(sid: str) -> list[int]:
    """The sandbox's host processes, from its pids cgroup (gVisor's sentry and stubs; crun's agent)."""
    procs = Path(f"/sys/fs/cgroup/pids/sandlot/{sid}/cgroup.procs")
    if not procs.exists():
        procs = Path(f"/sys/fs/cgroup/sandlot/{sid}/cgroup.procs")
    return [int(p) for p in procs.read_text().split()]


@pytest.mark.parametrize("runtime", ["gvisor", "container"])
def test_an_agent_stopped_or_killed_from_the_host(server: Server, runtime: str) -> None:
    with admin_client(server) as c:
        wedged = c.post("/sandboxes", json={"runtime": runtime, "timeout": 3600}).json()["sandbox_id"]
        killed = c.post("/sandboxes", json={"runtime": runtime, "timeout": 3600}).json()["sandbox_id"]
        assert run(c, wedged, "echo up") == (0, "up\n")
        for pid in _host_pids(wedged):
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        r = c.post(f"/sandboxes/{wedged}/commands", json={"cmd": "echo hi"})
        assert r.status_code == 503 and r.json()["code"] == "agent_unresponsive", r.text
        assert "agent answered nothing" in r.json()["message"] and time.monotonic() - started < 30
        assert c.delete(f"/sandboxes/{wedged}").status_code == 204
        # Killed: the sandbox ends, and says why.
        init = int((server.data_dir / "sandboxes" / killed / "bundle" / "pid").read_text())
        os.kill(init, signal.SIGKILL)
        info = _until(c, killed, "killed", time.monotonic() + 30)
        assert info["state"] == "killed" and "agent" in info["exit_reason"], info
        r = c.post(f"/sandboxes/{killed}/commands", json={"cmd": "true"})
        assert r.status_code == 409 and "agent" in r.json()["message"], r.text
        assert c.delete(f"/sandboxes/{killed}").status_code == 204
    assert_clean(server.data_dir, gone={wedged, killed})
