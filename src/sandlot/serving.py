"""uvicorn's server, woken once a second while idle (the API server's and a node daemon's).

uvicorn's own main loop wakes ten times a second to look for a stop signal:
about 0.3% of a core here for an idle process, more than 20 idle sandboxes'
share of the rest of the server. Here it wakes once a second (its Date header
changes once a second anyway), and a stop signal wakes it at once.

The server also tunes glibc's malloc as it starts (`tune_malloc`): the bytes it
relays (ports, files) pass in buffers of 256 KiB to 1 MiB, which glibc served
from fresh mmaps and gave back at once, so every buffer paid its pages' faults
and zeroing. perf on the port proxy's streamed download: 78% of the server's
CPU in the kernel, mostly page faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import platform
from types import FrameType
from typing import Any

import uvicorn

__all__ = ["QuietServer", "quiet_server", "tune_malloc"]

#: glibc's malloc serves blocks up to this size from its heap, where a freed one is reused (its default
#: starts at 128 KiB and moves up only as mmapped blocks are freed),
MMAP_THRESHOLD = 4 << 20
#: and keeps up to this much free memory at the heap's top instead of returning it at once.
TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # (mallopt's parameters, malloc.h)


def tune_malloc() -> bool:
    """Make glibc's malloc keep the relay's buffers for reuse (see the module's docstring); whether it did.
    An operator's own `MALLOC_*_THRESHOLD_` settings win; another libc is left as it is."""
    if platform.libc_ver()[0] != "glibc" or {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


#: How often the idle main loop wakes (uvicorn's: 0.1 s).
TICK_S = 1.0


class QuietServer(uvicorn.Server):
    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def run(self, sockets: Any = None) -> None:
        tune_malloc()
        super().run(sockets=sockets)

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0  # on_tick refreshes the Date header when counter % 10 == 0 (each of its seconds)
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)


def quiet_server(app: Any, *, log_level: str = "info", **config: Any) -> QuietServer:
    """A server for `app` (`config`: more of uvicorn.Config's arguments, e.g. host and port); `.run()` it.
    An app may name the HTTP protocol it is served with (`uvicorn_protocol`: the API's port fast path)."""
    config.setdefault("http", getattr(app, "uvicorn_protocol", "auto"))
    # No `Server: uvicorn` on every answer: it names software to an attacker, and the port proxy's
    # answers are the sandbox's server's, whose own Server header it passes on.
    config.setdefault("server_header", False)
    return QuietServer(uvicorn.Config(app, log_level=log_level, ws="websockets-sansio", **config))
