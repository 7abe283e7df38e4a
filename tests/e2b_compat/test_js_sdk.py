"""The E2B JavaScript SDK (npm `e2b`, pinned in tests/e2b_compat_js/package.json) against the
same server as the Python SDK's tests, run by Node.js.

tests/e2b_compat_js/parity.mjs drives the behaviours of issue 19 that the JS SDK exposes (the
key form, pause and lifecycle, listing, files, watches, commands, the default template); it
runs once per module, each check is reported here as its own test. scripts/e2b_sdks.sh (from setup.sh
--test) installs the packages from package-lock.json. `SANDLOT_E2B_JS_DIR` names another
directory with its own node_modules (scripts/e2b_newest.sh: the newest releases); the
script runs from there, since Node resolves an ES module's imports from where it lies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent.parent / "e2b_compat_js"
CHECKS = [
    "keycheck_release_accepts_the_e2b_form",
    "default_template",
    "pause_and_connect",
    "filesystem_pause",
    "timeout_pause_and_auto_resume",
    "listing",
    "files",
    "watch_with_entries_and_new_folders",
    "envs_stay_with_their_command",
    "killed_mid_command",
]
NODE_MIN = (20, 18)  # what the SDK's package.json asks for


JS_DIR = Path(os.environ.get("SANDLOT_E2B_JS_DIR") or HERE)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is missing: run scripts/setup.sh --test")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major, minor = (int(x) for x in version.lstrip("v").split(".")[:2])
    if (major, minor) < NODE_MIN:
        pytest.fail(f"the E2B JS SDK needs Node.js >= {NODE_MIN[0]}.{NODE_MIN[1]}, this host has {version}")
    if not (JS_DIR / "node_modules" / "e2b").is_dir():
        pytest.fail("the E2B JS SDK is not installed: run scripts/setup.sh --test (scripts/e2b_sdks.sh install)")
    return node


@pytest.fixture(scope="module")
def results(e2b_env: dict[str, str], e2b_key: str) -> dict[str, dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update(e2b_env, SANDLOT_FORM=e2b_key)
    node = _node()
    if JS_DIR != HERE:
        shutil.copy(HERE / "parity.mjs", JS_DIR / "parity.mjs")
    res = subprocess.run(
        [node, str(JS_DIR / "parity.mjs")], env=env, cwd=JS_DIR, capture_output=True, text=True, timeout=600
    )
    out = {}
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            out[item["check"]] = item
    if not out:
        pytest.fail(f"parity.mjs reported nothing (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return out


@pytest.mark.parametrize("check", CHECKS)
def test_js_sdk(results: dict[str, dict[str, object]], check: str) -> None:
    assert check in results, f"parity.mjs did not run {check}"
    assert results[check]["ok"], results[check].get("error")
