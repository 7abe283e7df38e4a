"""CLI tests: the `sandlot` command as a subprocess against the live API test server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.api.conftest import admin, api_server  # noqa: F401 - fixtures
from tests.api.harness import ROOT, Server

#: how to start the command line: what the `sandlot` console script runs
SANDLOT = [sys.executable, "-m", "sandlot.cli"]


@dataclass
class Cli:
    """Runs `sandlot ...` with SANDLOT_API_URL / SANDLOT_API_KEY set, as a user would."""

    env: dict[str, str]
    admin_env: dict[str, str] = field(default_factory=dict)

    def __call__(
        self, *args: str, as_admin: bool = False, check: bool = False, timeout: float = 60, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        env = self.admin_env if as_admin else self.env
        res = subprocess.run(
            [*SANDLOT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw
        )
        if check:
            assert res.returncode == 0, f"sandlot {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        """The CLI running, with SIGINT as a terminal leaves it (a suite started in the background
        of a script hands SIGINT on ignored, and an ignored SIGINT never reaches Python)."""
        kw.setdefault("preexec_fn", _default_sigint)
        return subprocess.Popen([*SANDLOT, *args], env=self.env, cwd=ROOT, text=True, **kw)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _env(url: str, key: str) -> dict[str, str]:
    return {**os.environ, "SANDLOT_API_URL": url, "SANDLOT_API_KEY": key, "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture(scope="module")
def cli(api_server: Server, admin: httpx.Client) -> Iterator[Cli]:  # noqa: F811
    """The CLI as a fresh team of this module; its sandboxes are killed afterwards."""
    key = admin.post("/keys", json={"team": "cli-tests", "name": "cli"}).json()["key"]
    yield Cli(_env(api_server.url, key), _env(api_server.url, api_server.admin_key))
    with httpx.Client(base_url=api_server.url, headers={"X-API-Key": key}, timeout=60) as c:
        for s in c.get("/sandboxes").json()["sandboxes"]:
            c.delete(f"/sandboxes/{s['sandbox_id']}")


@pytest.fixture(scope="module")
def sandbox(cli: Cli) -> str:
    """One sandbox shared by the module's tests (made with `sandlot create`)."""
    return cli("create", "--timeout", "600", "--metadata", "suite=cli-shared", check=True).stdout.strip()
