"""`pip install sandlot` alone (no `[server]`) makes a working client: SDK and CLI against a live server.

The wheel is built from this checkout and installed into a fresh venv, whose pip
fetches only the client's dependencies; then the SDK and the CLI in that venv
drive the test server, and a server command says how to install the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.harness import ROOT, Server

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

SERVER_ONLY = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "psycopg", "dnslib", "zstandard", "python-multipart",
               "asyncssh", "mcp"}  # fmt: skip
SDK_SCRIPT = """
from sandlot import Sandbox
with Sandbox.create(template="busybox", timeout=120) as sbx:
    sbx.files.write("/data/x.txt", "from the light client")
    print(sbx.commands.run("cat /data/x.txt").stdout)
    print(sbx.sandbox_id)
"""


def test_client_alone_installs_small_and_drives_a_server(api_server: Server, sdk_env: str, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("sandlot-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-3000:]
    listed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format=json"], capture_output=True, text=True, check=True
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"sandlot", "httpx", "pydantic", "click", "rich", "websockets"} <= installed
    assert not installed & SERVER_ONLY, f"the client pulled in server packages: {installed & SERVER_ONLY}"

    env = {**os.environ, "PYTHONPATH": ""}  # the venv's own sandlot, not this checkout's
    sdk = subprocess.run(
        [str(venv / "bin" / "python"), "-c", SDK_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert sdk.returncode == 0, sdk.stderr[-3000:]
    out, sandbox_id = sdk.stdout.split("\n", 1)
    assert out == "from the light client"

    cli = venv / "bin" / "sandlot"
    made = subprocess.run([str(cli), "create", "--template", "busybox"], env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    sid = made.stdout.strip()
    ran = subprocess.run([str(cli), "exec", sid, "--", "echo", "via", "cli"], env=env, capture_output=True, text=True)
    assert (ran.returncode, ran.stdout) == (0, "via cli\n"), ran.stderr
    ls = subprocess.run([str(cli), "ls", "--json"], env=env, capture_output=True, text=True)
    assert sid in [s["sandbox_id"] for s in json.loads(ls.stdout)]
    assert sandbox_id.strip() not in [s["sandbox_id"] for s in json.loads(ls.stdout)]  # killed by the with block
    assert subprocess.run([str(cli), "kill", sid], env=env, capture_output=True).returncode == 0

    serve = subprocess.run([str(cli), "serve"], env=env, capture_output=True, text=True)
    assert serve.returncode == 2
    assert "pip install 'sandlot[server]'" in serve.stderr
