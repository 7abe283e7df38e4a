"""Warm pools: sandboxes started ahead of time, handed out by `Node.create`.

Per pool key (everything of a spec that shapes the sandbox at boot: image,
runtime, limits, cwd, user, network, hostname) the pool keeps `size` started,
idle sandboxes. `take` hands one out at most once (it leaves the pool before
anyone sees it) and the pool refills in the background. A pooled sandbox has
run nothing but one warm-up `sh -c true` (WARM_UP), so a handed-out one has
nothing left from an earlier use, and its first command does not pay for what
runs the first time in a fresh sandbox (under TCG a microVM translates its
kernel's fork and exec paths then: ~300 ms of a first command, 60 ms after).
The requested environment is not part of the key: the node applies a
sandbox's env to every process it starts, so a pooled sandbox takes any env.

Invariant: `_idle[key]` holds only sandboxes no caller has seen; a sandbox
that died while idle is dropped at the next `take` (the node cleans it up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sandlot import errors
from sandlot.node.sandbox import Sandbox
from sandlot.node.spec import Limits, SandboxSpec

__all__ = ["PoolKey", "WarmPool", "pool_key"]

log = logging.getLogger("sandlot.node.pool")

#: What a pooled sandbox runs once it has started, before anyone can take it (its result does
#: not matter: an image without a shell still exercises the agent's process start).
WARM_UP = ["/bin/sh", "-c", "true"]


@dataclass(frozen=True)
class PoolKey:
    image: str
    runtime: str
    limits: Limits
    cwd: str | None
    user: str | None
    network: str
    hostname: str


def pool_key(spec: SandboxSpec) -> PoolKey:
    # Only whether the sandbox has an interface shapes it at boot: the node
    # applies the requested policy (allow/deny lists, limits) when it hands one out.
    network = "connected" if spec.network.connected else "none"
    return PoolKey(spec.image, spec.runtime, spec.limits, spec.cwd, spec.user, network, spec.hostname)


Starter = Callable[[SandboxSpec], Awaitable[Sandbox]]
Killer = Callable[[str], Awaitable[None]]


class WarmPool:
    def __init__(self, start: Starter, kill: Killer) -> None:
        self._start = start
        self._kill = kill
        self._sizes: dict[PoolKey, tuple[SandboxSpec, int]] = {}
        self._idle: dict[PoolKey, list[Sandbox]] = {}
        self._refills: dict[PoolKey, asyncio.Task[None]] = {}
        self.hits = 0
        self.misses = 0

    def sizes(self) -> dict[PoolKey, int]:
        return {k: n for k, (_, n) in self._sizes.items()}

    def idle(self, key: PoolKey) -> int:
        return sum(1 for s in self._idle.get(key, []) if not s.killed)

    def is_pooled(self, sandbox_id: str) -> bool:
        return any(s.id == sandbox_id for sbxs in self._idle.values() for s in sbxs)

    def set_size(self, spec: SandboxSpec, size: int) -> PoolKey:
        """Keep `size` idle sandboxes of this spec (0 empties the pool)."""
        if not 0 <= size <= 256:
            raise errors.InvalidArgumentError(f"pool size must be between 0 and 256, got {size}", field="size")
        key = pool_key(spec.validate())
        self._sizes[key] = (spec, size)
        self._refill(key)
        return key

    def take(self, spec: SandboxSpec) -> Sandbox | None:
        """A started sandbox for `spec` (its env applied), or None when the pool has none."""
        key = pool_key(spec)
        if key not in self._sizes:
            return None
        idle = self._idle.get(key, [])
        while idle:
            sbx = idle.pop(0)
            if sbx.killed:
                continue
            sbx.spec.env = dict(spec.env)
            sbx.created_at = time.time()
            sbx.pooled = False
            self.hits += 1
            self._refill(key)
            return sbx
        self.misses += 1
        self._refill(key)
        return None

    def _refill(self, key: PoolKey) -> None:
        task = self._refills.get(key)
        if task is None or task.done():
            self._refills[key] = asyncio.ensure_future(self._fill(key))

    async def _fill(self, key: PoolKey) -> None:
        failures = 0
        while True:
            spec, size = self._sizes.get(key, (None, 0))
            idle = self._idle.setdefault(key, [])
            idle[:] = [s for s in idle if not s.killed]
            if spec is None or len(idle) >= size:
                break
            try:
                sbx = await self._start(spec)
            except errors.SandlotError as exc:
                failures += 1
                log.error("warm pool for %s could not start a sandbox: %s", key.image, exc)
                if failures >= 3:
                    return
                await asyncio.sleep(1.0 * failures)
                continue
            sbx.pooled = True  # before the await: the API never takes it for a stray of its own
            with contextlib.suppress(errors.SandlotError):
                await sbx.run(WARM_UP, timeout=60)
            idle.append(sbx)
        # Shrunk below what is idle: kill the surplus.
        spec, size = self._sizes.get(key, (None, 0))
        idle = self._idle.get(key, [])
        while len(idle) > size:
            with contextlib.suppress(errors.SandlotError):
                await self._kill(idle.pop().id)

    async def close(self) -> None:
        """Empty every pool: refills finish the start in flight, then kill what is idle."""
        for key, (spec, _) in list(self._sizes.items()):
            self._sizes[key] = (spec, 0)
        for task in list(self._refills.values()):
            with contextlib.suppress(Exception):
                await task
        for idle in self._idle.values():
            while idle:
                with contextlib.suppress(errors.SandlotError):
                    await self._kill(idle.pop().id)
