"""API keys in the form E2B's SDKs accept (`e2b_` + hex), and Sandlot's clients with both forms.

Every other test in this package already sends the E2B form (it is what `sandlot e2b-env`
prints) through the pinned, newest PyPI release. Here: the newest PyPI release that checks a
key's form on the client before sending it (2.45.1, installed beside the pinned SDK by
scripts/e2b_sdks.sh) takes the same key unchanged, and refuses the `sl_` form, as its check says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from sandlot.apikeys import e2b_form
from sandlot.sdk import Sandbox as SandlotSandbox
from tests.api.harness import ROOT, Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYCHECK = ROOT / ".e2b-sdks" / "py-keycheck"

KEYCHECK_PROGRAM = """
import json, os
from importlib.metadata import version
from e2b import Sandbox
from e2b.api import validate_api_key
from e2b.exceptions import AuthenticationException

out = {"version": version("e2b")}
try:
    validate_api_key(os.environ["SANDLOT_FORM"])
    out["sandlot_form"] = "accepted"
except AuthenticationException as exc:
    out["sandlot_form"] = str(exc)
validate_api_key(os.environ["E2B_API_KEY"])  # raises if the E2B form did not pass
sbx = Sandbox.create(timeout=120, request_timeout=600)  # the whole path: the SDK checks the key, then sends it
out["echo"] = sbx.commands.run("echo checked").stdout
sbx.kill()
print(json.dumps(out))
"""


def test_the_release_with_the_client_side_check_takes_the_e2b_form(e2b_env: dict[str, str], e2b_key: str) -> None:
    if not (KEYCHECK / "e2b").is_dir():
        pytest.fail("the E2B key-check SDK is missing: run scripts/setup.sh --test (scripts/e2b_sdks.sh install)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update(e2b_env, PYTHONPATH=str(KEYCHECK), SANDLOT_FORM=e2b_key)
    res = subprocess.run([sys.executable, "-c", KEYCHECK_PROGRAM], env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["version"] == "2.45.1"
    assert "Invalid API key format" in out["sandlot_form"]  # why the E2B form exists
    assert out["echo"] == "checked\n"


def test_sandlot_clients_take_either_form(api_server: Server, e2b_key: str) -> None:
    e2b = e2b_form(e2b_key)
    for key in (e2b_key, e2b, e2b.upper().replace("E2B_", "e2b_")):
        r = httpx.get(f"{api_server.url}/sandboxes", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        r = httpx.get(f"{api_server.url}/sandboxes", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
    SandlotSandbox.list(api_url=api_server.url, api_key=e2b)  # the SDK sends it as it is
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2B_", "SANDLOT_"))}
    cli = [sys.executable, "-m", "sandlot.cli", "--api-url", api_server.url, "--api-key", e2b, "ls", "--json"]
    res = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    # A revoked or unknown key is refused in either form.
    wrong = e2b_form("sl_" + "a" * 52)
    assert httpx.get(f"{api_server.url}/sandboxes", headers={"X-API-Key": wrong}).status_code == 401


def test_keys_are_handed_out_in_both_forms(api_server: Server, admin: httpx.Client) -> None:
    r = admin.post("/keys", json={"team": "e2b-form"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["e2b_key"] == e2b_form(body["key"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2B_", "SANDLOT_"))}
    cli = [sys.executable, "-m", "sandlot.cli", "--api-url", api_server.url, "--api-key", api_server.admin_key]
    res = subprocess.run(
        [*cli, "keys", "create", "--team", "e2b-form", "--e2b"], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    key = res.stdout.strip()
    assert key.startswith("e2b_")
    assert httpx.get(f"{api_server.url}/sandboxes", headers={"X-API-Key": key}).status_code == 200
