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
from sandlot.node.images import ImageStore
from tests.api.conftest import admin, api_server  # noqa: F401 - fixtures
from tests.api.harness import IMAGE_CACHE, Server

#: the first test that sets up `e2b_env` builds e2b-base on a clean machine (minutes, on top of its own work)
FIRST_TEST_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first = next((i for i in items if "e2b_env" in getattr(i, "fixturenames", ())), None)
    if first is not None:
        marker = first.get_closest_marker("timeout")
        own = float(marker.args[0]) if marker is not None and marker.args else 0.0
        first.add_marker(pytest.mark.timeout(max(own, FIRST_TEST_TIMEOUT_S)), append=False)


@pytest.fixture(scope="session")
def e2b_key(api_server: Server, admin: httpx.Client) -> str:  # noqa: F811
    r = admin.post("/keys", json={"team": "e2b-tests"})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


@pytest.fixture(scope="session")
def e2b_env(api_server: Server, e2b_key: str) -> Iterator[dict[str, str]]:  # noqa: F811
    if not api_server.fake:
        # E2B's `base` (e2b-base) is built once per image cache (minutes on a clean machine): here,
        # not inside the first test's create, whose request would time out first.
        ImageStore(IMAGE_CACHE).ensure("e2b-base")
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
