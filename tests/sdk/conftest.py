"""SDK tests run against the same live server as the API tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import admin, api_server, new_team_client  # noqa: F401 - fixtures
from tests.api.harness import Server


@pytest.fixture
def sdk_env(api_server: Server, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:  # noqa: F811
    """SANDLOT_API_URL / SANDLOT_API_KEY of a fresh team, as a user would set them."""
    r = admin.post("/keys", json={"team": "sdk-tests"})
    key = r.json()["key"]
    monkeypatch.setenv("SANDLOT_API_URL", api_server.url)
    monkeypatch.setenv("SANDLOT_API_KEY", key)
    yield key
    with httpx.Client(base_url=api_server.url, headers={"X-API-Key": key}) as c:
        for s in c.get("/sandboxes").json()["sandboxes"]:
            c.delete(f"/sandboxes/{s['sandbox_id']}")
