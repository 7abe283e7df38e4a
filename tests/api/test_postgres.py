"""The same server on PostgreSQL: a throwaway cluster on a free 127.0.0.1 port."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.api.harness import PG_BIN, Server, postgres_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if not PG_BIN.joinpath("initdb").exists() or os.geteuid() != 0:
        pytest.skip("needs root and the Debian package postgresql (15)")
    with postgres_cluster() as url:
        yield url


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
