"""A burst of creates beyond the server's queue: the excess gets 503 with Retry-After at once;
and the reaper records a sandbox that died on its own without anyone asking about it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandlot import errors
from sandlot.sdk import AsyncSandbox
from tests.api.conftest import need_root
from tests.api.harness import Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_server() -> Iterator[Server]:
    """A server that starts one sandbox at a time and lets one more wait."""
    need_root()
    d = Path(tempfile.mkdtemp(prefix="sandlot-api-adm-", dir="/var/tmp"))
    server = Server(d / "data", extra=("--max-concurrent-starts", "1", "--max-queued-starts", "1")).start()
    yield server
    server.stop()
    shutil.rmtree(d, ignore_errors=True)


def test_a_full_queue_answers_503_with_retry_after(small_server: Server) -> None:
    headers = {"X-API-Key": small_server.admin_key}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=small_server.url, headers=headers, timeout=120) as c:
            got = await asyncio.gather(*(c.post("/sandboxes", json={}) for _ in range(5)))
            for r in got:
                if r.status_code == 201:
                    assert (await c.delete(f"/sandboxes/{r.json()['sandbox_id']}")).status_code == 204
            return list(got)

    got = asyncio.run(burst())
    statuses = sorted(r.status_code for r in got)
    assert set(statuses) == {201, 503} and statuses.count(201) >= 2, statuses
    for r in got:
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1
            body = r.json()
            assert body["code"] == "server_busy" and "busy" in body["message"] and "retry in" in body["message"]


def test_the_sdk_raises_server_busy_with_the_wait(small_server: Server) -> None:
    conn = {"api_url": small_server.url, "api_key": small_server.admin_key}

    async def burst() -> list[AsyncSandbox | BaseException]:
        got = await asyncio.gather(*(AsyncSandbox.create(**conn) for _ in range(5)), return_exceptions=True)
        for sbx in got:
            if isinstance(sbx, AsyncSandbox):
                await sbx.kill()
                await sbx.close()
        return got

    got = asyncio.run(burst())
    busy = [x for x in got if isinstance(x, errors.ServerBusyError)]
    assert busy and all(isinstance(x, (AsyncSandbox, errors.ServerBusyError)) for x in got), got
    assert all(x.retry_after >= 1 for x in busy)


def test_the_reaper_records_a_death_nobody_asked_about(small_server: Server) -> None:
    """The node reports the death (NodeClient.exited); the record says killed and why, with no read of it."""
    with httpx.Client(base_url=small_server.url, headers={"X-API-Key": small_server.admin_key}, timeout=120) as c:
        sid = c.post("/sandboxes", json={}).json()["sandbox_id"]
        os.kill(int((small_server.data_dir / "sandboxes" / sid / "bundle" / "pid").read_text()), signal.SIGKILL)
        db = sqlite3.connect(f"file:{small_server.data_dir / 'sandlot.db'}?mode=ro", uri=True)
        try:
            deadline = time.monotonic() + 30  # the full reconcile of every record is 60 s apart
            row: tuple[str, str] | None = None
            while time.monotonic() < deadline:
                row = db.execute("SELECT state, exit_reason FROM sandboxes WHERE sandbox_id = ?", (sid,)).fetchone()
                if row and row[0] == "killed":
                    break
                time.sleep(0.2)
        finally:
            db.close()
        assert row == (
            "killed",
            "its agent (the sandbox's init) exited or was killed, and every process in it ended",
        ), row
