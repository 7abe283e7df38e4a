"""The quiet uvicorn server: it serves, and a stop signal ends it at once, not at its next tick."""

from __future__ import annotations

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
