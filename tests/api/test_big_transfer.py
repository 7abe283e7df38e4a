"""A 2 GB file in and out of a sandbox through HTTP and the SDK, the server held to 512 MB.

The server runs in a memory cgroup of the test's own (cgroup v1, limit 512 MB);
its sandboxes leave it for their own cgroups as the runtime starts them. The
file never exists whole anywhere but in the sandbox: the upload is generated
chunk by chunk, the download consumed as it comes (the first few hundred MB
slowly, so that the agent is ahead of its reader and only the read window,
fs.read's flow control, stops it from filling the server). The server must
survive, its peak resident memory stay far below the file, and the bytes come
back as they went.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.api.harness import Server, agent_available

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

SIZE = 2 << 30
CHUNK = 1 << 20
LIMIT = 512 << 20
MEMCG = Path("/sys/fs/cgroup/memory")


@pytest.fixture()
def held_server() -> Iterator[tuple[Server, Path]]:
    if not agent_available():
        pytest.skip("needs the real agent")
    if not (MEMCG / "memory.limit_in_bytes").exists():
        pytest.skip("needs cgroup v1's memory controller")
    d = Path(tempfile.mkdtemp(prefix="sandlot-big-", dir="/var/tmp"))
    server = Server(d / "data").start()
    assert server.proc is not None
    cg = MEMCG / f"sandlot-test-big-{os.getpid()}"
    cg.mkdir()
    try:
        (cg / "memory.limit_in_bytes").write_text(str(LIMIT))
        (cg / "cgroup.procs").write_text(str(server.proc.pid))
        yield server, cg
    finally:
        if server.proc is not None and server.proc.poll() is not None:
            server.start()  # it died (killed at its limit): a restart adopts its sandboxes, the stop kills them
        server.stop()
        for _ in range(50):  # its processes gone, the cgroup can go
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        shutil.rmtree(d, ignore_errors=True)


def _chunk(i: int) -> bytes:
    return i.to_bytes(8, "big") * (CHUNK // 8)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_two_gigabytes_stream_in_and_out_under_a_512_mb_server(held_server: tuple[Server, Path]) -> None:
    server, cg = held_server
    assert server.proc is not None
    from sandlot.sdk import AsyncSandbox

    sent = hashlib.md5()

    async def upload() -> AsyncIterator[bytes]:
        for i in range(SIZE // CHUNK):
            c = _chunk(i)
            sent.update(c)
            yield c

    async def run() -> tuple[float, float, str]:
        sbx = await AsyncSandbox.create(
            template="busybox", disk_mb=3072, api_url=server.url, api_key=server.admin_key, request_timeout=600
        )
        try:
            t0 = time.monotonic()
            entry = await sbx.files.write("/root/big", upload())
            t_up = time.monotonic() - t0
            assert entry.size == SIZE
            got = hashlib.md5()
            n = 0
            t0 = time.monotonic()
            async for chunk in sbx.files.read_stream("/root/big"):
                got.update(chunk)
                n += len(chunk)
                if n < (256 << 20):
                    await asyncio.sleep(0.002)  # a slow reader at first: the agent gets ahead of it
            t_down = time.monotonic() - t0
            assert n == SIZE
            return t_up, t_down, got.hexdigest()
        finally:
            await sbx.kill()
            await sbx.close()

    client_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t_up, t_down, digest = asyncio.run(run())
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert digest == sent.hexdigest(), "the bytes came back changed"
    assert server.proc.poll() is None, "the server died (its memory limit?)"
    failcnt = int((cg / "memory.failcnt").read_text())
    peak = _peak_rss_mb(server.proc.pid)
    print(f"2 GB up {t_up:.1f} s, down {t_down:.1f} s; server peak RSS {peak:.0f} MB (limit hits {failcnt}); "
          f"client peak RSS {client_peak:.0f} MB (was {client_before:.0f})")  # fmt: skip
    assert peak < 400, f"the server's peak RSS was {peak:.0f} MB"
    assert client_peak - client_before < 200, f"the client grew from {client_before:.0f} to {client_peak:.0f} MB"
