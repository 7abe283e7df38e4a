"""E2B's JavaScript SDKs (`e2b`, `@e2b/code-interpreter`; versions pinned in package.json), unchanged,
drive Sandlot with only the environment `sandlot e2b-env` prints. Each *.test.mjs here runs under
Node's own test runner; its per-test report is the failure message.

`SANDLOT_E2B_JS_DIR` names another directory whose node_modules holds other releases
(scripts/e2b_newest.py: the newest ones); the scripts then run from there instead of the
pinned install (npm_cache.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sandlot.node.images import ImageStore
from tests.api.harness import IMAGE_CACHE
from tests.e2b_compat_js import npm_cache

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
NODE_MIN = (20, 18)  # what the SDKs' package.json asks for (Debian 12's own nodejs is 18)


def _check_node() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is missing: run scripts/setup.sh --test")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if tuple(int(x) for x in version.lstrip("v").split(".")[:2]) < NODE_MIN:
        pytest.fail(f"E2B's JS SDKs need Node.js >= {NODE_MIN[0]}.{NODE_MIN[1]}, this host has {version}")


def _node_test(name: str, env: dict[str, str], timeout: float) -> None:
    _check_node()
    other = os.environ.get("SANDLOT_E2B_JS_DIR")
    modules = Path(other) if other else npm_cache.ensure()
    # ESM resolves packages from the script's own directory upward: run a copy beside node_modules.
    script = modules / "tests" / name
    script.parent.mkdir(exist_ok=True)
    shutil.copy(HERE / name, script)
    proc = subprocess.run(
        ["node", "--test", "--test-reporter=spec", str(script)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert "# fail 0" in proc.stdout or "fail 0" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.timeout(600)
def test_sandboxes_commands_files_pty(e2b_env: dict[str, str]) -> None:
    _node_test("sandbox.test.mjs", e2b_env, 500)


@pytest.mark.timeout(900)
def test_parity(e2b_env: dict[str, str], e2b_key: str) -> None:
    """Issue 19's behaviours through the JS SDK: the key form, pause and the lifecycle, listing, file
    metadata, symlinks, watches, commands, the default template."""
    _node_test("parity.test.mjs", {**e2b_env, "SANDLOT_FORM": e2b_key}, 800)


@pytest.mark.timeout(1500)
def test_code_interpreter(e2b_env: dict[str, str]) -> None:
    ImageStore(IMAGE_CACHE).ensure("code-interpreter")  # built once per cache (minutes), not inside a create
    _node_test("code_interpreter.test.mjs", e2b_env, 600)
