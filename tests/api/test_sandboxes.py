"""Sandboxes, keys and errors over HTTP, against a live server and a real node."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.api.conftest import new_team_client
from tests.api.harness import Server

pytestmark = pytest.mark.integration


def _create(c: httpx.Client, **body: object) -> dict[str, object]:
    r = c.post("/sandboxes", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_health_and_openapi(api_server: Server, admin: httpx.Client, team: httpx.Client) -> None:
    health = httpx.get(api_server.url + "/health").json()
    assert health["status"] == "ok"
    deadline = time.monotonic() + 60  # the runtimes' report follows readiness (microvm probes KVM once)
    while not health["runtimes"] and time.monotonic() < deadline:
        time.sleep(0.2)
        health = httpx.get(api_server.url + "/health").json()
    runtimes = health["runtimes"]
    assert runtimes["gvisor"]["available"] and runtimes["container"]["available"]
    assert runtimes["microvm"]["available"], runtimes["microvm"]
    assert runtimes["microvm"]["accelerator"] in ("kvm", "tcg") and runtimes["microvm"]["accelerator_reason"]
    # The same choice in the node list (a server running its own node lists that one), and the CLI's table.
    (node,) = admin.get("/nodes").json()["nodes"]
    assert node["name"] and node["state"] == "active" and {"gvisor", "container", "microvm"} <= set(node["runtimes"])
    assert node["accelerators"] == {"microvm": runtimes["microvm"]["accelerator"]}, node
    env = {**os.environ, "SANDLOT_API_URL": api_server.url, "SANDLOT_API_KEY": api_server.admin_key}
    out = subprocess.run([sys.executable, "-m", "sandlot.cli", "nodes", "ls", "--json"], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout  # fmt: skip
    assert f"microvm({node['accelerators']['microvm']})" in subprocess.run(
        [sys.executable, "-m", "sandlot.cli", "nodes", "ls"], env={**env, "COLUMNS": "250"}, capture_output=True,
        text=True, timeout=60, check=True).stdout  # fmt: skip
    assert '"accelerators"' in out
    assert team.get("/nodes").status_code == 403  # admin only
    spec = httpx.get(api_server.url + "/openapi.json").json()
    assert "/sandboxes" in spec["paths"] and "/sandboxes/{sandbox_id}/files" in spec["paths"]


def test_auth_is_required_and_teams_are_isolated(api_server: Server, admin: httpx.Client, team: httpx.Client) -> None:
    r = httpx.get(api_server.url + "/sandboxes")
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    r = httpx.get(api_server.url + "/sandboxes", headers={"Authorization": "Bearer sl_nope"})
    assert r.status_code == 401
    sid = _create(team)["sandbox_id"]
    with new_team_client(api_server, admin, "other-team") as other:
        assert other.get(f"/sandboxes/{sid}").status_code == 404
        assert other.delete(f"/sandboxes/{sid}").status_code == 404
        assert other.post(f"/sandboxes/{sid}/commands", json={"cmd": "true"}).status_code == 404
        assert sid not in [s["sandbox_id"] for s in other.get("/sandboxes").json()["sandboxes"]]
        # Only admins manage keys.
        assert other.get("/keys").status_code == 403
    bearer = {"Authorization": f"Bearer {team.headers['X-API-Key']}"}
    assert httpx.get(f"{api_server.url}/sandboxes/{sid}", headers=bearer).status_code == 200


def test_keys_create_list_revoke(api_server: Server, admin: httpx.Client) -> None:
    r = admin.post("/keys", json={"team": "revokers", "name": "ci"})
    assert r.status_code == 201
    key, key_id = r.json()["key"], r.json()["key_id"]
    listed = admin.get("/keys").json()["keys"]
    assert any(k["key_id"] == key_id and k["team"] == "revokers" and "key" not in k for k in listed)
    assert httpx.get(api_server.url + "/sandboxes", headers={"X-API-Key": key}).status_code == 200
    assert admin.delete(f"/keys/{key_id}").status_code == 204
    assert httpx.get(api_server.url + "/sandboxes", headers={"X-API-Key": key}).status_code == 401
    assert admin.delete(f"/keys/{key_id}").status_code == 404
    # The admin key file is private.
    assert (api_server.data_dir / "admin.key").stat().st_mode & 0o777 == 0o600


def test_get_list_filter_paginate(team: httpx.Client) -> None:
    made = [_create(team, metadata={"job": "a" if i < 3 else "b", "n": str(i)}) for i in range(4)]
    info = team.get(f"/sandboxes/{made[0]['sandbox_id']}").json()
    assert info["state"] == "running" and info["metadata"] == {"job": "a", "n": "0"}
    assert info["template"] == "busybox" and info["memory_mb"] == 512
    assert info["node"] == "local"  # the node `sandlot serve` embeds
    got = team.get("/sandboxes", params={"metadata": "job=a"}).json()["sandboxes"]
    assert {s["node"] for s in got} == {"local"}
    assert [s["sandbox_id"] for s in got] == [m["sandbox_id"] for m in made[:3]]
    got = team.get("/sandboxes", params=[("metadata", "job=a"), ("metadata", "n=1")]).json()["sandboxes"]
    assert [s["sandbox_id"] for s in got] == [made[1]["sandbox_id"]]
    ids, cursor = [], None
    while True:
        page = team.get("/sandboxes", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        ids += [s["sandbox_id"] for s in page["sandboxes"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert ids == [m["sandbox_id"] for m in made]
    team.delete(f"/sandboxes/{made[3]['sandbox_id']}")
    killed = team.get("/sandboxes", params={"state": "killed"}).json()["sandboxes"]
    assert [s["sandbox_id"] for s in killed] == [made[3]["sandbox_id"]]
    assert made[3]["sandbox_id"] not in [s["sandbox_id"] for s in team.get("/sandboxes").json()["sandboxes"]]


def test_timeout_kills_and_can_be_extended(team: httpx.Client) -> None:
    short = _create(team, timeout=1)["sandbox_id"]
    kept = _create(team, timeout=1)["sandbox_id"]
    r = team.post(f"/sandboxes/{kept}/timeout", json={"timeout": 60})
    assert r.status_code == 200 and r.json()["ends_at"] > time.time() + 50
    deadline = time.monotonic() + 15
    while team.get(f"/sandboxes/{short}").json()["state"] != "killed" and time.monotonic() < deadline:
        time.sleep(0.2)
    info = team.get(f"/sandboxes/{short}").json()
    assert info["state"] == "killed" and "timeout" in info["exit_reason"]
    assert team.get(f"/sandboxes/{kept}").json()["state"] == "running"
    r = team.post(f"/sandboxes/{short}/commands", json={"cmd": "true"})
    assert r.status_code == 409 and r.json()["code"] == "wrong_state"
    assert team.post(f"/sandboxes/{short}/timeout", json={"timeout": 5}).status_code == 409


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"memory_mb": 1}, 400, "memory_mb"),
        ({"cpu": 1000}, 400, "cpu"),
        ({"template": "no-such-image"}, 404, None),
        ({"runtime": "firecracker"}, 400, None),
        ({"timeout": 0}, 422, "timeout"),
        ({"env": {"A=B": "x"}}, 422, "env"),
        ({"metadata": {"k": 5}}, 422, "metadata.k"),
        ({"bogus": 1}, 422, "bogus"),
        ({"disk_mb": 10**9}, 400, "disk_mb"),
    ],
)
def test_bad_create_requests_name_the_field(
    team: httpx.Client, body: dict[str, object], status: int, field: str | None
) -> None:
    r = team.post("/sandboxes", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"code", "message", "field"} and err["message"]
    if field is not None:
        assert err["field"] == field, err


def test_malformed_requests_are_4xx(team: httpx.Client) -> None:
    r = team.post("/sandboxes", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_argument"
    assert team.get("/sandboxes", params={"limit": 0}).json()["field"] == "limit"
    assert team.get("/sandboxes", params={"cursor": "garbage!"}).json()["field"] == "cursor"
    assert team.get("/sandboxes", params={"metadata": "novalue"}).status_code == 400
    assert team.get("/no/such/route").status_code == 404
    assert team.put("/sandboxes").status_code == 405
    assert team.get("/sandboxes/sb-doesnotexist0000").json()["code"] == "sandbox_not_found"


def test_quota_of_running_sandboxes(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = Server(tmp_path_factory.mktemp("quota") / "data", max_sandboxes=1).start()
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            first = _create(c)["sandbox_id"]
            r = c.post("/sandboxes", json={})
            assert r.status_code == 429 and r.json()["code"] == "limit_reached"
            c.delete(f"/sandboxes/{first}")
            assert c.post("/sandboxes", json={}).status_code == 201
    finally:
        server.stop()
