"""Persistent sandboxes hibernate when idle and wake on the next request; timeouts kill or pause."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from tests.api.harness import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"


def _out(c: httpx.Client, sid: str, cmd: str) -> str:
    r = c.post(f"/sandboxes/{sid}/commands", json={"cmd": cmd})
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.text.splitlines() if line]
    return "".join(e["data"] for e in events if e["type"] == "stdout")


Info = dict[str, object]


def _until(c: httpx.Client, sid: str, ok: Callable[[Info], bool], timeout: float = 30) -> Info:
    deadline = time.monotonic() + timeout
    while True:
        info = dict(c.get(f"/sandboxes/{sid}").json())
        if ok(info) or time.monotonic() > deadline:
            return info
        time.sleep(0.3)


EVENT_LOOP = """
import asyncio
async def answer(r, w):
    w.write(b"hi"); await w.drain(); w.close()
async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", 8000)
    await server.serve_forever()
asyncio.run(main())
"""
ASK = 'import socket; print(socket.create_connection(("127.0.0.1", 8000)).recv(10).decode())'


def test_persistent_hibernate_wake_restart_and_timeouts(tmp_path_factory: pytest.TempPathFactory) -> None:
    extra = ("--hibernate-after", "2", "--max-lifetime", "3600")
    server = Server(tmp_path_factory.mktemp("persistent") / "data", extra=extra).start()
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            r = c.post("/sandboxes", json={"timeout": 7200})
            assert r.status_code == 400 and r.json()["field"] == "timeout", r.text
            assert "at most 3600 s" in r.json()["message"]
            # A persistent sandbox outlives its timeout and hibernates when idle, with its memory (gvisor)...
            sid = c.post("/sandboxes", json={"persistent": True, "timeout": 1}).json()["sandbox_id"]
            pid = c.post(f"/sandboxes/{sid}/commands", json={"cmd": COUNTER, "background": True}).json()["pid"]
            # ... and without (container: processes stopped, files kept).
            crun = c.post("/sandboxes", json={"persistent": True, "runtime": "container"}).json()["sandbox_id"]
            _out(c, crun, "echo kept > /tmp/f")
            # Ephemeral ones: killed at their timeout, or paused with on_timeout=pause.
            dies = c.post("/sandboxes", json={"timeout": 1}).json()["sandbox_id"]
            pauses = c.post("/sandboxes", json={"timeout": 1, "on_timeout": "pause"}).json()["sandbox_id"]
            # One whose memory gVisor cannot save (an event-loop server listens): frozen at its timeout.
            body = {"template": "debian", "timeout": 600, "on_timeout": "pause"}
            serves = c.post("/sandboxes", json=body).json()["sandbox_id"]
            c.post(f"/sandboxes/{serves}/commands", json={"cmd": f"python3 -c '{EVENT_LOOP}'", "background": True})
            deadline = time.monotonic() + 30
            while _out(c, serves, f"python3 -c '{ASK}' 2>/dev/null") != "hi\n":
                assert time.monotonic() < deadline, "the event-loop server did not answer"
                time.sleep(0.3)
            assert c.post(f"/sandboxes/{serves}/timeout", json={"timeout": 1}).status_code == 200
            info = _until(c, sid, lambda i: i["state"] == "hibernated")
            assert info["state"] == "hibernated" and info["persistent"] is True, info
            assert _until(c, crun, lambda i: i["state"] == "hibernated")["state"] == "hibernated"
            assert _until(c, dies, lambda i: i["state"] == "killed")["exit_reason"] == "its timeout passed"
            paused = _until(c, pauses, lambda i: i["state"] == "paused")
            assert paused["state"] == "paused" and paused["on_timeout"] == "pause", paused
            assert (server.data_dir / "sandboxes" / pauses / "memory" / "checkpoint.img").exists()
            frozen = _until(c, serves, lambda i: i["state"] in ("paused", "killed"))
            assert frozen["state"] == "paused", frozen
            assert not (server.data_dir / "sandboxes" / serves / "memory" / "checkpoint.img").exists()
            assert c.post(f"/sandboxes/{serves}/resume").json()["state"] == "running"
            assert _out(c, serves, f"python3 -c '{ASK}'") == "hi\n"  # the server ran on, frozen and thawed
            assert c.delete(f"/sandboxes/{serves}").status_code == 204
        server.kill()
        server.start()
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            assert c.get(f"/sandboxes/{sid}").json()["state"] == "hibernated"
            # The next request wakes it transparently: the loop runs on, same process, same variable.
            count = int(_out(c, sid, f"kill -0 {pid} && cat /tmp/count"))
            assert count >= 5
            assert c.get(f"/sandboxes/{sid}").json()["state"] == "running"
            assert _out(c, crun, "cat /tmp/f") == "kept\n"
            # Resuming a sandbox paused at its timeout gives it a fresh timeout.
            r = c.post(f"/sandboxes/{pauses}/resume")
            assert r.status_code == 200 and r.json()["state"] == "running" and r.json()["ends_at"] > time.time()
            assert _out(c, pauses, "echo back") == "back\n"
            for s in (sid, crun, pauses):
                assert c.delete(f"/sandboxes/{s}").status_code == 204
    finally:
        server.stop()
