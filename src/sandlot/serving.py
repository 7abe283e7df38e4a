"""uvicorn's server, woken once a second while idle (the API server's and a node daemon's).

uvicorn's own main loop wakes ten times a second to look for a stop signal:
about 0.3% of a core here for an idle process, more than 20 idle sandboxes'
share of the rest of the server. Here it wakes once a second (its Date header
changes once a second anyway), and a stop signal wakes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType
from typing import Any

import uvicorn

__all__ = ["QuietServer", "quiet_server"]

#: How often the idle main loop wakes (uvicorn's: 0.1 s).
TICK_S = 1.0


class QuietServer(uvicorn.Server):
    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

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
    return QuietServer(uvicorn.Config(app, log_level=log_level, ws="websockets-sansio", **config))
