"""GET /metrics: Prometheus' text format, admin only, parsed with prometheus_client's own parser."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.crash import ok

pytestmark = pytest.mark.integration


def _samples(admin: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = admin.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_prometheus_metrics(admin: httpx.Client, team: httpx.Client) -> None:
    before = _samples(admin)
    sid = ok(team.post("/sandboxes", json={}), 201)["sandbox_id"]
    r = team.post("/sandboxes", json={"template": "no-such-template"})
    assert r.status_code == 404, r.text
    ok(team.delete(f"/sandboxes/{sid}"), 204)
    after = _samples(admin)

    def grew(name: str, labels: dict[str, str], by: float = 1) -> bool:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0) == by

    assert grew("sandlot_sandbox_creates_total", {"template": "busybox"})
    assert grew("sandlot_sandbox_create_errors_total", {"code": "image_not_found"})
    assert grew("sandlot_sandbox_kills_total", {"how": "request"})
    assert grew("sandlot_sandbox_create_seconds_count", {})
    assert grew("sandlot_sandboxes", {"state": "killed", "template": "busybox"})
    team_name = next(dict(k[1])["team"] for k in after if k[0] == "sandlot_team_sandboxes" and "t-test_prom" in str(k))
    assert after[("sandlot_team_sandboxes", (("state", "killed"), ("team", team_name)))] == 1
    assert after[("sandlot_node_cpus", (("node", "local"),))] >= 1
    assert after[("sandlot_node_memory_total_bytes", (("node", "local"),))] > 0
    assert after[("sandlot_node_disk_free_bytes", (("node", "local"),))] > 0

    r = team.get("/metrics")  # a team's key may not read the server's figures
    assert r.status_code == 403 and r.json()["code"] == "permission_denied", r.text
