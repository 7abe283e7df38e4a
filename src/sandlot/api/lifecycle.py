"""What time does to sandboxes: timeouts (kill or pause), lifetime limits, idle hibernation.

- An ephemeral sandbox past `ends_at` is killed, or with `on_timeout="pause"`
  paused (with its memory where the runtime can save it) and kept, or with
  `on_timeout="hibernate"` hibernated without its memory (processes stopped,
  filesystem kept); resuming it gives it a fresh timeout. With `auto_resume`
  the next request to it resumes it (`SandboxService.for_request`).
- A persistent sandbox has no timeout. After `hibernate_after_s` without a
  request it hibernates (compute and memory released, filesystem kept); the
  next request wakes it (`SandboxService.wake_if_hibernated`). Its idle clock
  is in the store (`active_at`), so a restart and every API replica see the
  same one: a request notes the time in memory, and the reaper writes the
  clocks noted since its last tick in one transaction on each tick (about a
  second; a write per tick, not per request). Each replica's reaper decides
  from the stored clocks, its own just written: a request through any replica
  counts within a tick.
- A team's maximum lifetime bounds how far a timeout may reach from creation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sandlot import errors
from sandlot.api.store import SandboxRecord

if TYPE_CHECKING:
    from sandlot.api.service import SandboxService

__all__ = [
    "check_lifetime",
    "extend_after_timeout_pause",
    "hibernate_idle",
    "on_timeout",
    "resume",
    "touch",
    "touch_interval",
    "wake",
]

log = logging.getLogger("sandlot.api")

#: The timeout a sandbox paused at its timeout gets when it is resumed.
RESUME_TIMEOUT_S = 300


def check_lifetime(limit: int, team: str, created_at: float, ends_at: float, persistent: bool) -> None:
    """Refuse a timeout that reaches past the team's max lifetime (`limit` seconds from creation; 0: none)."""
    if not limit or persistent:
        return
    start = created_at or time.time()
    if ends_at - start > limit:
        raise errors.InvalidArgumentError(
            f"timeout too long: team {team!r} may keep a sandbox at most {limit} s from its creation "
            f"(this one would live {ends_at - start:.0f} s); use a shorter timeout or a persistent sandbox",
            field="timeout",
        )


async def on_timeout(svc: SandboxService, sandbox_id: str) -> None:
    rec = await svc.store.get_sandbox(sandbox_id)
    if rec is None:
        return
    if rec.on_timeout not in ("pause", "hibernate"):
        await svc._kill(sandbox_id, "its timeout passed")
        return
    if rec.state != "running":
        return
    if rec.on_timeout == "hibernate":
        await svc.node.hibernate(sandbox_id, memory=False)
        await svc.store.set_state(sandbox_id, "hibernated", "hibernated at its timeout")
        return
    status = await svc.node.status(sandbox_id)
    try:
        await svc.node.pause(sandbox_id, memory=status is not None and status.saves_memory)
    except (errors.InternalError, errors.SandboxStateError) as exc:  # it could not be saved: a freeze stops it
        log.warning("pausing %s at its timeout without its memory: %s", sandbox_id, exc)
        await svc.node.pause(sandbox_id)
    await svc.store.set_state(sandbox_id, "paused", "paused at its timeout")


async def extend_after_timeout_pause(svc: SandboxService, rec: SandboxRecord) -> None:
    now = time.time()
    if rec.ends_at <= now:
        rec.ends_at = now + RESUME_TIMEOUT_S
        await svc.store.set_ends_at(rec.sandbox_id, rec.ends_at)


def touch_interval(svc: SandboxService) -> float:
    """How stale a stored idle clock may get (and how often idle sandboxes are looked for): a tenth
    of the idle time, at most a minute."""
    return min(60.0, svc.hibernate_after_s / 10)


async def touch(svc: SandboxService, rec: SandboxRecord) -> None:
    """The sandbox serves a request now (its idle clock restarts; stored on the reaper's next tick)."""
    if rec.persistent:
        svc._clocks[rec.sandbox_id] = time.time()


async def store_clocks(svc: SandboxService) -> None:
    """Write the idle clocks noted since the last call (one transaction); kept for the next on failure."""
    taken, svc._clocks = svc._clocks, {}
    if not taken:
        return
    try:
        await svc.store.touch_many(taken)
    except BaseException:
        for sid, at in taken.items():
            svc._clocks[sid] = max(at, svc._clocks.get(sid, 0.0))
        raise


async def hibernate_idle(svc: SandboxService) -> None:
    await store_clocks(svc)
    now = time.time()
    for rec in await svc.store.active(persistent=True):
        if rec.state != "running":
            continue
        # The stored clock: requests through every replica (this one's just written), and before a restart.
        if now - (rec.active_at or rec.created_at) < svc.hibernate_after_s:
            continue
        try:
            await svc.node.hibernate(rec.sandbox_id)
        except errors.SandlotError as exc:
            log.error("hibernating idle sandbox %s: %s", rec.sandbox_id, exc)
            continue
        await svc.store.set_state(rec.sandbox_id, "hibernated")


async def wake(svc: SandboxService, rec: SandboxRecord) -> None:
    """Wake a hibernated sandbox for a request (or a resume)."""
    await _bring_back(svc, rec, svc.node.wake)


async def resume(svc: SandboxService, rec: SandboxRecord) -> None:
    """Resume a paused sandbox for a request (`auto_resume`)."""
    await _bring_back(svc, rec, svc.node.resume)


async def _bring_back(svc: SandboxService, rec: SandboxRecord, act: Callable[[str], Awaitable[None]]) -> None:
    # The new timeout first: the reaper must never see it running past its old one (it would
    # pause it again at once).
    await extend_after_timeout_pause(svc, rec)
    try:
        await act(rec.sandbox_id)
    except errors.SandboxStateError:  # a concurrent request brought it back first
        status = await svc.node.status(rec.sandbox_id)
        if status is None or status.state != "running":
            raise
    await svc.store.set_state(rec.sandbox_id, "running")
    rec.state = "running"
