"""Admission of sandbox starts: a fair FIFO queue in front of a few start slots.

A start is mostly CPU (the runtime boots a kernel, the node mounts a disk); on
a small host a burst of starts all at once makes each one slow enough to time
out. So at most `slots` starts run at once; the others wait in the order they
came, and a waiter that gives up (its client went away) leaves the queue. When
`max_queued` starts already wait, or one has waited `max_wait` seconds, the
caller gets `ServerBusyError` at once, with how long to wait before retrying
(estimated from recent starts), rather than a slow timeout: nothing was done.

Background starts (warm pool refills) wait behind every foreground one and
are never refused.

Invariant: `_busy` counts granted slots; a slot is handed to the next waiter
in `_waiting` (then `_background`) directly on release, so no arrival can jump
the queue while someone waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator

from sandlot import errors

__all__ = ["Admission"]

#: The first estimate of a start's duration, until one has been measured.
FIRST_GUESS_S = 0.5


class Admission:
    def __init__(self, slots: int, max_queued: int, max_wait: float = 45.0) -> None:
        if slots < 1 or max_queued < 0:
            raise errors.InvalidArgumentError(f"bad admission sizes: {slots} slots, {max_queued} queued")
        self.slots = slots
        self.max_queued = max_queued
        self.max_wait = max_wait
        self._busy = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._background: deque[asyncio.Future[None]] = deque()
        #: moving average of how long a start holds its slot (seconds)
        self._start_s = FIRST_GUESS_S
        #: starts admitted so far, in order (for tests: the queue is FIFO)
        self.admitted = 0

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return self._busy

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained by a slot's worth (at least 1)."""
        return max(1, math.ceil((len(self._waiting) + 1) * self._start_s / self.slots))

    @contextlib.asynccontextmanager
    async def slot(self, *, background: bool = False) -> AsyncIterator[None]:
        """Hold one start slot for the body; waits its turn, or raises ServerBusyError."""
        await self._acquire(background)
        t0 = time.monotonic()
        try:
            yield
        finally:
            self._start_s += (time.monotonic() - t0 - self._start_s) * 0.2
            self._release()

    async def _acquire(self, background: bool) -> None:
        if self._busy < self.slots and not self._waiting and not self._background:
            self._take()
            return
        queue = self._background if background else self._waiting
        if not background and len(self._waiting) >= self.max_queued:
            raise self._busy_error(f"{len(self._waiting)} sandbox starts are already queued (the limit)")
        waiter = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            if background:
                await waiter
            else:
                await asyncio.wait_for(asyncio.shield(waiter), self.max_wait)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted just as we gave up: pass the slot on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise self._busy_error(f"a sandbox start waited {self.max_wait:.0f}s in the queue") from None
            raise

    def _take(self) -> None:
        self._busy += 1
        self.admitted += 1

    def _release(self) -> None:
        self._busy -= 1
        for queue in (self._waiting, self._background):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    self._take()
                    waiter.set_result(None)
                    return

    def _busy_error(self, why: str) -> errors.ServerBusyError:
        wait = self.retry_after()
        return errors.ServerBusyError(
            f"the server is busy starting sandboxes ({why}; {self._busy} starting now); retry in {wait}s",
            retry_after=wait,
        )
