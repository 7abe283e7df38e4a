"""`eval "$(sandlot e2b-env)"` then unchanged E2B code: the whole switch a user makes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sandlot.apikeys import e2b_form
from tests.api.harness import ROOT, Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

E2B_PROGRAM = """
from e2b import Sandbox
sbx = Sandbox.create()
print(sbx.commands.run("echo hello from $(uname -s)").stdout.strip())
sbx.kill()
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2B_", "SANDLOT_"))}
    return {**env, **extra}


def test_eval_e2b_env_then_unchanged_e2b_code(api_server: Server, e2b_key: str) -> None:
    env = _clean_env(SANDLOT_API_URL=api_server.url, SANDLOT_API_KEY=e2b_key)
    script = f'eval "$({sys.executable} -m sandlot.cli e2b-env)" && exec {sys.executable} -c "$PROGRAM"'
    res = subprocess.run(
        ["bash", "-c", script],
        env={**env, "PROGRAM": E2B_PROGRAM},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello from Linux\n"


def test_e2b_env_prints_exports_and_checks_the_key(api_server: Server, e2b_key: str) -> None:
    run = [sys.executable, "-m", "sandlot.cli", "--api-url", api_server.url]
    ok = subprocess.run([*run, "--api-key", e2b_key, "e2b-env"], env=_clean_env(), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert f"export E2B_API_URL={api_server.url}/e2b\n" in ok.stdout
    assert f"export E2B_API_KEY={e2b_form(e2b_key)}\n" in ok.stdout  # the form E2B's SDKs accept
    domain = subprocess.run(
        [*run, "--api-key", e2b_key, "e2b-env", "--domain", "sandlot.example.com", "--public-url", "https://api.x"],
        env=_clean_env(),
        capture_output=True,
        text=True,
    )
    assert "export E2B_DOMAIN=sandlot.example.com\n" in domain.stdout and "E2B_SANDBOX_URL" not in domain.stdout
    assert "export E2B_API_URL=https://api.x/e2b\n" in domain.stdout
    bad = subprocess.run([*run, "--api-key", "sl_wrong", "e2b-env"], env=_clean_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "API key is not valid" in bad.stderr
