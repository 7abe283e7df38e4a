"""Sandboxes as the API sees them: node sandboxes plus their persisted records.

The node owns the sandboxes themselves, and the API reaches it only through
its seam (`NodeClient`, node/client.py); the store owns the records (team,
limits, metadata, state, `ends_at`, the node that holds it). `SandboxService`
keeps the two in step:

- a record is written as soon as the node has made the sandbox, and marked
  killed whenever the node loses it (kill, timeout, death, a failed recovery);
  a kill is recorded before the node starts it (write-ahead), so a server killed
  midway finishes it at its restart instead of bringing the sandbox back;
- the reaper kills sandboxes past `ends_at` and reconciles records whose
  sandbox died on its own. Its tick costs the same with 1 sandbox or 1000:
  one query for expired records, the sandboxes the node reported dead since
  the last tick (`NodeClient.exited`), persistent ones for idle hibernation, and a
  full reconcile of every record only every FULL_RECONCILE_S as a safety net;
- at start, `recover` re-adopts the sandboxes the records say are running and
  brings each to the state its record says (the last operation that completed):
  an operation the restart interrupted is undone, or finished where it cannot be.

Invariant: a record in an active state whose sandbox the node no longer has is
stale; every read goes through `_reconcile`, which fixes it before answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from sandlot import errors
from sandlot.agent.handle import SandboxAgent
from sandlot.api import lifecycle
from sandlot.api.auth import Principal
from sandlot.api.events import EventLog
from sandlot.api.lifecycle import check_lifetime
from sandlot.api.store import ACTIVE_STATES, SandboxRecord, Store
from sandlot.api.teams import Quotas, Room, Teams
from sandlot.api.telemetry import Telemetry
from sandlot.api.template_access import usable, writer
from sandlot.api.volumes import volume_mounts
from sandlot.failpoints import afailpoint
from sandlot.models import SandboxCreate, SandboxInfo, SandboxMetric, SandboxState
from sandlot.node.client import NodeClient
from sandlot.node.protocol import Limits, NetworkPolicy, RecoveryReport, SandboxSpec, SandboxStatus

__all__ = ["Quotas", "SandboxService"]

log = logging.getLogger("sandlot.api")

#: How often the reaper reconciles every record, not only those the node reported dead.
FULL_RECONCILE_S = 60.0
#: the reaper asks the store for expired sandboxes at least this often even when it knows of no
#: timeout due and this process wrote nothing: other replicas' records (a fleet)
TIMEOUTS_RECHECK_S = 5.0


def info(rec: SandboxRecord) -> SandboxInfo:
    return SandboxInfo(
        sandbox_id=rec.sandbox_id,
        team=rec.team,
        template=rec.template,
        runtime=rec.runtime,
        cpu=rec.cpu,
        memory_mb=rec.memory_mb,
        disk_mb=rec.disk_mb,
        metadata=rec.metadata,
        state=SandboxState(rec.state),
        created_at=rec.created_at,
        ends_at=rec.ends_at,
        exit_reason=rec.exit_reason,
        persistent=rec.persistent,
        on_timeout=rec.on_timeout,
        auto_resume=rec.auto_resume,
        node=rec.node,
    )


def _check_reachable(rec: SandboxRecord) -> None:
    if rec.state == "unknown":
        raise errors.NodeUnreachableError(
            f"sandbox {rec.sandbox_id} is on node {rec.node}, which is unreachable; try again once it is back"
        )


class SandboxService:
    def __init__(
        self,
        node: NodeClient,
        store: Store,
        *,
        default_template: str = "base",
        quotas: Quotas | None = None,
        hibernate_after_s: float = 900.0,
        housekeeping_interval_s: float = 60.0,
    ) -> None:
        #: the node that holds every sandbox today; with a fleet, placement picks one of several
        #: and a record's `node` names the one that holds it
        self.node = node
        #: a persistent sandbox with no request for this long hibernates
        self.hibernate_after_s = hibernate_after_s
        # _clocks: persistent sandboxes that served a request here since the reaper's last tick,
        # and when; the reaper writes them to the store's `active_at` (lifecycle.store_clocks).
        self._clocks: dict[str, float] = {}
        self.store = store
        self.default_template = default_template
        self.quotas = quotas or Quotas()
        #: teams' limits, admission and the retention of checkpoints (teams.py)
        self.teams = Teams(node, store, self.quotas, sweep_interval_s=housekeeping_interval_s)
        # _gone remembers why a sandbox died, for records reconciled after the node forgot it.
        self._gone: dict[str, str] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._reconciled_at = 0.0
        self._idle_checked_at = 0.0
        # what the reaper knows of timeouts (_timeouts_stale)
        self._next_timeout = 0.0
        self._deadline_writes_seen = -1
        self._timeouts_checked_at = 0.0
        #: this process's counters for GET /metrics
        self.telemetry = Telemetry()
        #: lifecycle events, recorded by the store's transitions (events.py)
        self.events = EventLog(store)

    # ------------------------------------------------------------ lifecycle

    async def start(self, reap_interval: float = 1.0) -> RecoveryReport:
        await self.events.init()
        report = await self.recover()
        self._reaper = asyncio.create_task(self._reap_forever(reap_interval))
        return report

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper

    async def recover(self) -> RecoveryReport:
        """Re-adopt the sandboxes the records say are running; mark the rest killed."""
        records = await self.store.active()
        wanted = {
            r.sandbox_id: SandboxSpec(
                image=r.template,
                runtime=r.runtime,
                limits=Limits(cpu=r.cpu, memory_mb=r.memory_mb, disk_mb=r.disk_mb),
            )
            for r in records
        }
        report = await self.node.recover(wanted)
        for sid, reason in report.lost.items():
            if sid in wanted:
                await self.store.set_state(sid, "killed", f"lost: {reason}")
                self.telemetry.killed(f"lost: {reason}")
        for rec in records:
            if rec.sandbox_id in report.adopted:
                await self._align(rec)
        if report.adopted or report.lost:
            log.info("recovered %d sandbox(es); lost %d", len(report.adopted), len(report.lost))
        return report

    async def _align(self, rec: SandboxRecord) -> None:
        """Bring an adopted sandbox to its record's state: an operation the restart cut short
        (a pause, a resume, a hibernation or a wake) had changed the node but not the record."""
        sid = rec.sandbox_id
        status = await self.node.status(sid)
        if status is None:
            return
        node_state = status.state
        try:
            if node_state == "hibernated" and rec.state != "hibernated":
                await self.store.set_state(sid, "hibernated")  # transparent: the next request wakes it
            elif node_state == "running" and rec.state == "hibernated":
                await self.store.set_state(sid, "running")
            elif node_state == "running" and rec.state == "paused":
                # Recovery thaws a paused sandbox so its agent can call back (or a resume had
                # brought it back just before the restart): freeze it again.
                await self.node.pause(sid)
            elif node_state == "paused" and rec.state == "running":  # a pause with memory, cut short
                await self.node.resume(sid)
        except errors.SandlotError as exc:
            log.error("bringing sandbox %s back to %s after a restart: %s", sid, rec.state, exc)
            status = await self.node.status(sid)
            if status is not None:
                await self.store.set_state(sid, status.state)

    # ------------------------------------------------------------ create / read

    async def create(self, who: Principal, req: SandboxCreate) -> SandboxRecord:
        started = time.monotonic()
        try:
            rec = await self._create(who, req)
        except Exception as exc:
            self.telemetry.create_failed(exc)
            raise
        self.telemetry.created(rec.template, started)
        return rec

    async def _create(self, who: Principal, req: SandboxCreate) -> SandboxRecord:
        template = req.template or self.default_template
        runtime = req.runtime or self.node.default_runtime
        if req.disk_mb > self.quotas.max_disk_mb:
            raise errors.InvalidArgumentError(
                f"disk_mb must be at most {self.quotas.max_disk_mb} on this server, got {req.disk_mb}", field="disk_mb"
            )
        if req.memory_mb > self.quotas.max_memory_mb:
            raise errors.InvalidArgumentError(
                f"memory_mb must be at most {self.quotas.max_memory_mb} on this server, got {req.memory_mb}",
                field="memory_mb",
            )
        quota, _ = await self.teams.quota(who.team)
        check_lifetime(quota.max_lifetime_s, who.team, 0.0, time.time() + req.timeout, req.persistent)
        spec = SandboxSpec(
            image=template,
            runtime=runtime,
            limits=Limits(cpu=req.cpu, memory_mb=req.memory_mb, disk_mb=req.disk_mb),
            env=dict(req.env),
            network=NetworkPolicy.parse(req.network if isinstance(req.network, str) else req.network.model_dump()),
            volumes=await volume_mounts(self.node, who.team, req.volumes),
            node_labels=dict(req.node_labels),
        ).validate()
        existing = await self.node.get_template(template)
        if existing is not None:
            usable(existing, template, who)  # another team's own template is "not found"
        elif req.registry_auth is not None:  # pulled with the team's credentials: the team's own
            await self.node.fetch_template(template, req.registry_auth, team=writer(who))
        admit = self.teams.admit(who.team, sandboxes=1, disk_mb=req.disk_mb, what="create a sandbox", quota=quota)
        async with admit as room:
            sbx = await self.node.create(spec)
            rec = await self._record(who, sbx, req, template, runtime, room)
            await afailpoint("api.create.after_record", sbx.sandbox_id)
        return rec

    async def _record(
        self, who: Principal, sbx: SandboxStatus, req: SandboxCreate, template: str, runtime: str, room: Room
    ) -> SandboxRecord:
        """Write the record of a sandbox the node just made, giving up the `room` it was made in (killing
        the sandbox if that fails)."""
        now = time.time()
        rec = SandboxRecord(
            sandbox_id=sbx.sandbox_id,
            team=who.team,
            template=template,
            runtime=runtime,
            cpu=req.cpu,
            memory_mb=req.memory_mb,
            disk_mb=req.disk_mb,
            state="running",
            created_at=now,
            ends_at=now + req.timeout,
            metadata=dict(req.metadata),
            persistent=req.persistent,
            on_timeout=req.on_timeout,
            auto_resume=req.auto_resume,
            active_at=now,
            node=sbx.node,
            node_labels=dict(req.node_labels),
        )
        try:
            await afailpoint("api.create.before_record", sbx.sandbox_id)
            await room.recorded(lambda give_up: self.store.add_sandbox(rec, give_up))
        except BaseException:
            with contextlib.suppress(errors.SandlotError):
                await self.node.kill(sbx.sandbox_id)
            raise
        return rec

    async def get(self, who: Principal, sandbox_id: str) -> SandboxRecord:
        return await self._found(sandbox_id, await self.store.get_sandbox(sandbox_id, who.team))

    async def _found(self, sandbox_id: str, rec: SandboxRecord | None) -> SandboxRecord:
        """The record of `sandbox_id` as read for its caller's team (None: that team has none), reconciled."""
        if rec is None:
            raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found")
        return await self._reconcile(rec)

    async def metrics(
        self, who: Principal, sandbox_id: str, start: float | None, end: float | None
    ) -> list[SandboxMetric]:
        """The sandbox's samples in [start, end] from the node that holds (or held) it."""
        if start is not None and end is not None and start > end:
            raise errors.InvalidArgumentError(f"start ({start}) is after end ({end})", field="start")
        rec = await self.get(who, sandbox_id)
        if rec.state == "unknown":
            return []
        return await self.node.metrics(sandbox_id, start, end)

    async def list(
        self,
        who: Principal,
        *,
        states: Sequence[str],
        metadata: dict[str, str],
        limit: int,
        cursor: str | None,
        newest_first: bool = False,
        created_after: float | None = None,
        templates: Sequence[str] = (),
    ) -> tuple[list[SandboxRecord], str | None]:
        recs, nxt = await self.store.list_sandboxes(
            team=who.team,
            states=states or ACTIVE_STATES,
            metadata=metadata,
            limit=limit,
            cursor=cursor,
            newest_first=newest_first,
            created_after=created_after,
            templates=templates,
        )
        return [await self._reconcile(r) for r in recs], nxt

    async def sandbox(self, who: Principal, sandbox_id: str) -> SandboxAgent:
        """The data plane of a live sandbox of the caller's team (a hibernated one is woken)."""
        return await self.agent_of(sandbox_id, await self.store.get_sandbox(sandbox_id, who.team))

    async def agent_of(self, sandbox_id: str, rec: SandboxRecord | None) -> SandboxAgent:
        """`sandbox`, from the record its caller read already for its team (auth.principal_and_sandbox)."""
        await self._live(await self._found(sandbox_id, rec))
        return await self.node.agent(sandbox_id)

    async def live_status(self, who: Principal, sandbox_id: str) -> SandboxStatus:
        """What the node says of a live sandbox of the caller's team (a hibernated one is woken)."""
        await self._live(await self.get(who, sandbox_id))
        status = await self.node.status(sandbox_id)
        if status is None:  # killed since the record was read
            raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found")
        return status

    async def _live(self, rec: SandboxRecord) -> SandboxRecord:
        """`rec` (reconciled), when its sandbox is live; a hibernated one is woken."""
        sandbox_id = rec.sandbox_id
        _check_reachable(rec)
        if rec.state not in ACTIVE_STATES:
            reason = f" ({rec.exit_reason})" if rec.exit_reason else ""
            raise errors.SandboxStateError(f"sandbox {sandbox_id} is {rec.state}{reason}")
        await self.wake_if_hibernated(rec)
        return rec

    async def wake_if_hibernated(self, rec: SandboxRecord) -> None:
        """Requests reach a hibernated sandbox (or a paused one with `auto_resume`) as if it never
        slept: wake it first."""
        await lifecycle.touch(self, rec)
        if rec.state == "hibernated":
            await lifecycle.wake(self, rec)
        elif rec.state == "paused" and rec.auto_resume:
            await lifecycle.resume(self, rec)

    async def for_request(self, rec: SandboxRecord) -> SandboxAgent:
        """The data plane of the running sandbox that a request to it (its in-sandbox API, its ports) is for.

        A sandbox that wakes on requests is woken first: a paused or hibernated one with
        `auto_resume`, a persistent one hibernated when idle. Any other that does not run is a
        SandboxStateError saying so: it needs an explicit resume.
        """
        rec = await self._reconcile(rec)
        if rec.state == "hibernated" and (rec.auto_resume or rec.persistent):
            await lifecycle.wake(self, rec)
        elif rec.state == "paused" and rec.auto_resume:
            await lifecycle.resume(self, rec)
        elif rec.state != "running":
            reason = f" ({rec.exit_reason})" if rec.exit_reason else ""
            hint = ": resume it first" if rec.state in ("paused", "hibernated") else ""
            raise errors.SandboxStateError(f"sandbox {rec.sandbox_id} is {rec.state}{reason}{hint}")
        await lifecycle.touch(self, rec)
        return await self.node.agent(rec.sandbox_id)

    async def _reconcile(self, rec: SandboxRecord) -> SandboxRecord:
        if rec.state not in ACTIVE_STATES:
            return rec
        try:
            sbx = await self.node.status(rec.sandbox_id)
        except errors.NodeUnreachableError:
            # Its node stopped answering (a fleet): never assume it died; the record is kept.
            rec.state, rec.exit_reason = "unknown", f"its node {rec.node} is unreachable"
            return rec
        if sbx is not None and not sbx.killed:
            return rec
        # _gone first: a read racing a kill in progress must not record the node's generic "killed".
        reason = (
            self._gone.get(rec.sandbox_id)
            or (sbx.exit_reason if sbx else await self.node.exit_reason(rec.sandbox_id))
            or "it died"
        )
        await self.store.set_state(rec.sandbox_id, "killed", reason)
        self.telemetry.killed(reason)
        rec.state, rec.exit_reason = "killed", reason
        return rec

    # ------------------------------------------------------------ pause / resume

    async def pause(self, who: Principal, sandbox_id: str, memory: bool = False) -> SandboxRecord:
        async def act(sid: str) -> None:
            await self.node.pause(sid, memory=memory)

        return await self._freeze(who, sandbox_id, "running", "paused", act)

    async def hibernate(self, who: Principal, sandbox_id: str) -> SandboxRecord:
        """Stop a running sandbox's processes and keep its filesystem (compute and memory released):
        E2B's filesystem-only pause. Resuming it boots it afresh on its files."""
        rec = await self.get(who, sandbox_id)
        if rec.state != "running":
            raise errors.SandboxStateError(f"cannot hibernate sandbox {sandbox_id} in state {rec.state}")
        await self.node.hibernate(sandbox_id, memory=False)
        await self.store.set_state(sandbox_id, "hibernated")
        rec.state = "hibernated"
        return rec

    async def resume(self, who: Principal, sandbox_id: str) -> SandboxRecord:
        rec = await self.get(who, sandbox_id)
        if rec.state == "hibernated":
            await self.wake_if_hibernated(rec)
            return rec
        if rec.state == "paused":  # the new timeout first, so the reaper never sees it running past the old
            await lifecycle.extend_after_timeout_pause(self, rec)
        return await self._freeze(who, sandbox_id, "paused", "running", self.node.resume)

    async def _freeze(
        self, who: Principal, sandbox_id: str, before: str, after: str, act: Callable[[str], Awaitable[None]]
    ) -> SandboxRecord:
        rec = await self.get(who, sandbox_id)
        _check_reachable(rec)
        if rec.state != before:
            verb = "pause" if after == "paused" else "resume"
            raise errors.SandboxStateError(f"cannot {verb} sandbox {sandbox_id} in state {rec.state}")
        await act(sandbox_id)
        await self.store.set_state(sandbox_id, after)
        rec.state = after
        return rec

    # ------------------------------------------------------------ kill / timeout

    async def kill(self, who: Principal, sandbox_id: str) -> None:
        """Kill the sandbox; returns once nothing of it is left (also when it was dying already)."""
        rec = await self.get(who, sandbox_id)
        _check_reachable(rec)
        if rec.state in ACTIVE_STATES:
            await self._kill(sandbox_id, "killed by request")
        else:  # it died on its own: its cleanup may still be under way, wait for it
            with contextlib.suppress(errors.SandboxNotFoundError):
                await self.node.kill(sandbox_id)

    async def _kill(self, sandbox_id: str, reason: str) -> None:
        # Recorded first: a server killed midway finishes the kill at its restart (recovery
        # destroys what no record wants), instead of finding a half-killed sandbox to bring back.
        self._gone[sandbox_id] = reason
        await self.store.set_state(sandbox_id, "killed", reason)
        self.telemetry.killed(reason)
        await afailpoint("api.kill.after_record", sandbox_id)
        with contextlib.suppress(errors.SandboxNotFoundError):
            await self.node.kill(sandbox_id)

    async def set_timeout(self, who: Principal, sandbox_id: str, timeout: int) -> SandboxRecord:
        rec = await self.get(who, sandbox_id)
        if rec.state not in ACTIVE_STATES:
            raise errors.SandboxStateError(f"cannot set the timeout of sandbox {sandbox_id} in state {rec.state}")
        quota, _ = await self.teams.quota(who.team)
        check_lifetime(quota.max_lifetime_s, who.team, rec.created_at, time.time() + timeout, rec.persistent)
        rec.ends_at = time.time() + timeout
        await self.store.set_ends_at(sandbox_id, rec.ends_at)
        return rec

    def _timeouts_stale(self, now: float) -> bool:
        """Whether the reaper must ask the store for expired sandboxes: a timeout it knows of is
        due, this process wrote a record since, or (for other replicas' writes) a while has passed."""
        return (
            now >= self._next_timeout
            or self.store.deadline_writes != self._deadline_writes_seen
            or time.monotonic() - self._timeouts_checked_at >= TIMEOUTS_RECHECK_S
        )

    async def _reap_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap(full=time.monotonic() - self._reconciled_at >= FULL_RECONCILE_S)
            except Exception:  # the reaper must outlive a bad tick (a database hiccup)
                log.exception("reaper tick failed")

    async def reap(self, full: bool = True) -> None:
        """Kill sandboxes past their timeout and reconcile ones that died on their own.

        Only the sandboxes the node reported dead are reconciled unless `full`
        (every active record: the safety net, and the default when called directly).
        """
        now = time.time()
        if full or self._timeouts_stale(now):
            seen, checked_at = self.store.deadline_writes, time.monotonic()
            expired, self._next_timeout = await self.store.expired(now)
            self._deadline_writes_seen, self._timeouts_checked_at = seen, checked_at
        else:
            expired = []
        for sid in expired:
            try:
                await lifecycle.on_timeout(self, sid)
            except errors.SandlotError as exc:
                log.error("timing out sandbox %s: %s", sid, exc)
        died = await self.node.exited()
        for sid, why in died.items():  # the node has forgotten them: keep its reason for the record
            self._gone.setdefault(sid, why)
        if full:
            self._reconciled_at = time.monotonic()
            for rec in await self.store.active():
                await self._reconcile(rec)
        else:
            for sid in died:
                found = await self.store.get_sandbox(sid)
                if found is not None:
                    await self._reconcile(found)
        # Idle clocks are kept to a tenth of the idle time (lifecycle.touch_interval): looking for
        # idle sandboxes more often than that would only query every persistent record for nothing.
        if full or time.monotonic() - self._idle_checked_at >= lifecycle.touch_interval(self):
            self._idle_checked_at = time.monotonic()
            await lifecycle.hibernate_idle(self)
        await self.teams.housekeeping()
