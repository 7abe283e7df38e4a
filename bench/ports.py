"""Exposed ports: a small HTTP server in a gVisor sandbox, through the API's port proxy and directly.

The same keep-alive server (tests/api/port_server.py, in a Debian sandbox with
network `egress` so that it has an address) is loaded twice in one run:

- through the port proxy: client -> API (`/sandboxes/{id}/ports/{port}/`) ->
  agent tunnel -> server;
- directly in its namespace: client -> the sandbox's own address over its veth
  (gVisor's netstack), the baseline, no Sandlot code on the path.

For each: requests per second with `CONCURRENCY` keep-alive clients for a
fixed time, and the p50 latency of those requests.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from lib import ROOT, summary

__all__ = ["port_proxy_figures"]

SERVER = ROOT / "tests" / "api" / "port_server.py"
PORT = 8080
CONCURRENCY = 4


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


async def port_proxy_figures(conn: dict[str, Any], quick: bool) -> dict[str, Any]:
    from sandlot.sdk import AsyncSandbox

    seconds = 2.0 if quick else 10.0
    sbx = await AsyncSandbox.create(template="debian", network="egress", **conn)
    try:
        await sbx.files.write("/srv.py", SERVER.read_text())
        await sbx.commands.run(f"python3 /srv.py {PORT}", background=True)
        token = {"X-Sandlot-Access-Token": sbx.access_token or ""}
        proxied = sbx.get_url(PORT, "/bench")
        address = (await sbx.network.get()).address
        direct = f"http://{address}:{PORT}/bench"
        async with httpx.AsyncClient(headers=token) as c:
            deadline = time.monotonic() + 30
            while (await c.get(proxied)).status_code != 200:
                assert time.monotonic() < deadline, "the server in the sandbox never answered"
                await asyncio.sleep(0.2)
        print("sandlot http: port proxy vs direct", flush=True)
        await _load(direct, {}, 0.5)  # warm both paths, unmeasured
        await _load(proxied, token, 0.5)
        return {
            "port direct": await _load(direct, {}, seconds),
            "port proxy": await _load(proxied, token, seconds),
            "concurrency": CONCURRENCY,
        }
    finally:
        await sbx.kill()
