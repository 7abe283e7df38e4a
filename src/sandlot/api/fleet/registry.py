"""The fleet's node registry, in the API's database: one row per node daemon.

A node joins (`join`: its address, labels, capacity), then heartbeats its
capacity every few seconds. A node is `unreachable` when its last heartbeat is
older than the fleet's timeout; an admin may mark it `draining` (no new
placements) or remove it. Every replica reads the same rows, so any replica
places on, and reaches, any node.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandlot import errors
from sandlot.api.reservations import Amount, Reservations
from sandlot.api.store import ACTIVE_STATES, Store, metadata_obj, sandboxes
from sandlot.node.protocol import NodeInfo

__all__ = ["HOLDING_STATES", "NodeRecord", "NodeRegistry", "Usage", "scope"]

T = TypeVar("T")

nodes = sa.Table(
    "nodes",
    metadata_obj,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    # active or draining (unreachable is computed from last_seen)
    sa.Column("state", sa.String(16), nullable=False, default="active"),
    sa.Column("labels", sa.Text, nullable=False, default="{}"),
    sa.Column("info", sa.Text, nullable=False, default="{}"),
    sa.Column("joined_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
)


#: states whose sandboxes hold their cpu and memory limits on their node (a hibernated one
#: released its compute: it counts in `sandboxes`, not in what is committed)
HOLDING_STATES = ("starting", "running", "paused")


@dataclass(frozen=True)
class Usage:
    """What a node's records place on it: active sandboxes, and the limits of those holding compute."""

    sandboxes: int = 0
    cpu: float = 0.0
    memory_mb: int = 0


@dataclass
class NodeRecord:
    name: str
    url: str
    state: str
    labels: dict[str, str]
    info: NodeInfo | None
    joined_at: float
    last_seen: float
    #: active records placed on it (from the sandboxes table: fresh, unlike info.sandboxes), and
    #: creates being placed on it (their reservations)
    sandboxes: int = 0
    #: what the creates being placed on it hold (api/reservations.py): not in `info` yet
    reserved: Amount = field(default_factory=Amount)
    #: the cpu and memory limits of its sandboxes that hold compute (HOLDING_STATES), and of the
    #: creates being placed on it: what the node has promised, whatever they use now
    committed_cpu: float = 0.0
    committed_memory_mb: int = 0

    @property
    def memory_free_bytes(self) -> int:
        return (self.info.memory_available_bytes if self.info else 0) - (self.reserved.memory_mb << 20)

    @property
    def disk_free_bytes(self) -> int:
        return (self.info.disk_free_bytes if self.info else 0) - (self.reserved.disk_mb << 20)

    def live(self, timeout: float, now: float | None = None) -> bool:
        return (now or time.time()) - self.last_seen <= timeout

    def shown_state(self, timeout: float) -> str:
        return self.state if self.live(timeout) else "unreachable"


def scope(name: str) -> str:
    """The scope of a node's reservations (api/reservations.py)."""
    return f"node:{name}"


def _record(row: sa.Row[tuple[object, ...]], usage: dict[str, Usage], held: dict[str, Amount]) -> NodeRecord:
    m = row._mapping
    name = str(m["name"])
    raw = json.loads(str(m["info"]) or "{}")
    reserved = held.get(scope(name), Amount())
    used = usage.get(name, Usage())
    return NodeRecord(
        name=name,
        url=str(m["url"]),
        state=str(m["state"]),
        labels=dict(json.loads(str(m["labels"]) or "{}")),
        info=NodeInfo.model_validate(raw) if raw else None,
        joined_at=float(m["joined_at"]),
        last_seen=float(m["last_seen"]),
        sandboxes=used.sandboxes + reserved.sandboxes,
        reserved=reserved,
        committed_cpu=used.cpu + reserved.cpu,
        committed_memory_mb=used.memory_mb + reserved.memory_mb,
    )


def _usage(c: Connection, name: str | None = None) -> dict[str, Usage]:
    """Each node's `Usage` from the sandboxes table (only node `name`'s, when given)."""
    cols = sandboxes.c
    holding = cols.state.in_(HOLDING_STATES)
    query = (
        sa.select(
            cols.node,
            sa.func.count(),
            sa.func.sum(sa.case((holding, cols.cpu), else_=0.0)),
            sa.func.sum(sa.case((holding, cols.memory_mb), else_=0)),
        )
        .where(cols.state.in_(ACTIVE_STATES))
        .group_by(cols.node)
    )
    if name is not None:
        query = query.where(cols.node == name)
    return {str(n): Usage(int(k), float(cpu or 0), int(mem or 0)) for n, k, cpu, mem in c.execute(query)}


class NodeRegistry:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    async def _run(self, fn: Callable[[Connection], T]) -> T:
        def txn() -> T:
            with self.engine.begin() as conn:
                return fn(conn)

        return await asyncio.to_thread(txn)

    async def join(self, name: str, url: str, labels: dict[str, str], info: NodeInfo) -> None:
        """Add the node, or update the address and labels of one that restarted (its state stays).

        It is not live (nothing is placed on it) until its first heartbeat, which it sends once it
        has recovered its sandboxes: a create must not race its recovery."""
        now = time.time()

        def q(c: Connection) -> None:
            values = {"url": url, "labels": json.dumps(labels), "info": info.model_dump_json(), "last_seen": 0.0}
            if c.execute(nodes.update().where(nodes.c.name == name).values(**values)).rowcount == 0:
                c.execute(nodes.insert().values(name=name, state="active", joined_at=now, **values))

        await self._run(q)

    async def heartbeat(self, name: str, info: NodeInfo) -> bool:
        """Record a heartbeat; False when the node is not registered (removed: it must join again)."""

        def q(c: Connection) -> bool:
            stmt = nodes.update().where(nodes.c.name == name).values(info=info.model_dump_json(), last_seen=time.time())
            return bool(c.execute(stmt).rowcount)

        return await self._run(q)

    async def list(self) -> list[NodeRecord]:
        def q(c: Connection) -> list[NodeRecord]:
            usage = _usage(c)
            held = Reservations.held_under(c, "node:")
            return [_record(r, usage, held) for r in c.execute(sa.select(nodes).order_by(nodes.c.name))]

        return await self._run(q)

    @staticmethod
    def read(c: Connection, name: str, held: Amount) -> NodeRecord | None:
        """The node's row as it is now, with its records' usage and what `held` reserves on it
        (within a transaction)."""
        row = c.execute(sa.select(nodes).where(nodes.c.name == name)).first()
        return None if row is None else _record(row, _usage(c, name), {scope(name): held})

    async def get(self, name: str) -> NodeRecord | None:
        return next((n for n in await self.list() if n.name == name), None)

    async def set_state(self, name: str, state: str) -> None:
        def q(c: Connection) -> int:
            return int(c.execute(nodes.update().where(nodes.c.name == name).values(state=state)).rowcount)

        if not await self._run(q):
            raise errors.NotFoundError(f"node {name!r} is not in the fleet")

    async def remove(self, name: str) -> None:
        def q(c: Connection) -> int:
            return int(c.execute(nodes.delete().where(nodes.c.name == name)).rowcount)

        if not await self._run(q):
            raise errors.NotFoundError(f"node {name!r} is not in the fleet")
