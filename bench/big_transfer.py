"""A large file streamed into a sandbox and back through HTTP and the SDK: time and peak memory.

2 GB in a full run (256 MB in --quick), generated and consumed chunk by chunk
so that neither side ever holds it. Reported: the time of the upload and of
the download, the server's peak resident memory (VmHWM: its peak over its
whole life so far, so at least the figure of any phase before) and the
client's growth in peak resident memory. The baseline, in the same run: the
same bytes written to and read back from the host's disk (one file under
/var/tmp, no fsync, as the agent does).
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

__all__ = ["big_transfer_figures"]

CHUNK = 1 << 20


def _chunk(i: int) -> bytes:
    return i.to_bytes(8, "big") * (CHUNK // 8)


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _host(nbytes: int) -> tuple[float, float]:
    fd, name = tempfile.mkstemp(prefix="slb-big-", dir="/var/tmp")
    try:
        t0 = time.perf_counter()
        with os.fdopen(fd, "wb") as f:
            for i in range(nbytes // CHUNK):
                f.write(_chunk(i))
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        with open(name, "rb") as f:
            while f.read(CHUNK):
                pass
        return t_write, time.perf_counter() - t0
    finally:
        os.unlink(name)


async def big_transfer_figures(conn: dict[str, Any], server_pid: int, quick: bool) -> dict[str, Any]:
    from sandlot.sdk import AsyncSandbox

    mb = 256 if quick else 2048
    nbytes = mb << 20
    print(f"sandlot http: a {mb} MB file streamed in and out", flush=True)

    async def upload() -> AsyncIterator[bytes]:
        for i in range(nbytes // CHUNK):
            yield _chunk(i)

    client_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sbx = await AsyncSandbox.create(template="busybox", disk_mb=mb + 1024, **conn)
    try:
        t0 = time.perf_counter()
        await sbx.files.write("/root/big", upload())
        t_up = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = 0
        async for chunk in sbx.files.read_stream("/root/big"):
            got += len(chunk)
        t_down = time.perf_counter() - t0
        assert got == nbytes, f"read back {got} of {nbytes} bytes"
    finally:
        await sbx.kill()
        await sbx.close()
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    host_write, host_read = _host(nbytes)
    return {
        "mb": mb,
        "upload_ms": t_up * 1000,
        "download_ms": t_down * 1000,
        "server_peak_rss_mb": _vm_hwm_mb(server_pid),
        "client_rss_growth_mb": client_peak - client_before,
        "host_write_ms": host_write * 1000,
        "host_read_ms": host_read * 1000,
    }
