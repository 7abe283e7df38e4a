"""Fixtures shared by every test.

Integration tests drive a real `Node` (real runsc and crun, real mounts and
cgroups). The node is async and runs on an event loop in a background thread;
tests are plain functions that call `aio(coro)`. One node serves the session;
its data directory is fresh per run, while built images are cached in
`SANDLOT_TEST_IMAGE_CACHE` (default /var/cache/sandlot/store-v2) across runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

IMAGE_CACHE = Path(os.environ.get("SANDLOT_TEST_IMAGE_CACHE", "/var/cache/sandlot/store-v2"))


class LoopThread:
    """An event loop in a thread; `run(coro)` blocks until the coroutine is done."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="session")
def aio(loop: LoopThread) -> Any:
    return loop.run


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (mounts, cgroups, runsc)")


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sandlot-test-", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def node(loop: LoopThread, data_dir: Path) -> Iterator[Any]:
    _need_root()
    from sandlot.node import Node, NodeConfig

    n = Node(NodeConfig(data_dir=data_dir, images_dir=IMAGE_CACHE))
    loop.run(n.bundle(), timeout=300)
    yield n
    loop.run(n.close(), timeout=120)


@pytest.fixture(scope="session")
def busybox_image(node: Any) -> Any:
    return node.images.ensure("busybox")


@pytest.fixture(scope="session")
def debian_image(node: Any) -> Any:
    return node.images.ensure("debian")


@pytest.fixture(scope="module")
def internet() -> Iterator[Any]:
    """The network tests' private "internet" (tests/netlab.py), one per module."""
    from tests.netlab import Internet

    inet = Internet().start()
    yield inet
    inet.stop()


@pytest.fixture(params=["gvisor", "container"])
def runtime_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_sandbox(node: Any, aio: Any) -> Iterator[Any]:
    """Create sandboxes for a test; every one still alive is killed afterwards."""
    from sandlot.node import Limits, SandboxSpec

    made: list[Any] = []

    def make(image: str = "busybox", runtime: str = "gvisor", **kw: Any) -> Any:
        limits = kw.pop("limits", None) or Limits()
        sbx = aio(node.create(SandboxSpec(image=image, runtime=runtime, limits=limits, **kw)))
        made.append(sbx)
        return sbx

    yield make
    for sbx in made:
        try:
            aio(node.kill(sbx.id))
        except Exception:  # already gone (a test killed it, or it died)
            pass
