"""The quiet uvicorn server: it serves, and a stop signal ends it at once, not at its next tick."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

# A server whose idle tick is an hour: only the signal's own wakeup can stop it within the test.
SERVER = """
import sys
from sandlot import serving
serving.TICK_S = 3600.0

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})

serving.quiet_server(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning").run()
"""


def test_a_stop_signal_ends_the_quiet_server_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                got = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        assert got.text == "hello" and "date" in got.headers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# What a relay does with the bytes it passes on: reads appended to a buffer, taken out a MiB at a time, framed.
RELAY = """
import resource, sys
from sandlot import serving
print(serving.tune_malloc())
piece, buf = b"x" * (256 << 10), bytearray()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(400):
    buf += piece
    while len(buf) >= 1 << 20:
        out = bytes(buf[: 1 << 20])
        del buf[: 1 << 20]
        framed = b"%x\\r\\n%s\\r\\n" % (len(out), out)
        del out, framed
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def test_the_servers_malloc_reuses_a_relays_buffers() -> None:
    """100 MB through 1 MiB buffers: with the server's tuning their pages are reused, not faulted in afresh
    (glibc's defaults fault in about two pages per page moved here); an operator's own setting wins."""
    tuned, faults = subprocess.run(
        [sys.executable, "-c", RELAY], capture_output=True, text=True, check=True
    ).stdout.split()
    pages_moved = (100 << 20) // 4096
    assert tuned == "True" and int(faults) < pages_moved // 10, faults
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(1 << 20)}
    out = subprocess.run([sys.executable, "-c", RELAY], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split()[0] == "False"
