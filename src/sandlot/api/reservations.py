"""Room held in the database while something is being made: what every API replica counts.

A create takes a while (a node boots the sandbox) and its record is written only
once it is made; meanwhile the room it will take must count, or two creates a
moment apart, on one replica or on two, would both fit a limit only one of them
fits. A reservation is a row (`reservations`) in a scope (`team:NAME` for a
team's limits, api/teams.py; `node:NAME` for a node's capacity, api/fleet/): a
check and the reservation it allows are one transaction, serialized per scope
(a PostgreSQL advisory lock; SQLite is one process, so a lock here), so that
concurrent checks see each other's reservations.

A reservation is released when what it was for is made (or failed); one left by
a replica that died midway expires after `ttl_s`.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sandlot.api.store import Store, metadata_obj

__all__ = ["DEFAULT_TTL_S", "Amount", "Check", "Reservations"]

#: how long a reservation counts when nothing releases it (its replica died midway)
DEFAULT_TTL_S = 600.0

#: the first key of this module's PostgreSQL advisory locks (the second one names the scope)
_LOCK_SPACE = 0x534C  # "SL"

reservations = sa.Table(
    "reservations",
    metadata_obj,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("scope", sa.String(160), nullable=False, index=True),
    sa.Column("sandboxes", sa.Integer, nullable=False, default=0),
    sa.Column("disk_mb", sa.BigInteger, nullable=False, default=0),
    sa.Column("memory_mb", sa.BigInteger, nullable=False, default=0),
    sa.Column("cpu", sa.Float, nullable=False, default=0.0),
    sa.Column("expires_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class Amount:
    sandboxes: int = 0
    disk_mb: int = 0
    memory_mb: int = 0
    #: cores (cpu limits)
    cpu: float = 0.0

    def __add__(self, other: Amount) -> Amount:
        return Amount(
            self.sandboxes + other.sandboxes,
            self.disk_mb + other.disk_mb,
            self.memory_mb + other.memory_mb,
            self.cpu + other.cpu,
        )


#: `check(conn, held)`: raise unless the new reservation fits beside `held` (what the scope's
#: live reservations hold); `conn` reads anything else the check needs in the same transaction.
Check = Callable[[Connection, Amount], None]


def _lock_key(scope: str) -> int:
    return int.from_bytes(hashlib.blake2b(scope.encode(), digest_size=4).digest(), "big", signed=True)


def _held(c: Connection, where: sa.ColumnElement[bool], now: float) -> dict[str, Amount]:
    cols = reservations.c
    rows = c.execute(
        sa.select(
            cols.scope,
            sa.func.sum(cols.sandboxes),
            sa.func.sum(cols.disk_mb),
            sa.func.sum(cols.memory_mb),
            sa.func.sum(cols.cpu),
        )
        .where(where, cols.expires_at > now)
        .group_by(cols.scope)
    )
    return {str(s): Amount(int(n or 0), int(d or 0), int(m or 0), float(k or 0)) for s, n, d, m, k in rows}


class Reservations:
    def __init__(self, store: Store, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._sqlite_lock = threading.Lock()  # SQLite: one process, so one lock serializes every scope

    async def hold(self, scope: str, amount: Amount, check: Check) -> str:
        """Reserve `amount` in `scope` if `check` lets it; the reservation's id (for `release`)."""
        rid = secrets.token_hex(16)

        def q(c: Connection) -> str:
            now = time.time()
            if c.dialect.name == "postgresql":
                c.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_SPACE, _lock_key(scope))))
            c.execute(reservations.delete().where(reservations.c.scope == scope, reservations.c.expires_at <= now))
            check(c, _held(c, reservations.c.scope == scope, now).get(scope, Amount()))
            c.execute(
                reservations.insert().values(
                    id=rid,
                    scope=scope,
                    sandboxes=amount.sandboxes,
                    disk_mb=amount.disk_mb,
                    memory_mb=amount.memory_mb,
                    cpu=amount.cpu,
                    expires_at=now + self.ttl_s,
                )
            )
            return rid

        return await self.store.transaction(q, lock=None if self.store.dialect == "postgresql" else self._sqlite_lock)

    async def release(self, rid: str) -> None:
        await self.store.transaction(lambda c: self.drop(c, rid))

    @staticmethod
    def drop(c: Connection, rid: str) -> None:
        """Release reservation `rid` within a transaction (the one that records what it held room for)."""
        c.execute(reservations.delete().where(reservations.c.id == rid))

    @contextlib.asynccontextmanager
    async def holding(self, scope: str, amount: Amount, check: Check) -> AsyncIterator[None]:
        rid = await self.hold(scope, amount, check)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # unreleased, it expires
                await self.release(rid)

    async def held(self, scope: str) -> Amount:
        def q(c: Connection) -> Amount:
            return _held(c, reservations.c.scope == scope, time.time()).get(scope, Amount())

        return await self.store.transaction(q)

    @staticmethod
    def held_under(c: Connection, prefix: str) -> dict[str, Amount]:
        """What the live reservations of every scope starting with `prefix` hold (within a transaction)."""
        return _held(c, reservations.c.scope.startswith(prefix, autoescape=True), time.time())
