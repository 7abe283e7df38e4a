"""Crash a test server at chosen steps: failpoints armed at its start, requests brought to them, SIGKILL.

`Crashable.start(points)` starts the server with `SANDLOT_FAILPOINTS` set (each
point `hang` unless told otherwise, see sandlot/failpoints.py); `step(name, fn)`
runs a request in a thread and returns once the server reports the failpoint
reached (with its context, usually a sandbox id), so several operations can
stand at different steps at once; `crash()` SIGKILLs the server and says which
sandbox ids its data directory mentioned at that moment, for the check that
nothing of them is left after the restart (tests/leftovers.py).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx

from tests.api.harness import Server
from tests.leftovers import sandbox_ids_in


class Crashable:
    def __init__(self, server: Server) -> None:
        self.server = server
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="crash-step")
        self._pending: list[Future[Any]] = []

    def start(self, points: dict[str, str] | list[str] | None = None) -> Crashable:
        armed = points if isinstance(points, dict) else {p: "hang" for p in points or []}
        env = {"SANDLOT_FAILPOINTS": ",".join(f"{k}={v}" for k, v in armed.items())} if armed else None
        self.server.start(env=env)
        return self

    def _log(self) -> str:
        with open(self.server.log, "rb") as f:
            f.seek(self.server.log_offset)
            return f.read().decode(errors="replace")

    def reached(self, name: str, timeout: float = 120) -> str:
        """Wait until the server reports failpoint `name` reached; returns its context."""
        pattern = re.compile(rf"sandlot failpoint {re.escape(name)} reached \(([^)]*)\)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = pattern.search(self._log())
            if m:
                return m.group(1)
            for fut in self._pending:
                if fut.done() and fut.exception() is not None:
                    raise AssertionError(f"a step failed before reaching {name}: {fut.exception()!r}")
            proc = self.server.proc
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the server exited before reaching {name}:\n{self._log()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"failpoint {name} was not reached in {timeout}s:\n{self._log()[-3000:]}")

    def step(self, name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> str:
        """Run `fn(*args, **kw)` (a request) in the background until it stands at failpoint `name`."""
        self._pending.append(self._pool.submit(fn, *args, **kw))
        return self.reached(name)

    def crash(self) -> set[str]:
        """SIGKILL the server (unless a `kill` failpoint did); the sandbox ids its data dir mentions."""
        proc = self.server.proc
        if proc is not None:
            proc.kill()
            proc.wait(30)
        self.server.proc = None
        for fut in self._pending:  # every request in flight dies with the server
            fut.exception(timeout=60)
        self._pending.clear()
        return sandbox_ids_in(self.server.data_dir)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@contextmanager
def admin_client(server: Server, timeout: float = 120) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=timeout) as c:
        yield c


def request(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request on a client of its own (for steps run in threads); reads the whole body."""
    with admin_client(server, timeout=600) as c:
        return c.request(method, path, **kw)


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:2000]}"
    return r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else None


def run(c: httpx.Client, sandbox_id: str, cmd: str, timeout: float | None = None) -> tuple[int, str]:
    """Run a shell command to its end: (exit code, stdout)."""
    body: dict[str, Any] = {"cmd": cmd}
    if timeout is not None:
        body["timeout"] = timeout
    r = c.post(f"/sandboxes/{sandbox_id}/commands", json=body)
    assert r.status_code == 200, f"command in {sandbox_id}: {r.status_code} {r.text[:2000]}"
    events = [json.loads(line) for line in r.text.splitlines() if line]
    out = "".join(e.get("data", "") for e in events if e.get("type") == "stdout")
    end = [e for e in events if e.get("type") == "exit"]
    code = end[-1].get("exit_code") if end else None
    return (code if isinstance(code, int) else -1), out
