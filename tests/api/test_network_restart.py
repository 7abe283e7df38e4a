"""Networks across a server crash: kept for live sandboxes, swept for the dead ones."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.api.harness import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _netns(sid: str) -> bool:
    return Path(f"/run/netns/sandlot-{sid}").exists()


def _table(sid: str) -> bool:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return f"sandlot_{sid.replace('-', '_')}" in out


def _iface(sid: str) -> bool:
    return Path(f"/sys/class/net/sl{sid[-13:]}").exists()


def test_sigkill_restart_keeps_live_networks_and_sweeps_dead_ones(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = Server(tmp_path_factory.mktemp("netrestart") / "data").start()
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            keep = c.post("/sandboxes", json={"network": {"mode": "egress", "allow": ["198.18.0.0/24"]}}).json()
            gone = c.post("/sandboxes", json={"network": "full"}).json()["sandbox_id"]
            kid = keep["sandbox_id"]
            assert c.put(f"/sandboxes/{kid}/public-ports/8080").json()["public_ports"] == [8080]
            assert _netns(kid) and _netns(gone) and _table(gone) and _iface(gone)
        server.kill()
        os.kill(int((server.data_dir / "sandboxes" / gone / "bundle" / "pid").read_text()), signal.SIGKILL)
        time.sleep(0.5)
        server.start()
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            net = c.get(f"/sandboxes/{kid}").json()["network"]
            assert net["mode"] == "egress" and net["allow"] == ["198.18.0.0/24"]
            assert net["access_token"] == keep["network"]["access_token"] and net["public_ports"] == [8080]
            assert c.put(f"/sandboxes/{kid}/network", json={"mode": "full"}).json()["mode"] == "full"
            assert c.get(f"/sandboxes/{gone}").json()["state"] == "killed"
            assert not _netns(gone) and not _table(gone) and not _iface(gone)
            assert c.delete(f"/sandboxes/{kid}").status_code == 204
            assert not _netns(kid) and not _table(kid) and not _iface(kid)
    finally:
        server.stop()
