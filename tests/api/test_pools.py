"""Warm pools over HTTP: admin sets a size, default creates are served from the pool."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def _idle(admin: httpx.Client, template: str) -> int:
    pools = admin.get("/pools").json()["pools"]
    return next((p["idle"] for p in pools if p["template"] == template), 0)


def test_warm_pool_serves_creates(admin: httpx.Client, team: httpx.Client) -> None:
    r = admin.put("/pools/busybox", json={"size": 1})
    assert r.status_code == 200 and r.json()["size"] == 1, r.text
    try:
        deadline = time.monotonic() + 30
        while _idle(admin, "busybox") < 1:
            assert time.monotonic() < deadline, "the pool never filled"
            time.sleep(0.2)
        first = team.post("/sandboxes", json={"template": "busybox", "env": {"WHO": "first"}}).json()
        second = team.post("/sandboxes", json={"template": "busybox"}).json()
        assert first["sandbox_id"] != second["sandbox_id"]
        out = team.post(f"/sandboxes/{first['sandbox_id']}/commands", json={"cmd": "echo $WHO"}).text
        assert '"data":"first\\n"' in out
        # Pool sandboxes belong to nobody until handed out: no team lists them.
        listed = {s["sandbox_id"] for s in team.get("/sandboxes").json()["sandboxes"]}
        assert listed == {first["sandbox_id"], second["sandbox_id"]}
    finally:
        assert admin.put("/pools/busybox", json={"size": 0}).status_code == 200
    assert team.put("/pools/busybox", json={"size": 1}).status_code == 403
    r = admin.put("/pools/busybox", json={"size": 10_000})
    assert r.status_code in (400, 422) and r.json()["field"] == "size"
    r = admin.put("/pools/no-such-image", json={"size": 1})
    assert r.status_code == 404 and "no-such-image" in r.json()["message"]
