"""A first end-to-end check: create, run, kill."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_create_run_kill(team: httpx.Client) -> None:
    r = team.post("/sandboxes", json={"metadata": {"k": "v"}})
    assert r.status_code == 201, r.text
    sid = r.json()["sandbox_id"]
    r = team.post(f"/sandboxes/{sid}/commands", json={"cmd": "echo hi; echo err >&2; exit 3"})
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.text.splitlines()]
    assert events[0]["type"] == "start"
    assert {"type": "stdout", "data": "hi\n"} in events
    assert events[-1]["type"] == "exit" and events[-1]["exit_code"] == 3
    assert team.delete(f"/sandboxes/{sid}").status_code == 204
    assert team.get(f"/sandboxes/{sid}").json()["state"] == "killed"
