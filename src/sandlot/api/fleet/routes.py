"""The fleet's routes on an API replica.

For node daemons (authenticated with the fleet's node token, `Bearer`):

    POST /fleet/nodes/{name}/join       {url, labels, info} -> {sandboxes: {id: spec}, pools: [...]}
    POST /fleet/nodes/{name}/recovered  RecoveryReport: the sandboxes it lost are marked killed
    PUT  /fleet/nodes/{name}/heartbeat  {info}  (404: not registered, join again)

A node (re)joining is told the sandboxes the records place on it; it re-adopts the
live ones and reports the rest, which are then recorded killed with its reason. It is
also told the warm pools (their sizes are in the database): a node that joins after a
pool was set fills it too.

For admins (API keys): `GET /nodes`, `POST /nodes/{name}/drain` (no new placements;
its persistent sandboxes move to other nodes: api/fleet/moves.py), `DELETE /nodes/{name}`
(a reachable node's persistent sandboxes move first; the records of the rest are marked
killed). On `sandlot serve` (no fleet) these answer 400.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from sandlot import errors
from sandlot.api.auth import require_admin
from sandlot.api.deps import Svc, Who
from sandlot.api.fleet import moves
from sandlot.api.fleet.fleet import Fleet
from sandlot.api.service import SandboxService
from sandlot.api.store import ACTIVE_STATES
from sandlot.models import DrainResult, ErrorBody, NodeList, NodeSummary
from sandlot.node.protocol import Limits, NodeInfo, RecoveryReport, SandboxSpec, spec_to_dict

__all__ = ["router"]

log = logging.getLogger("sandlot.api")

NodeName = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]

router = APIRouter(tags=["fleet"], responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 422)})


class Join(BaseModel):
    url: str = Field(min_length=1, max_length=1024)
    labels: dict[str, str] = Field(default_factory=dict)
    info: NodeInfo


class Heartbeat(BaseModel):
    info: NodeInfo


def _fleet(svc: SandboxService) -> Fleet:
    if not isinstance(svc.node, Fleet):
        raise errors.InvalidArgumentError("this server runs its own node, not a fleet (sandlot serve --no-local-node)")
    return svc.node


async def node_token(request: Request, svc: Svc) -> Fleet:
    fleet = _fleet(svc)
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, f"Bearer {fleet.token}".encode()):
        raise errors.AuthenticationError("a valid node token is required")
    return fleet


FleetOfNode = Annotated[Fleet, Depends(node_token)]


@router.post("/fleet/nodes/{name}/join", include_in_schema=False)
async def join(name: NodeName, body: Join, fleet: FleetOfNode, svc: Svc) -> dict[str, Any]:
    await fleet.registry.join(name, body.url, body.labels, body.info)
    wanted = {
        r.sandbox_id: spec_to_dict(
            SandboxSpec(
                image=r.template,
                runtime=r.runtime,
                limits=Limits(cpu=r.cpu, memory_mb=r.memory_mb, disk_mb=r.disk_mb),
            )
        )
        for r in await svc.store.active()
        if r.node == name
    }
    pools = [{"template": t, "runtime": r, "size": n} for t, r, n in await svc.store.pools()]
    log.info("node %s joined at %s; it holds %d sandbox(es)", name, body.url, len(wanted))
    return {"sandboxes": wanted, "pools": pools}


@router.post("/fleet/nodes/{name}/recovered", include_in_schema=False)
async def recovered(name: NodeName, body: RecoveryReport, fleet: FleetOfNode, svc: Svc) -> dict[str, Any]:
    for sid, reason in body.lost.items():
        rec = await svc.store.get_sandbox(sid)
        if rec is not None and rec.node == name and rec.state in ACTIVE_STATES:
            await svc.store.set_state(sid, "killed", f"lost: {reason}")
    # A sandbox recovery found paused is frozen again by the node (its record says so).
    for sid in body.adopted:
        rec = await svc.store.get_sandbox(sid)
        if rec is not None and rec.state == "paused":
            status = await fleet.status(sid)
            if status is not None and status.state == "running":
                await fleet.pause(sid)
    return {}


@router.put("/fleet/nodes/{name}/heartbeat", include_in_schema=False)
async def heartbeat(name: NodeName, body: Heartbeat, fleet: FleetOfNode) -> dict[str, Any]:
    if not await fleet.registry.heartbeat(name, body.info):
        raise errors.NotFoundError(f"node {name} is not in the fleet: join again")
    return {}


@router.get("/nodes", response_model=NodeList)
async def list_nodes(who: Who, svc: Svc) -> NodeList:
    """The fleet's nodes: state, address, sandboxes, free capacity, version, runtimes and what they
    run on (admin only). A server that runs its own node lists that one node."""
    require_admin(who)
    if not isinstance(svc.node, Fleet):
        info = await svc.node.info()
        return NodeList(nodes=[_summary(info.name, "active", "local", {}, info.sandboxes, info, time.time())])
    fleet = svc.node
    out = []
    for n in await fleet.registry.list():
        state = n.shown_state(fleet.node_timeout_s)
        summary = _summary(n.name, state, n.url, n.labels, n.sandboxes, n.info, n.last_seen)
        summary.committed_cpu = n.committed_cpu
        summary.committed_cpu_max = fleet.overcommit.cpus(n)
        summary.committed_memory_bytes = n.committed_memory_mb << 20
        summary.committed_memory_max_bytes = fleet.overcommit.memory_mb(n) << 20
        out.append(summary)
    return NodeList(nodes=out)


def _summary(
    name: str, state: str, address: str, labels: dict[str, str], sandboxes: int, info: NodeInfo | None, seen: float
) -> NodeSummary:
    """A node's summary from its last report (committed figures: a fleet's, filled in by the caller)."""
    return NodeSummary(
        name=name,
        state=state,
        address=address,
        labels=labels,
        sandboxes=sandboxes,
        cpus=info.cpus if info else 0,
        memory_available_bytes=info.memory_available_bytes if info else 0,
        disk_free_bytes=info.disk_free_bytes if info else 0,
        version=info.version if info else "",
        runtimes=info.runtimes if info else [],
        accelerators=info.accelerators if info else {},
        last_seen=seen,
    )


@router.post("/nodes/{name}/drain", response_model=DrainResult)
async def drain(name: NodeName, who: Who, svc: Svc) -> DrainResult:
    """No new sandboxes on this node; its persistent sandboxes move to other nodes that carry their
    labels, hibernated (their disks are shipped; they wake there, from their disks, on the next
    request), and it holds none once this returns; one that no other node can take stays (`stayed`
    says why), and moves when it is next woken (admin only). Ephemeral sandboxes run on until their
    timeout."""
    require_admin(who)
    fleet = _fleet(svc)
    await fleet.registry.set_state(name, "draining")
    moved: dict[str, str] = {}
    stayed: dict[str, str] = {}
    if await _reachable(fleet, name):
        moved, stayed = await moves.move_all(fleet, name)
    node = next(n for n in (await list_nodes(who, svc)).nodes if n.name == name)
    return DrainResult(**node.model_dump(), moved=moved, stayed=stayed)


async def _reachable(fleet: Fleet, name: str) -> bool:
    await fleet.live(fresh=True)  # a node back a moment ago is live, for this and the moves after it
    try:
        await fleet.node(name)
    except (errors.NodeUnreachableError, errors.NotFoundError):
        return False
    return True


@router.delete("/nodes/{name}", status_code=204)
async def remove(name: NodeName, who: Who, svc: Svc) -> None:
    """Forget the node: while it is reachable its persistent sandboxes move to other nodes first (as
    a drain's do); the records of the sandboxes left on it say killed (admin only)."""
    require_admin(who)
    fleet = _fleet(svc)
    if await _reachable(fleet, name):
        await fleet.registry.set_state(name, "draining")
        await moves.move_all(fleet, name)
    await fleet.registry.remove(name)
    for rec in await svc.store.active():
        if rec.node == name:
            await svc.store.set_state(rec.sandbox_id, "killed", f"its node {name} was removed from the fleet")
