"""The same server on PostgreSQL: a throwaway cluster on a free 127.0.0.1 port."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.crash import ok
from tests.api.harness import Server, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120)


@dataclass
class Cluster:
    """A throwaway PostgreSQL cluster; `stop()` and `start()` it to take the database away and back."""

    dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self, name: str) -> str:
        """The URL of a new, empty database in the cluster (a server of its own: its own admin key)."""
        _as_postgres(str(PG_BIN / "createdb"), "-h", str(self.dir), "-p", str(self.port), name)
        return self.url.rsplit("/", 1)[0] + "/" + name

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        db, log = str(self.dir / "db"), str(self.dir / "log")
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", db, "-o", opts, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "db"), "-m", mode, "-w", "stop")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not (PG_BIN / "initdb").exists() or os.geteuid() != 0:
        pytest.skip("needs root and the Debian package postgresql (15)")
    with new_cluster() as c:
        yield c


@contextlib.contextmanager
def new_cluster() -> Iterator[Cluster]:
    """A throwaway cluster, started; stopped and removed afterwards (needs root)."""
    d = Path(tempfile.mkdtemp(prefix="sandlot-pg-", dir="/var/tmp"))
    shutil.chown(d, "postgres")
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(d / "db"), "--auth=trust", "-U", "postgres", "--no-sync")
    c = Cluster(d, free_port())
    c.start()
    try:
        yield c
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # a failed test may have left it stopped
            c.stop("immediate")
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url(cluster: Cluster) -> str:
    return cluster.url


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


#: How long the database stays away: a failover or an upgrade, not a blink.
OUTAGE_S = 30


def test_database_outage_answers_503_and_recovers_by_itself(cluster: Cluster) -> None:
    url = cluster.new_database("outage")
    # Short: a sandbox's agent socket path under the data dir must fit in 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="sl-pgo-", dir="/var/tmp"))
    server = Server(base / "data", database_url=url).start()
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=60) as c:
            sid = ok(c.post("/sandboxes", json={"timeout": 3600}), 201)["sandbox_id"]
            # Its timeout passes while the database is away: the reaper must still kill it after.
            brief = ok(c.post("/sandboxes", json={"timeout": 10}), 201)["sandbox_id"]
            made = set(os.listdir(server.data_dir / "sandboxes"))
            cluster.stop()
            stopped = time.monotonic()
            try:
                seen = 0
                while time.monotonic() - stopped < OUTAGE_S:
                    for r in (c.get(f"/sandboxes/{sid}"), c.post("/sandboxes", json={}), c.get("/sandboxes")):
                        assert r.status_code == 503, r.text
                        body = r.json()
                        assert body["code"] == "database_unavailable", body
                        assert "database is unavailable" in body["message"] and "retry" in body["message"], body
                        seen += 1
                    time.sleep(1)
                assert seen >= 3
                # No request reached the node meanwhile: no sandbox was made without a record.
                assert set(os.listdir(server.data_dir / "sandboxes")) == made
            finally:
                cluster.start()
            # Back by itself, with no restart of the server.
            deadline = time.monotonic() + 30
            while c.get(f"/sandboxes/{sid}").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert c.get(f"/sandboxes/{sid}").json()["state"] == "running"
            r = c.post(f"/sandboxes/{sid}/commands", json={"cmd": "echo back"})
            assert r.status_code == 200 and '"data":"back\\n"' in r.text, r.text
            deadline = time.monotonic() + 30
            while c.get(f"/sandboxes/{brief}").json()["state"] != "killed" and time.monotonic() < deadline:
                time.sleep(0.5)
            info = c.get(f"/sandboxes/{brief}").json()
            assert (info["state"], info["exit_reason"]) == ("killed", "its timeout passed"), info
            assert server.proc is not None and server.proc.poll() is None  # the same process throughout
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
