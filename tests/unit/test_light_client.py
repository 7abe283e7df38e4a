"""The client (SDK + CLI client commands) never imports the server's packages.

Each check runs in a fresh interpreter where importing any server module fails,
as it would after `pip install sandlot` without the `server` extra.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SERVER_MODULES = [
    "fastapi", "starlette", "uvicorn", "sqlalchemy", "psycopg", "dnslib", "zstandard", "multipart",
    "asyncssh", "mcp", "sandlot.api", "sandlot.node", "sandlot.interpreter",
]  # fmt: skip

BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, importlib.machinery, json, sys
    BLOCKED = {SERVER_MODULES!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: a client-only install)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    """
)


def _run(body: str) -> subprocess.CompletedProcess[str]:
    code = BLOCKER + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_sdk_and_client_commands_import_nothing_of_the_server() -> None:
    proc = _run(
        """
        import sandlot
        from sandlot import Sandbox, AsyncSandbox, Templates
        from sandlot.sdk import Volumes, CommandHandle
        from sandlot.cli import main
        for args in (["--help"], ["e2b-env", "--help"], ["ls", "--help"], ["keys", "--help"], ["shell", "--help"]):
            assert main(args) == 0, args
        loaded = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
        print(json.dumps(loaded))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_server_commands_say_how_to_install_the_server() -> None:
    proc = _run(
        """
        from sandlot.cli import main
        print(main(["serve", "--port", "1"]), main(["run", "--", "true"]), main(["mcp"]))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "2", "2"]
    assert "`sandlot serve` needs the server part of Sandlot" in proc.stderr
    assert "pip install 'sandlot[server]'" in proc.stderr
    assert "`sandlot run` needs the server part" in proc.stderr
    assert "pip install 'sandlot[mcp]'" in proc.stderr
