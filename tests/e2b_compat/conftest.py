"""E2B SDK tests: the real `e2b` and `e2b-code-interpreter` packages against a real server.

The SDKs read their settings from the environment when each call builds its
connection config, so a module-wide environment from `sandlot.api.e2b.env_exports`
(what `sandlot e2b-env` prints) is all they are given.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandlot.api.e2b import env_exports
from tests.api.conftest import admin, api_server  # noqa: F401 - fixtures
from tests.api.harness import Server


@pytest.fixture(scope="session")
def e2b_key(api_server: Server, admin: httpx.Client) -> str:  # noqa: F811
    r = admin.post("/keys", json={"team": "e2b-tests"})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


@pytest.fixture(scope="session")
def e2b_env(api_server: Server, e2b_key: str) -> Iterator[dict[str, str]]:  # noqa: F811
    env = env_exports(api_server.url, e2b_key)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("E2B_DEBUG", raising=False)
        mp.delenv("E2B_DOMAIN", raising=False)
        yield env
    with httpx.Client(base_url=api_server.url, headers={"X-API-Key": e2b_key}) as c:
        for s in c.get("/sandboxes").json()["sandboxes"]:
            c.delete(f"/sandboxes/{s['sandbox_id']}")
