"""Teams' limits and housekeeping: how much a team may hold, and what is cleaned up after it.

Every team has four limits, each its own (set by an admin: `PATCH
/teams/{team}/quota`, `sandlot teams set-quota`) or else the server's default
(`Quotas`):

- `max_sandboxes`: live sandboxes (running, paused, hibernated) at once;
- `max_disk_mb`: disk it holds: the disk limits of its live sandboxes, the
  sizes of its volumes and what its checkpoints hold;
- `max_lifetime_s`: how far from creation a timeout may reach (0: no limit);
- `checkpoint_retention_s`: how long the checkpoints of a killed sandbox are
  kept after it ended (0: until deleted). Default: 7 days.

A create, fork, checkpoint or volume that would pass a limit is refused with
LimitReachedError (HTTP 429) naming the limit and what uses it. What is being
made meanwhile counts: admission reserves its room in the database
(api/reservations.py, scope `team:NAME`) in the transaction that checks the
limit, serialized per team across every API replica, so concurrent creates
(on one replica or several) cannot overshoot together. Lowering a limit below
what a team uses stops nothing; new things are refused.

The retention sweep runs from the service's reaper, at most every
`sweep_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.engine import Connection

from sandlot import errors
from sandlot.api.reservations import Amount, Reservations
from sandlot.api.store import ACTIVE_STATES, QUOTA_FIELDS, Store
from sandlot.models import TeamInfo, TeamQuota, TeamUsage

if TYPE_CHECKING:
    from sandlot.node.client import NodeClient

__all__ = ["DEFAULT_CHECKPOINT_RETENTION_S", "Quotas", "Room", "Teams"]

log = logging.getLogger("sandlot.api")

DEFAULT_CHECKPOINT_RETENTION_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Quotas:
    """The server's limits: per sandbox, and every team's defaults (a team may have its own)."""

    #: live sandboxes per team (default)
    max_sandboxes: int = 100
    #: the largest disk one sandbox may have
    max_disk_mb: int = 64 << 10
    #: the most memory one sandbox may have
    max_memory_mb: int = 64 << 10
    #: longest lifetime (seconds from creation) a timeout may give an ephemeral sandbox; None: no limit (default)
    max_lifetime_s: int | None = None
    #: disk a team may hold: sandboxes' disk limits + volumes + checkpoints (default)
    team_max_disk_mb: int = 256 << 10
    #: how long checkpoints of a killed sandbox are kept (default); 0: until deleted
    checkpoint_retention_s: int = DEFAULT_CHECKPOINT_RETENTION_S

    def defaults(self) -> TeamQuota:
        return TeamQuota(
            max_sandboxes=self.max_sandboxes,
            max_disk_mb=self.team_max_disk_mb,
            max_lifetime_s=self.max_lifetime_s or 0,
            checkpoint_retention_s=self.checkpoint_retention_s,
        )


def _mb(n_bytes: int) -> int:
    return -(-n_bytes // (1 << 20))


def _scope(team: str) -> str:
    return f"team:{team}"


def _detail(sandbox_mb: int, volume_mb: int, ck_mb: int) -> str:
    return f"sandboxes' disks {sandbox_mb} MiB, volumes {volume_mb} MiB, checkpoints {ck_mb} MiB"


T = TypeVar("T")


@dataclass
class Room:
    """Room that `Teams.admit` holds (a reservation) while something is made."""

    rid: str
    given_up: bool = False

    async def recorded(self, write: Callable[[Callable[[Connection], None]], Awaitable[T]]) -> T:
        """`write(give_up)`: a store write that calls `give_up(c)` in its transaction, so the record of
        what was made and the release of its room commit together: never both counted (which refused
        a create there was room for), and no round trip of its own for the release."""
        out = await write(lambda c: Reservations.drop(c, self.rid))
        self.given_up = True
        return out


@dataclass
class Teams:
    """Limits and usage of teams. Invariant: `_locks[team]` guards admission of that team."""

    node: NodeClient
    store: Store
    quotas: Quotas = field(default_factory=Quotas)
    sweep_interval_s: float = 60.0
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _last_sweep: float = 0.0
    _reservations: Reservations | None = None

    @property
    def reservations(self) -> Reservations:
        if self._reservations is None:
            self._reservations = Reservations(self.store)
        return self._reservations

    async def quota(self, team: str) -> tuple[TeamQuota, list[str]]:
        """The team's limits as they apply, and which of them are its own."""
        own = await self.store.team_quota(team)
        merged = self.quotas.defaults().model_dump()
        merged.update({k: v for k, v in own.items() if v is not None})
        return TeamQuota(**merged), [k for k in QUOTA_FIELDS if own[k] is not None]

    async def set_quota(self, team: str, values: dict[str, int | None]) -> None:
        await self.store.set_team_quota(team, values)

    async def usage(self, team: str) -> tuple[TeamUsage, str]:
        """What the team holds, what is being made for it included, and the disk broken down (for messages)."""
        held = await self.reservations.held(_scope(team))
        sandboxes = await self.store.count_active(team) + held.sandboxes
        sandbox_mb = await self.store.active_disk_mb(team) + held.disk_mb
        volume_mb, ck_mb = await self._stored_mb(team)
        return TeamUsage(sandboxes=sandboxes, disk_mb=sandbox_mb + volume_mb + ck_mb), _detail(
            sandbox_mb, volume_mb, ck_mb
        )

    async def _stored_mb(self, team: str) -> tuple[int, int]:
        """The disk the team's volumes and checkpoints hold (MiB), as its nodes report it."""
        volumes, checkpoints = await asyncio.gather(self.node.list_volumes(team), self.node.list_checkpoints())
        volume_mb = sum(v.size_mb or 0 for v in volumes)
        owners = await self.store.owners([c.sandbox_id for c in checkpoints])
        ck_mb = _mb(sum(c.size_bytes for c in checkpoints if owners.get(c.sandbox_id, ("",))[0] == team))
        return volume_mb, ck_mb

    async def info(self, team: str) -> TeamInfo:
        quota, overrides = await self.quota(team)
        usage, _ = await self.usage(team)
        return TeamInfo(team=team, quota=quota, overrides=overrides, usage=usage)

    @contextlib.asynccontextmanager
    async def admit(
        self, team: str, *, sandboxes: int = 0, disk_mb: int = 0, what: str, quota: TeamQuota | None = None
    ) -> AsyncIterator[Room]:
        """Hold room for `sandboxes` and `disk_mb` while `what` is made; LimitReachedError if they do not fit.

        The room is reserved in the database in the transaction that checks the limits, serialized
        per team across replicas; the local lock only spares the database this replica's queue.
        It is released on leaving, unless `Room.recorded` gave it up with the record of what was made.
        `quota`: the team's limits, where the caller has just read them with `quota`: not read again."""
        async with self._locks.setdefault(team, asyncio.Lock()):
            if quota is None:
                quota, _ = await self.quota(team)
            volume_mb, ck_mb = await self._stored_mb(team)

            def check(c: Connection, held: Amount) -> None:
                live, sandbox_mb = self.store.holdings(c, team)
                live += held.sandboxes
                sandbox_mb += held.disk_mb
                if sandboxes and live + sandboxes > quota.max_sandboxes:
                    raise errors.LimitReachedError(
                        f"cannot {what}: team {team!r} runs {live} live sandbox(es) and may run "
                        f"{quota.max_sandboxes}; kill some, or ask an admin to raise its max_sandboxes"
                    )
                used = sandbox_mb + volume_mb + ck_mb
                if used + max(disk_mb, 1) > quota.max_disk_mb:
                    raise errors.LimitReachedError(
                        f"cannot {what}: team {team!r} holds {used} MiB of disk "
                        f"({_detail(sandbox_mb, volume_mb, ck_mb)}) of its max_disk_mb {quota.max_disk_mb}, "
                        f"and this needs {disk_mb} MiB more; free some, or ask an admin to raise it "
                        "(sandlot teams set-quota)"
                    )

            rid = await self.reservations.hold(_scope(team), Amount(sandboxes=sandboxes, disk_mb=disk_mb), check)
        room = Room(rid)
        try:
            yield room
        finally:
            if not room.given_up:
                with contextlib.suppress(Exception):  # unreleased, it expires (reservations.py)
                    await self.reservations.release(rid)

    # ------------------------------------------------------------ housekeeping

    async def housekeeping(self, now: float | None = None) -> None:
        """Run the retention sweep when it is due (called on every reaper tick)."""
        now = time.time() if now is None else now
        if now - self._last_sweep < self.sweep_interval_s:
            return
        self._last_sweep = now
        await self.sweep_checkpoints(now)

    async def sweep_checkpoints(self, now: float) -> list[str]:
        """Delete checkpoints of killed sandboxes kept longer than their team's retention; returns their ids."""
        checkpoints = await self.node.list_checkpoints()
        owners = await self.store.owners([c.sandbox_id for c in checkpoints])
        retention: dict[str, int] = {}
        deleted = []
        for ck in checkpoints:
            owner = owners.get(ck.sandbox_id)
            if owner is None or owner[1] in ACTIVE_STATES:  # no record (the node's own use), or still alive
                continue
            team, _, ended_at = owner
            if team not in retention:
                retention[team] = (await self.quota(team))[0].checkpoint_retention_s
            keep = retention[team]
            if keep == 0 or now - (ended_at or ck.created_at) < keep:
                continue
            with contextlib.suppress(errors.CheckpointNotFoundError):  # deleted by its owner meanwhile
                await self.node.delete_checkpoint(ck.checkpoint_id)
                deleted.append(ck.checkpoint_id)
                log.info("deleted checkpoint %s of killed sandbox %s (team %s keeps them %d s)",
                         ck.checkpoint_id, ck.sandbox_id, team, keep)  # fmt: skip
        return deleted
