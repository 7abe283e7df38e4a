"""Teams' limits over HTTP: set by an admin, a clear 429 when reached, lifetime, checkpoint retention."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import new_team_client
from tests.api.harness import Server

pytestmark = pytest.mark.integration

WEEK = 7 * 24 * 3600


@pytest.fixture
def quota_team(api_server: Server, admin: httpx.Client, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    name = f"q-{request.node.name[5:40]}".replace("_", "-")
    with new_team_client(api_server, admin, name) as c:
        c.headers["X-Team"] = name  # for the test's own use
        yield c
        for sbx in c.get("/sandboxes").json()["sandboxes"]:
            c.delete(f"/sandboxes/{sbx['sandbox_id']}")
        for vol in c.get("/volumes").json()["volumes"]:
            c.delete(f"/volumes/{vol['name']}")


def _patch(admin: httpx.Client, team: str, **quota: int | None) -> dict:  # type: ignore[type-arg]
    r = admin.patch(f"/teams/{team}/quota", json=quota)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_limits_are_the_servers_until_an_admin_sets_them(admin: httpx.Client, quota_team: httpx.Client) -> None:
    team = quota_team.headers["X-Team"]
    info = quota_team.get(f"/teams/{team}").json()  # a key sees its own team
    assert info["quota"] == {
        "max_sandboxes": 100,
        "max_disk_mb": 256 << 10,
        "max_lifetime_s": 0,
        "checkpoint_retention_s": WEEK,
    }
    assert info["overrides"] == [] and info["usage"] == {"sandboxes": 0, "disk_mb": 0}
    r = quota_team.patch(f"/teams/{team}/quota", json={"max_sandboxes": 1000})
    assert r.status_code == 403 and "only an admin" in r.json()["message"]
    assert quota_team.get("/teams/admin").status_code == 403
    assert quota_team.get("/teams").status_code == 403
    info = _patch(admin, team, max_sandboxes=3, checkpoint_retention_s=60)
    assert info["quota"]["max_sandboxes"] == 3 and sorted(info["overrides"]) == [
        "checkpoint_retention_s",
        "max_sandboxes",
    ]
    info = _patch(admin, team, max_sandboxes=None)  # null: back to the default, the rest stays
    assert info["quota"]["max_sandboxes"] == 100 and info["overrides"] == ["checkpoint_retention_s"]
    assert team in [t["team"] for t in admin.get("/teams").json()["teams"]]
    r = admin.patch(f"/teams/{team}/quota", json={"max_sandboxes": -1})
    assert r.status_code == 422 and r.json()["field"] == "max_sandboxes"
    assert admin.patch(f"/teams/{team}/quota", json={"max_sandbox": 1}).status_code == 422


def test_sandboxes_and_disk_limits_answer_429(admin: httpx.Client, quota_team: httpx.Client) -> None:
    team = quota_team.headers["X-Team"]
    _patch(admin, team, max_sandboxes=1)
    first = quota_team.post("/sandboxes", json={"disk_mb": 256})
    assert first.status_code == 201, first.text
    sid = first.json()["sandbox_id"]
    r = quota_team.post("/sandboxes", json={"disk_mb": 64})
    assert r.status_code == 429 and r.json()["code"] == "limit_reached", r.text
    assert "max_sandboxes" in r.json()["message"] and "runs 1" in r.json()["message"]
    # Disk: sandboxes' disk limits + volumes + checkpoints.
    _patch(admin, team, max_sandboxes=None, max_disk_mb=300)
    r = quota_team.post("/sandboxes", json={"disk_mb": 64})
    assert r.status_code == 429 and "max_disk_mb 300" in r.json()["message"], r.text
    assert quota_team.post("/volumes", json={"name": "big", "size_mb": 64}).status_code == 429
    assert quota_team.post("/volumes", json={"name": "fits", "size_mb": 32}).status_code == 201
    ck = quota_team.post(f"/sandboxes/{sid}/checkpoints", json={"name": "c1"})
    assert ck.status_code == 201, ck.text
    usage = quota_team.get(f"/teams/{team}").json()["usage"]
    assert usage["sandboxes"] == 1 and usage["disk_mb"] >= 256 + 32 + 1, usage
    _patch(admin, team, max_disk_mb=usage["disk_mb"])
    r = quota_team.post(f"/sandboxes/{sid}/checkpoints", json={"name": "c2"})
    assert r.status_code == 429 and "checkpoint" in r.json()["message"], r.text
    r = quota_team.post(f"/checkpoints/{ck.json()['checkpoint_id']}/fork", json={"count": 1})
    assert r.status_code == 429 and "fork" in r.json()["message"], r.text
    # Room again once the team frees some: nothing of the refused requests is left over.
    quota_team.delete(f"/sandboxes/{sid}")
    assert quota_team.get(f"/teams/{team}").json()["usage"]["sandboxes"] == 0
    assert quota_team.post("/sandboxes", json={"disk_mb": 64}).status_code == 201


def test_max_lifetime_per_team(admin: httpx.Client, quota_team: httpx.Client) -> None:
    team = quota_team.headers["X-Team"]
    _patch(admin, team, max_lifetime_s=60)
    r = quota_team.post("/sandboxes", json={"timeout": 120})
    assert r.status_code == 400 and r.json()["field"] == "timeout" and "at most 60 s" in r.json()["message"]
    sid = quota_team.post("/sandboxes", json={"timeout": 30}).json()["sandbox_id"]
    assert quota_team.post(f"/sandboxes/{sid}/timeout", json={"timeout": 120}).status_code == 400
    _patch(admin, team, max_lifetime_s=0)  # 0: no limit
    assert quota_team.post(f"/sandboxes/{sid}/timeout", json={"timeout": 120}).status_code == 200


def test_checkpoints_of_killed_sandboxes_are_kept_for_the_retention(
    api_server: Server, admin: httpx.Client, quota_team: httpx.Client
) -> None:
    team = quota_team.headers["X-Team"]
    _patch(admin, team, checkpoint_retention_s=2)
    live, dead = (quota_team.post("/sandboxes", json={}).json()["sandbox_id"] for _ in range(2))
    ck_live = quota_team.post(f"/sandboxes/{live}/checkpoints", json={"name": "l"}).json()["checkpoint_id"]
    ck_dead = quota_team.post(f"/sandboxes/{dead}/checkpoints", json={"name": "d"}).json()["checkpoint_id"]
    with new_team_client(api_server, admin, f"{team}-forever") as forever:
        _patch(admin, f"{team}-forever", checkpoint_retention_s=0)  # 0: until deleted
        other = forever.post("/sandboxes", json={}).json()["sandbox_id"]
        ck_kept = forever.post(f"/sandboxes/{other}/checkpoints", json={"name": "k"}).json()["checkpoint_id"]
        forever.delete(f"/sandboxes/{other}")
        quota_team.delete(f"/sandboxes/{dead}")
        # Kept while the retention runs (fork still works), deleted after it.
        assert quota_team.get(f"/checkpoints/{ck_dead}").status_code == 200
        deadline = time.monotonic() + 30
        while quota_team.get(f"/checkpoints/{ck_dead}").status_code == 200:
            assert time.monotonic() < deadline, "the checkpoint of the killed sandbox was never deleted"
            time.sleep(0.5)
        assert quota_team.get(f"/checkpoints/{ck_dead}").status_code == 404
        time.sleep(1.5)  # at least one more sweep
        assert forever.get(f"/checkpoints/{ck_kept}").status_code == 200
        assert quota_team.get(f"/checkpoints/{ck_live}").status_code == 200  # its sandbox lives
        forever.delete(f"/checkpoints/{ck_kept}")
