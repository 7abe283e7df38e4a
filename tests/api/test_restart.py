"""A server killed with SIGKILL finds its sandboxes again; the ones that died meanwhile are cleaned up."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.api.harness import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(str(path) in line for line in f)


def test_sigkill_restart_readopts_and_cleans(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = Server(tmp_path_factory.mktemp("restart") / "data").start()
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            live = c.post("/sandboxes", json={"metadata": {"who": "live"}}).json()["sandbox_id"]
            dead = c.post("/sandboxes", json={}).json()["sandbox_id"]
            paused = c.post("/sandboxes", json={}).json()["sandbox_id"]
            assert c.post(f"/sandboxes/{paused}/pause").json()["state"] == "paused"
            assert c.put(f"/sandboxes/{live}/files", params={"path": "/tmp/keep"}, content=b"kept").status_code == 200
        server.kill()
        # One sandbox dies while no server watches it.
        dead_dir = server.data_dir / "sandboxes" / dead
        os.kill(int((dead_dir / "bundle" / "pid").read_text()), signal.SIGKILL)
        time.sleep(0.5)
        server.start()
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            info = c.get(f"/sandboxes/{live}").json()
            assert info["state"] == "running" and info["metadata"] == {"who": "live"}
            assert c.get(f"/sandboxes/{live}/files", params={"path": "/tmp/keep"}).content == b"kept"
            r = c.post(f"/sandboxes/{live}/commands", json={"cmd": "echo alive"})
            assert '"data":"alive\\n"' in r.text
            # A paused sandbox survives the restart, still paused, and resumes.
            assert c.get(f"/sandboxes/{paused}").json()["state"] == "paused"
            assert c.post(f"/sandboxes/{paused}/resume").json()["state"] == "running"
            r = c.post(f"/sandboxes/{paused}/commands", json={"cmd": "echo thawed"})
            assert '"data":"thawed\\n"' in r.text
            info = c.get(f"/sandboxes/{dead}").json()
            assert info["state"] == "killed" and info["exit_reason"].startswith("lost"), info
            assert not dead_dir.exists() and not _mounted(dead_dir)
            assert c.delete(f"/sandboxes/{live}").status_code == 204
            assert not (server.data_dir / "sandboxes" / live).exists()
    finally:
        server.stop()
