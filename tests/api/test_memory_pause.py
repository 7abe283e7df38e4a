"""Pause with memory to disk over HTTP: it survives a SIGKILLed server and resumes where it stopped."""

from __future__ import annotations

import json
import time

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


def test_memory_pause_survives_a_server_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = Server(tmp_path_factory.mktemp("mempause") / "data").start()
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            sid = c.post("/sandboxes", json={}).json()["sandbox_id"]
            crun = c.post("/sandboxes", json={"runtime": "container"}).json()["sandbox_id"]
            r = c.post(f"/sandboxes/{crun}/pause", json={"memory": True})
            assert r.status_code == 400 and r.json()["field"] == "memory", r.text
            assert "runtime 'container' cannot pause a sandbox with its memory" in r.json()["message"]
            assert c.get(f"/sandboxes/{crun}").json()["state"] == "running"
            pid = c.post(f"/sandboxes/{sid}/commands", json={"cmd": COUNTER, "background": True}).json()["pid"]
            time.sleep(1.5)
            r = c.post(f"/sandboxes/{sid}/pause", json={"memory": True})
            assert r.status_code == 200 and r.json()["state"] == "paused", r.text
            sdir = server.data_dir / "sandboxes" / sid
            assert (sdir / "memory" / "checkpoint.img").exists()
        server.kill()
        server.start()
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            assert c.get(f"/sandboxes/{sid}").json()["state"] == "paused"
            assert c.post(f"/sandboxes/{sid}/resume").json()["state"] == "running"
            before = int(_out(c, sid, "cat /tmp/count"))
            assert before >= 5  # the loop's variable came back from disk, not restarted at 1
            time.sleep(0.5)
            after = int(_out(c, sid, f"kill -0 {pid} && cat /tmp/count"))
            assert after > before
            assert not (sdir / "memory").exists()
            assert c.delete(f"/sandboxes/{sid}").status_code == 204
            assert c.delete(f"/sandboxes/{crun}").status_code == 204
    finally:
        server.stop()
