"""Checkpoints over HTTP: take, list, restore, fork, delete, and their errors, against a real node."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.conftest import new_team_client
from tests.api.harness import Server

pytestmark = pytest.mark.integration


def _out(c: httpx.Client, sid: str, cmd: str) -> str:
    r = c.post(f"/sandboxes/{sid}/commands", json={"cmd": cmd})
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.text.splitlines() if line]
    return "".join(e["data"] for e in events if e["type"] == "stdout")


def test_checkpoint_restore_fork_delete(api_server: Server, admin: httpx.Client, team: httpx.Client) -> None:
    sid = team.post("/sandboxes", json={}).json()["sandbox_id"]
    _out(team, sid, "echo before > /state")
    r = team.post(f"/sandboxes/{sid}/checkpoints", json={"name": "v1"})
    assert r.status_code == 201, r.text
    ck = r.json()
    assert ck["sandbox_id"] == sid and ck["name"] == "v1" and ck["checkpoint_id"].startswith("ck-")
    listed = team.get(f"/sandboxes/{sid}/checkpoints").json()["checkpoints"]
    assert [c["checkpoint_id"] for c in listed] == [ck["checkpoint_id"]]
    assert team.get(f"/checkpoints/{ck['checkpoint_id']}").json()["name"] == "v1"

    _out(team, sid, "echo after > /state")
    r = team.post(f"/sandboxes/{sid}/restore", json={"checkpoint_id": ck["checkpoint_id"]})
    assert r.status_code == 200 and r.json()["state"] == "running", r.text
    assert _out(team, sid, "cat /state") == "before\n"

    r = team.post(f"/checkpoints/{ck['checkpoint_id']}/fork", json={"count": 2, "metadata": {"from": "v1"}})
    assert r.status_code == 201, r.text
    kids = r.json()["sandboxes"]
    assert len(kids) == 2 and all(k["metadata"] == {"from": "v1"} and k["state"] == "running" for k in kids)
    for k in kids:
        assert _out(team, k["sandbox_id"], "cat /state") == "before\n"

    # Errors: another team sees nothing; a bad name or a sibling's checkpoint is refused.
    with new_team_client(api_server, admin, "ck-other") as other:
        assert other.get(f"/checkpoints/{ck['checkpoint_id']}").status_code == 404
        assert other.post(f"/checkpoints/{ck['checkpoint_id']}/fork", json={}).status_code == 404
        osid = other.post("/sandboxes", json={}).json()["sandbox_id"]
        r = other.post(f"/sandboxes/{osid}/restore", json={"checkpoint_id": ck["checkpoint_id"]})
        assert r.status_code == 404 and r.json()["code"] == "checkpoint_not_found", r.text
        other.delete(f"/sandboxes/{osid}")
    r = team.post(f"/sandboxes/{kids[0]['sandbox_id']}/restore", json={"checkpoint_id": ck["checkpoint_id"]})
    assert r.status_code == 400 and "is of sandbox" in r.json()["message"], r.text
    r = team.post(f"/sandboxes/{sid}/checkpoints", json={"name": "v1"})
    assert r.status_code == 409 and "already has a checkpoint named" in r.json()["message"], r.text
    r = team.post(f"/sandboxes/{sid}/checkpoints", json={"name": "../x"})
    assert r.status_code == 422 and r.json()["field"] == "name", r.text
    r = team.post(f"/checkpoints/{ck['checkpoint_id']}/fork", json={"count": 0})
    assert r.status_code == 422 and r.json()["field"] == "count", r.text
    team.delete(f"/sandboxes/{sid}")
    r = team.post(f"/sandboxes/{sid}/checkpoints", json={"name": "late"})
    assert r.status_code == 409 and "killed" in r.json()["message"], r.text
    assert team.post(f"/sandboxes/{sid}/pause").status_code == 409

    assert team.delete(f"/checkpoints/{ck['checkpoint_id']}").status_code == 204
    assert team.get(f"/checkpoints/{ck['checkpoint_id']}").status_code == 404
    assert team.delete(f"/checkpoints/{ck['checkpoint_id']}").status_code == 404
