"""What the blocking SDK (`sandlot.sdk.sync`, generated) runs on: one event loop thread.

Every blocking call runs its async twin to completion on a private loop in a
daemon thread (`_Portal`); `to_sync` turns what the async call returned into
its blocking twin (an `AsyncSandbox` into a `Sandbox`, lists of them
elementwise), through the one table `SYNC_TWINS` that the generated module fills.

Callbacks (`on_stdout`, `on_data`, `on_event`) run on the loop thread, so a
callback must not make blocking SDK calls (it gets a clear RuntimeError).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["SYNC_TWINS", "iterate", "on_loop", "run_sync", "to_sync"]

T = TypeVar("T")

#: async SDK class -> its blocking twin (a class whose constructor takes the async object)
SYNC_TWINS: dict[type, Callable[[Any], Any]] = {}


class _Portal:
    """One daemon thread running an event loop for every sync object of this process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="sandlot-sdk", daemon=True).start()
                cls._loop = loop
            return cls._loop

    @classmethod
    def call(cls, coro: Coroutine[Any, Any, T]) -> T:
        loop = cls.loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise RuntimeError("a sync Sandlot call was made from an SDK callback; use AsyncSandbox there")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of the async SDK on the SDK's loop thread and return its result."""
    return _Portal.call(coro)


async def _now(fn: Callable[[], T]) -> T:
    return fn()


def on_loop(fn: Callable[[], T]) -> T:
    """Run a plain (non-async) method of an async SDK object on the loop thread that owns it."""
    return _Portal.call(_now(fn))


def to_sync(value: Any) -> Any:
    """The blocking twin of a value the async SDK returned (lists elementwise; other values as they are)."""
    twin = SYNC_TWINS.get(type(value))
    if twin is not None:
        return twin(value)
    if isinstance(value, list):
        return [to_sync(v) for v in value]
    return value


def iterate(agen: AsyncIterator[T]) -> Iterator[T]:
    """An async iterator of the SDK, consumed item by item on the loop thread."""
    try:
        while True:
            try:
                yield _Portal.call(_anext(agen))
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            _Portal.call(aclose())


async def _anext(agen: AsyncIterator[T]) -> T:
    return await anext(agen)
