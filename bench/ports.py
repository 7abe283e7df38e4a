"""Exposed ports: a small server in a sandbox, through the API's port proxy and directly.

The same keep-alive server (tests/api/port_server.py, in a Debian sandbox with
network `egress` so that it has an address) is loaded twice in one run:

- through the port proxy: client -> API (`/sandboxes/{id}/ports/{port}/`) ->
  the direct route (the in-process node's route to the sandbox's address,
  for gVisor and crun alike) -> server;
- directly in its namespace: client -> the sandbox's own address over its veth
  (gVisor's netstack), the baseline, no Sandlot code on the path.

For each, in a gVisor and a crun sandbox: requests per second with
`CONCURRENCY` keep-alive clients for a fixed time and their p50 latency;
chunked downloads (MB/s); WebSocket echo round trips one after another (latency), and
WebSocket messages with WS_WINDOW in flight (throughput).

The two routes take turns (`ROUNDS` rounds each, direct first in odd rounds
and proxied first in even ones), and each figure pools its rounds: this VM's
speed drifts by a quarter within a minute, and measured one after the other
the drift showed up as a difference between the routes.

Part of `bench/run`; alone (a server of its own, the same rows as the report):

    python bench/ports.py [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from lib import ROOT, summary

__all__ = ["port_proxy_figures"]

SERVER = ROOT / "tests" / "api" / "port_server.py"
PORT = 8080
CONCURRENCY = 4
#: rounds per route, taken in turns with the other route
ROUNDS = 4
#: WebSocket messages in flight at once in the throughput figure
WS_WINDOW = 32
#: latencies kept per figure in the results file, evenly spread (its percentiles use every one)
KEPT_SAMPLES = 500


async def _load(url: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    lat: list[float] = []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await client.get(url)
                assert r.status_code == 200, r.text
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        wall = time.perf_counter() - t0
    out = summary(lat)
    out["rps"] = len(lat) / wall
    return out


async def _stream(url: str, headers: dict[str, str], nbytes: int) -> dict[str, Any]:
    """One chunked download of `nbytes`: MB/s."""
    async with httpx.AsyncClient(headers=headers, timeout=120) as client:
        t0 = time.perf_counter()
        got = 0
        async with client.stream("GET", url, params={"n": nbytes}) as r:
            assert r.status_code == 200, await r.aread()
            async for chunk in r.aiter_raw():
                got += len(chunk)
        wall = time.perf_counter() - t0
    assert got == nbytes, (got, nbytes)
    return {"mb_per_s": nbytes / wall / 1e6, "wall_ms": wall * 1000, "runs": 1}


async def _ws(url: str, headers: dict[str, str], seconds: float, window: int = 1) -> dict[str, Any]:
    """WebSocket messages (100 bytes of text, echoed) with `window` always in flight, a new one sent as
    each echo comes back: per second, and each message's time there and back. `window` 1: round trips
    one after another (latency); `WS_WINDOW`: throughput."""
    from websockets.asyncio.client import connect

    lat: list[float] = []
    sent: collections.deque[float] = collections.deque()
    msg = "x" * 100
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        stop = time.perf_counter() + seconds
        t_start = time.perf_counter()
        for _ in range(window):
            sent.append(time.perf_counter())
            await ws.send(msg)
        while sent:
            assert await ws.recv() == "echo: " + msg
            now = time.perf_counter()
            lat.append(now - sent.popleft())
            if now < stop:
                sent.append(now)
                await ws.send(msg)
        wall = time.perf_counter() - t_start
    out = summary(lat)
    out["rps"] = len(lat) / wall
    return out


def _pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of `_load` or `_ws` as one: events over the total time, percentiles of every sample."""
    samples = [x / 1000 for r in rounds for x in r["samples_ms"]]
    out = summary(samples)
    out["samples_ms"] = out["samples_ms"][:: max(1, len(samples) // KEPT_SAMPLES)]
    out["rps"] = len(samples) / sum(r["runs"] / r["rps"] for r in rounds)
    return out


async def _in_turns(direct: Any, proxied: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """`ROUNDS` of each (coroutine factories), in turns, the order swapped every round; pooled."""
    d: list[dict[str, Any]] = []
    p: list[dict[str, Any]] = []
    for i in range(ROUNDS):
        if i % 2 == 0:
            d.append(await direct())
            p.append(await proxied())
        else:
            p.append(await proxied())
            d.append(await direct())
    return _pooled(d), _pooled(p)


async def _streams_in_turns(direct: str, proxied: str, token: dict[str, str], nbytes: int) -> tuple[Any, Any]:
    """Two downloads each, in turns (direct, proxied, proxied, direct): MB/s over both."""
    d = [await _stream(direct, {}, nbytes)]
    p = [await _stream(proxied, token, nbytes)]
    p.append(await _stream(proxied, token, nbytes))
    d.append(await _stream(direct, {}, nbytes))

    def pool(xs: list[dict[str, Any]]) -> dict[str, Any]:
        wall = sum(x["wall_ms"] for x in xs)
        return {"mb_per_s": nbytes * len(xs) / wall / 1000, "wall_ms": wall, "runs": len(xs)}

    return pool(d), pool(p)


async def _one_sandbox(conn: dict[str, Any], quick: bool, runtime: str) -> dict[str, Any]:
    """Plain HTTP, a streamed download and WebSocket round trips: proxied and direct, in turn."""
    from sandlot.sdk import AsyncSandbox

    seconds = 2.0 if quick else 10.0
    stream_bytes = (32 if quick else 128) << 20
    sbx = await AsyncSandbox.create(template="debian", network="egress", runtime=runtime, **conn)
    try:
        await sbx.files.write("/srv.py", SERVER.read_text())
        # no command timeout: the default 60 s would end the server in the middle of a full run
        await sbx.commands.run(f"python3 /srv.py {PORT}", background=True, timeout=None)
        token = {"X-Sandlot-Access-Token": sbx.access_token or ""}
        proxied = sbx.get_url(PORT, "/bench")
        address = (await sbx.network.get()).address
        direct = f"http://{address}:{PORT}/bench"
        async with httpx.AsyncClient(headers=token) as c:
            deadline = time.monotonic() + 30
            while (await c.get(proxied)).status_code != 200:
                assert time.monotonic() < deadline, "the server in the sandbox never answered"
                await asyncio.sleep(0.2)
        print(f"sandlot http: port proxy vs direct ({runtime})", flush=True)
        await _load(direct, {}, 0.5)  # warm both paths, unmeasured
        await _load(proxied, token, 0.5)
        each = seconds / ROUNDS
        out: dict[str, Any] = {"stream_mb": stream_bytes >> 20, "rounds": ROUNDS, "ws_window": WS_WINDOW}
        out["port direct"], out["port proxy"] = await _in_turns(
            lambda: _load(direct, {}, each), lambda: _load(proxied, token, each)
        )
        big = direct.replace("/bench", "/big")
        out["stream direct"], out["stream proxy"] = await _streams_in_turns(
            big, sbx.get_url(PORT, "/big"), token, stream_bytes
        )
        ws_proxied = sbx.get_url(PORT, "/ws").replace("http", "ws", 1)
        out["ws direct"], out["ws proxy"] = await _in_turns(
            lambda: _ws(f"ws://{address}:{PORT}/ws", {}, each), lambda: _ws(ws_proxied, token, each)
        )
        out["ws flow direct"], out["ws flow proxy"] = await _in_turns(
            lambda: _ws(f"ws://{address}:{PORT}/ws", {}, each, WS_WINDOW),
            lambda: _ws(ws_proxied, token, each, WS_WINDOW),
        )
        return out
    finally:
        await sbx.kill()


async def port_proxy_figures(conn: dict[str, Any], quick: bool) -> dict[str, Any]:
    """gVisor at the top level, crun under "crun" (both over the in-process node's direct route)."""
    out = await _one_sandbox(conn, quick, "gvisor")
    out["concurrency"] = CONCURRENCY
    out["crun"] = await _one_sandbox(conn, quick, "container")
    return out


def main() -> None:
    from api_server import Server
    from report import _port_rows
    from suite import BUNDLE_CACHE

    from sandlot.node.bundle import ensure_bundle

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 s per load instead of 10, 32 MB downloads")
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slp-", dir="/var/tmp"))  # short: agent socket paths fit
    try:
        built = ensure_bundle(BUNDLE_CACHE)
        shutil.copytree(built.path, work / "api" / "bundle" / built.path.name, symlinks=True)
        server = Server(work / "api").start()
        try:
            conn = {"api_url": server.url, "api_key": server.admin_key, "request_timeout": 120.0}
            figs = asyncio.run(port_proxy_figures(conn, args.quick))
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(figs, indent=1) + "\n")
    for metric, value, unit, base, base_value, runs in _port_rows(figs):
        print(f"{metric}: {value:.4g} {unit} | {base}: {base_value:.4g} | {value / base_value:.2f}x | {runs}")


if __name__ == "__main__":
    main()
