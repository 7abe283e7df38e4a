"""Fixtures for API tests: a live server subprocess, HTTP clients with keys."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.harness import Server


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("API tests run a real node: they need root (mounts, cgroups, runsc)")


@pytest.fixture(scope="session")
def api_server() -> Iterator[Server]:
    need_root()
    d = Path(tempfile.mkdtemp(prefix="sandlot-api-", dir="/var/tmp"))
    server = Server(d / "data", ssh=True).start()
    yield server
    server.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def admin(api_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server.url, headers={"X-API-Key": api_server.admin_key}, timeout=60) as c:
        yield c


def new_team_client(api_server: Server, admin: httpx.Client, team: str) -> httpx.Client:
    r = admin.post("/keys", json={"team": team, "name": "test"})
    assert r.status_code == 201, r.text
    return httpx.Client(base_url=api_server.url, headers={"X-API-Key": r.json()["key"]}, timeout=60)


@pytest.fixture
def team(api_server: Server, admin: httpx.Client, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """A client of a fresh team; its sandboxes are killed after the test."""
    with new_team_client(api_server, admin, f"t-{request.node.name[:40]}".replace("[", "-").replace("]", "")) as c:
        yield c
        for sbx in c.get("/sandboxes").json().get("sandboxes", []):
            c.delete(f"/sandboxes/{sbx['sandbox_id']}")
