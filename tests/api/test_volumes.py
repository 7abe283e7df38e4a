"""Volumes over HTTP: named per team, mounted rw/ro, shared, outliving sandboxes, clear errors."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.conftest import new_team_client
from tests.api.harness import Server

pytestmark = pytest.mark.integration


def _run(c: httpx.Client, sid: str, cmd: str) -> tuple[str, str]:
    r = c.post(f"/sandboxes/{sid}/commands", json={"cmd": cmd})
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.text.splitlines() if line]
    return tuple("".join(e["data"] for e in events if e["type"] == t) for t in ("stdout", "stderr"))  # type: ignore[return-value]


def test_volumes_over_http(api_server: Server, admin: httpx.Client, team: httpx.Client) -> None:
    r = team.post("/volumes", json={"name": "work"})
    assert r.status_code == 201 and r.json()["name"] == "work", r.text
    assert team.post("/volumes", json={"name": "work"}).status_code == 409
    assert team.post("/volumes", json={"name": "../x"}).status_code == 422
    assert [v["name"] for v in team.get("/volumes").json()["volumes"]] == ["work"]
    rw = team.post("/sandboxes", json={"volumes": [{"name": "work", "path": "/work"}]}).json()["sandbox_id"]
    ro = team.post(
        "/sandboxes", json={"runtime": "container", "volumes": [{"name": "work", "path": "/w", "read_only": True}]}
    ).json()["sandbox_id"]
    _run(team, rw, "echo shared > /work/f")
    assert _run(team, ro, "cat /w/f")[0] == "shared\n"
    assert "Read-only file system" in _run(team, ro, "echo x > /w/g")[1]
    r = team.delete("/volumes/work")
    assert r.status_code == 409 and "mounted by" in r.json()["message"], r.text
    r = team.post("/sandboxes", json={"volumes": [{"name": "nope", "path": "/n"}]})
    assert r.status_code == 404 and r.json()["code"] == "volume_not_found", r.text
    r = team.post("/sandboxes", json={"volumes": [{"name": "work", "path": "/proc/x"}]})
    assert r.status_code == 400 and r.json()["field"] == "volumes", r.text
    with new_team_client(api_server, admin, "vol-other") as other:
        assert other.get("/volumes").json()["volumes"] == []
        r = other.post("/sandboxes", json={"volumes": [{"name": "work", "path": "/w"}]})
        assert r.status_code == 404, r.text
        assert other.delete("/volumes/work").status_code == 404
    team.delete(f"/sandboxes/{rw}")
    team.delete(f"/sandboxes/{ro}")
    again = team.post("/sandboxes", json={"volumes": [{"name": "work", "path": "/again"}]}).json()["sandbox_id"]
    assert _run(team, again, "cat /again/f")[0] == "shared\n"
    team.delete(f"/sandboxes/{again}")
    assert team.delete("/volumes/work").status_code == 204
    assert team.get("/volumes").json()["volumes"] == []
