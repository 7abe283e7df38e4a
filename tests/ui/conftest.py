"""The dashboard's tests: the shared live API server, and headless Debian chromium driven by selenium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import admin, api_server, team  # noqa: F401 - fixtures
from tests.api.harness import Server

CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: the browser itself, not Debian's wrapper script around it
CHROMIUM = next((p for p in (Path("/usr/lib/chromium/chromium"), Path("/usr/bin/chromium")) if p.exists()), None)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless chromium (1440x900), closed after the test."""
    if not CHROMEDRIVER.exists() or CHROMIUM is None or shutil.which("chromedriver") is None:
        pytest.skip("the dashboard tests need Debian's chromium and chromium-driver (scripts/setup.sh --test)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,900"):
        opts.add_argument(arg)
    opts.add_argument("--disable-gpu")
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def ui_key(api_server: Server, admin: httpx.Client, request: pytest.FixtureRequest) -> Iterator[str]:  # noqa: F811
    """An admin key of a fresh team (the admin pages show; its sandboxes are only this test's)."""
    name = f"ui-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    r = admin.post("/keys", json={"team": name, "name": "dashboard test", "admin": True})
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    yield key
    with httpx.Client(base_url=api_server.url, headers={"X-API-Key": key}, timeout=60) as c:
        for sbx in c.get("/sandboxes").json().get("sandboxes", []):
            c.delete(f"/sandboxes/{sbx['sandbox_id']}")
