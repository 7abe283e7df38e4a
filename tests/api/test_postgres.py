"""The same server on PostgreSQL: a throwaway cluster on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.harness import Server, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0:
        pytest.skip("needs root and the Debian package postgresql (15)")
    d = Path(tempfile.mkdtemp(prefix="sandlot-pg-", dir="/var/tmp"))
    shutil.chown(d, "postgres")
    port = free_port()
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(d / "db"), "--auth=trust", "-U", "postgres", "--no-sync")
    opts = f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off"
    _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(d / "db"), "-o", opts, "-l", str(d / "log"), "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(d / "db"), "-m", "immediate", "stop")
        shutil.rmtree(d, ignore_errors=True)


def test_postgres_store_survives_restart(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    server = Server(tmp_path_factory.mktemp("pg") / "data", database_url=postgres_url).start()
    try:
        assert not (server.data_dir / "sandlot.db").exists()
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            made = [c.post("/sandboxes", json={"metadata": {"db": "pg", "i": str(i)}}).json() for i in range(3)]
            ids = [m["sandbox_id"] for m in made]
            page = c.get("/sandboxes", params={"metadata": "db=pg", "limit": 2}).json()
            assert [s["sandbox_id"] for s in page["sandboxes"]] == ids[:2]
            rest = c.get("/sandboxes", params={"metadata": "db=pg", "cursor": page["next_cursor"]}).json()
            assert [s["sandbox_id"] for s in rest["sandboxes"]] == ids[2:]
            c.delete(f"/sandboxes/{ids[0]}")
        server.kill()
        server.start()
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            assert c.get(f"/sandboxes/{ids[0]}").json()["state"] == "killed"
            assert c.get(f"/sandboxes/{ids[1]}").json()["state"] == "running"
            r = c.post(f"/sandboxes/{ids[1]}/commands", json={"cmd": "echo pg"})
            assert r.status_code == 200 and '"exit_code":0' in r.text
    finally:
        server.stop()
