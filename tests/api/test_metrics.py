"""Per-sandbox metrics over HTTP: sampled on the node from the host side every 5 s."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.crash import ok, run

pytestmark = pytest.mark.integration

#: 40 connections at once to its gateway (the host's end of its veth), refused by the host's rules:
#: a SYN (about 70 bytes) out each, and some ICMP errors back (the host rate-limits them)
_KNOCK = (
    "gw=$(ip route | awk '/default/ {print $3}'); for i in $(seq 40); do nc -w 1 $gw 9 </dev/null & done; wait; true"
)


def wait_for_sample(
    c: httpx.Client, sid: str, want: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    """The first new sample (after now) that `want` accepts."""
    since = time.time()
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = ok(c.get(f"/sandboxes/{sid}/metrics", params={"start": since}))["metrics"]
        for m in seen:
            if want(m):
                return m
        time.sleep(1)
    raise AssertionError(f"no sample of {sid} as wanted in {timeout}s: {seen}")


def test_metrics_follow_cpu_memory_disk_network(team: httpx.Client) -> None:
    sbx = ok(team.post("/sandboxes", json={"cpu": 1, "memory_mb": 256, "disk_mb": 256, "network": "egress"}), 201)
    sid = sbx["sandbox_id"]
    first = wait_for_sample(team, sid, lambda m: True)
    assert first["cpu_count"] == 1 and first["mem_total"] == 256 << 20
    assert 0 < first["mem_used"] <= first["mem_total"] and first["pids"] > 0
    assert 0 < first["disk_used"] < first["disk_total"] <= 256 << 20

    pid = ok(team.post(f"/sandboxes/{sid}/commands", json={"cmd": "yes > /dev/null", "background": True}))["pid"]
    busy = wait_for_sample(team, sid, lambda m: m["cpu_used_pct"] > 50)
    assert busy["cpu_used_pct"] <= 100
    ok(team.delete(f"/sandboxes/{sid}/processes/{pid}"), 204)

    code, out = run(team, sid, "dd if=/dev/urandom of=$HOME/blob bs=1M count=32 2>&1 && sync")
    assert code == 0, out
    wait_for_sample(team, sid, lambda m: m["disk_used"] >= first["disk_used"] + (30 << 20))

    before = wait_for_sample(team, sid, lambda m: True)
    code, out = run(team, sid, _KNOCK + " 2>&1")
    assert code == 0, out
    wait_for_sample(
        team,
        sid,
        lambda m: m["net_tx_bytes"] >= before["net_tx_bytes"] + 2000 and m["net_rx_bytes"] > before["net_rx_bytes"],
    )

    whole = ok(team.get(f"/sandboxes/{sid}/metrics"))
    assert whole["interval_s"] == 5 and len(whole["metrics"]) >= 4
    stamps = [m["timestamp"] for m in whole["metrics"]]
    assert stamps == sorted(stamps) and all(b - a >= 4 for a, b in itertools.pairwise(stamps))

    # a killed sandbox's samples stay readable for a while; a bad window is a clear 400
    ok(team.delete(f"/sandboxes/{sid}"), 204)
    assert len(ok(team.get(f"/sandboxes/{sid}/metrics"))["metrics"]) >= len(whole["metrics"])
    r = team.get(f"/sandboxes/{sid}/metrics", params={"start": 20, "end": 10})
    assert r.status_code == 400 and r.json()["field"] == "start", r.text
    r = team.get("/sandboxes/sb-nope/metrics")
    assert r.status_code == 404 and r.json()["code"] == "sandbox_not_found", r.text


def test_oom_kills_are_counted(team: httpx.Client) -> None:
    sid = ok(team.post("/sandboxes", json={"memory_mb": 128}), 201)["sandbox_id"]
    code, _ = run(team, sid, "head -c 400m /dev/zero | tail")
    assert code != 0
    wait_for_sample(team, sid, lambda m: m["oom_kills"] >= 1)
