"""Lifecycle events: recorded in the store with every transition, listed with filters, streamed as SSE."""

from __future__ import annotations

import json

import httpx
import pytest

from sandlot.api.events import kinds_of
from tests.api.crash import ok

pytestmark = pytest.mark.integration


def test_kinds_of_transitions() -> None:
    assert kinds_of(None, "running", None) == ["created"]
    assert kinds_of("running", "paused", None) == ["paused"]
    assert kinds_of("paused", "running", None) == ["resumed"]
    assert kinds_of("paused", "hibernated", None) == ["hibernated"]
    assert kinds_of("hibernated", "running", None) == ["woken"]
    assert kinds_of("running", "killed", "out of memory") == ["oom", "killed"]
    assert kinds_of("killed", "killed", "again") == []


def test_events_are_recorded_filtered_and_streamed(team: httpx.Client, admin: httpx.Client) -> None:
    with team.stream("GET", "/events/stream", params={"after": 0}, timeout=60) as live:
        assert live.status_code == 200 and live.headers["content-type"].startswith("text/event-stream")
        sid = ok(team.post("/sandboxes", json={}), 201)["sandbox_id"]
        ok(team.post(f"/sandboxes/{sid}/pause"))
        ok(team.post(f"/sandboxes/{sid}/resume"))
        ck = ok(team.post(f"/sandboxes/{sid}/checkpoints", json={"name": "ev"}), 201)["checkpoint_id"]
        ok(team.delete(f"/sandboxes/{sid}"), 204)
        streamed: list[dict[str, object]] = []
        for line in live.iter_lines():
            if line.startswith("data: "):
                streamed.append(json.loads(line[6:]))
                if streamed[-1]["type"] == "killed":
                    break

    want = ["created", "paused", "resumed", "checkpointed", "killed"]
    assert [e["type"] for e in streamed] == want
    listed = ok(team.get("/events", params={"sandbox_id": sid}))["events"]
    assert [e["type"] for e in listed] == want and listed == streamed
    assert listed[3]["detail"] == ck and listed[4]["detail"] == "killed by request"
    ids = [e["event_id"] for e in listed]
    assert ids == sorted(ids)

    # filters: type (repeatable), a time window, pages by `after`
    only = ok(team.get("/events", params=[("sandbox_id", sid), ("type", "paused"), ("type", "killed")]))
    assert [e["type"] for e in only["events"]] == ["paused", "killed"]
    page = ok(team.get("/events", params={"sandbox_id": sid, "limit": 2}))
    assert [e["type"] for e in page["events"]] == want[:2] and page["next_after"] == ids[1]
    rest = ok(team.get("/events", params={"sandbox_id": sid, "after": page["next_after"]}))
    assert [e["type"] for e in rest["events"]] == want[2:] and rest["next_after"] is None
    window = ok(team.get("/events", params={"sandbox_id": sid, "since": listed[1]["at"], "until": listed[2]["at"]}))
    assert [e["type"] for e in window["events"]] == ["paused", "resumed"]

    # teams see their own; an admin every team's
    assert [e["event_id"] for e in ok(admin.get("/events", params={"sandbox_id": sid}))["events"]] == ids
    r = team.get("/events", params={"team": "someone-else"})
    assert r.status_code == 403, r.text
    r = team.get("/events", params={"type": "exploded"})
    assert r.status_code == 422 and r.json()["field"].startswith("type"), r.text
