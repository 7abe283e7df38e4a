"""A node daemon's place in its fleet: join, recover, heartbeat (see api/fleet/routes.py).

`membership` runs for the daemon's whole life:

1. join: tell the replicas (any one: they share the database) the address the
   daemon listens on, its labels and capacity; retried until a replica answers;
2. recover: the answer lists the sandboxes the fleet's records place on this
   node; the live ones are re-adopted, every other one found is destroyed, and
   the report goes back (the records of the lost ones say killed, and why);
   then the fleet's warm pools (also in the answer) are set, and fill meanwhile;
3. heartbeat its capacity every `interval` seconds (the first heartbeat makes it
   live: no create races its recovery); a replica that does not know the node
   (removed, or a new database) makes it join again.

Every request carries the fleet's node token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from sandlot import errors
from sandlot.node.local import LocalNode
from sandlot.node.protocol import spec_from_dict

__all__ = ["membership"]

log = logging.getLogger("sandlot.node")


async def membership(
    local: LocalNode,
    api_url: str,
    token: str,
    url: str,
    labels: Mapping[str, str],
    *,
    interval: float = 3.0,
) -> None:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=api_url.rstrip("/"), headers=headers, timeout=30) as api:
        while True:
            await _join(api, local, url, labels, interval)
            while True:
                try:
                    info = await local.info()
                    r = await api.put(f"/fleet/nodes/{local.name}/heartbeat", json={"info": info.model_dump()})
                except httpx.HTTPError as exc:
                    log.warning("heartbeat to %s failed: %s", api_url, exc)
                    await asyncio.sleep(interval)
                    continue
                if r.status_code == 404:
                    log.warning("the fleet does not know this node (removed?): joining again")
                    break
                if r.status_code >= 400:
                    log.warning("heartbeat refused: HTTP %d %s", r.status_code, r.text[:200])
                await asyncio.sleep(interval)


async def _join(api: httpx.AsyncClient, local: LocalNode, url: str, labels: Mapping[str, str], interval: float) -> None:
    while True:
        try:
            info = await local.info()
            r = await api.post(
                f"/fleet/nodes/{local.name}/join", json={"url": url, "labels": dict(labels), "info": info.model_dump()}
            )
            if r.status_code < 400:
                break
            log.error("joining the fleet: HTTP %d %s", r.status_code, r.text[:300])
        except httpx.HTTPError as exc:
            log.warning("joining the fleet at %s: %s (retrying)", api.base_url, exc)
        await asyncio.sleep(interval)
    wanted = {sid: spec_from_dict(spec) for sid, spec in r.json().get("sandboxes", {}).items()}
    pools = list(r.json().get("pools", []))
    report = await local.recover(wanted)
    log.info("joined the fleet: %d sandbox(es) adopted, %d lost", len(report.adopted), len(report.lost))
    while True:
        try:
            r = await api.post(f"/fleet/nodes/{local.name}/recovered", json=report.model_dump())
            if r.status_code < 400:
                await _set_pools(local, pools)
                return
            log.error("reporting recovery: HTTP %d %s", r.status_code, r.text[:300])
        except httpx.HTTPError as exc:
            log.warning("reporting recovery: %s (retrying)", exc)
        await asyncio.sleep(interval)


async def _set_pools(local: LocalNode, pools: list[dict[str, Any]]) -> None:
    """Keep the fleet's warm pools here too (they fill in the background); one that cannot is logged."""
    for pool in pools:
        try:
            await local.set_pool(str(pool["template"]), pool.get("runtime"), int(pool["size"]))
        except (errors.SandlotError, KeyError, TypeError, ValueError) as exc:
            log.error("the fleet's warm pool %s cannot be kept on this node: %s", pool, exc)
