"""The fleet section: an API replica in front of three node daemons vs the all-in-one server,
the same requests, in the same run (each figure beside its baseline).

    .venv/bin/python bench/fleet.py [--n 20] [--mb 100]

Each figure: the all-in-one server on SQLite, the same on PostgreSQL (so the last column is
what the replica -> node hop itself costs), and the fleet.

- create -> first command: POST /sandboxes then a command, through the replica vs all-in-one;
- command round trip (`true`): the replica -> node hop on the data plane;
- a file of --mb MB written then read back;
- creates per second: 6 concurrent creates, spread over three nodes vs one server.

Needs root, PostgreSQL 15 (Debian) and the cached busybox image; leaves nothing running.
On a loaded machine compare the ratios, not the absolutes (the load is printed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from api_server import Server
from lib import ROOT

sys.path.insert(0, str(ROOT))
from tests.api.test_postgres import new_cluster
from tests.fleet.harness import Fleet, create, run, states, wait


def _ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _time(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def measure(c: httpx.Client, n: int, mb: int) -> dict[str, float]:
    made: list[str] = []

    def first_command() -> None:
        sid = create(c)["sandbox_id"]
        made.append(sid)
        run(c, sid, "true")

    figures = {"create -> first command (ms)": _ms(_time(first_command, max(3, n // 4)))}
    sid = made[0]
    run(c, sid, "true")
    figures["command round trip (ms)"] = _ms(_time(lambda: run(c, sid, "true"), n))
    blob = os.urandom(1 << 20) * mb
    t = time.perf_counter()
    assert c.put(f"/sandboxes/{sid}/files", params={"path": "/tmp/big"}, content=blob).status_code == 200
    figures[f"write {mb} MB (s)"] = time.perf_counter() - t
    t = time.perf_counter()
    assert len(c.get(f"/sandboxes/{sid}/files", params={"path": "/tmp/big"}).content) == len(blob)
    figures[f"read {mb} MB (s)"] = time.perf_counter() - t
    t = time.perf_counter()
    with ThreadPoolExecutor(6) as pool:
        made += [m["sandbox_id"] for m in pool.map(lambda _: create(c), range(6))]
    figures["creates per second (6 at once)"] = 6 / (time.perf_counter() - t)
    for s in made:
        c.delete(f"/sandboxes/{s}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sandlot-bench-fleet-", dir="/var/tmp"))
    single = Server(root / "single").start(600)
    try:
        with httpx.Client(base_url=single.url, headers={"X-API-Key": single.admin_key}, timeout=300) as c:
            base = measure(c, args.n, args.mb)
        with new_cluster() as cluster:
            # the all-in-one server on PostgreSQL too: what the replica -> node hop itself costs
            on_pg = Server(root / "single-pg", cluster.new_database("single")).start(600)
            try:
                with httpx.Client(base_url=on_pg.url, headers={"X-API-Key": on_pg.admin_key}, timeout=300) as c:
                    pg = measure(c, args.n, args.mb)
            finally:
                on_pg.stop()
            url = cluster.url
            fleet = Fleet(root / "fleet", url)
            (root / "fleet").mkdir()
            try:
                api = fleet.add_replica()
                for i in range(3):
                    fleet.add_node(f"n{i + 1}", api, f"10.242.{245 + i}.0/24")
                with fleet.client(0) as c:
                    wait("three nodes", lambda: list(states(c).values()) == ["active"] * 3, 600)
                    ours = measure(c, args.n, args.mb)
            finally:
                for p in (*fleet.nodes.values(), *fleet.replicas):
                    p.stop(60)
    finally:
        single.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"fleet (1 replica, 3 nodes on this host) vs all-in-one; load: {os.getloadavg()[0]:.1f}")
    print(f"{'':34} {'all-in-one':>11} {'on pg':>11} {'fleet':>11} {'ratio':>7} {'vs pg':>7}")
    for key, b in base.items():
        print(f"{key:34} {b:11.2f} {pg[key]:11.2f} {ours[key]:11.2f} {ours[key] / b:7.2f} {ours[key] / pg[key]:7.2f}")


if __name__ == "__main__":
    main()
