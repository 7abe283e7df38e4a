"""`sandlot serve` and `sandlot run`: the two commands that host a node themselves."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.harness import IMAGE_CACHE, ROOT, agent_available, free_port
from tests.cli.conftest import SANDLOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not agent_available(), reason="needs the real agent"),
]


class Serve:
    """`sandlot serve` in a subprocess of its own (so that SIGINT is Ctrl-C)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Serve:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        args = ["serve", "--port", str(port), "--data-dir", str(self.data_dir), "--images-dir", str(IMAGE_CACHE)]
        args += ["--default-template", "busybox", "--log-level", "warning"]
        log = open(self.data_dir.parent / "serve.log", "ab")
        self.proc = subprocess.Popen([*SANDLOT, *args], cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.data_dir.parent / "serve.log").read_text()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("sandlot serve did not become healthy")

    def interrupt(self) -> int:
        """Ctrl-C; the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(60)
        self.proc = None
        return status

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        key = (self.data_dir / "admin.key").read_text().strip()
        argv = [*SANDLOT, "--api-url", self.url, "--api-key", key, *args]
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture
def served() -> Iterator[Serve]:
    # /var/tmp as in tests/api: sandbox disks are loop-mounted files, which tmpfs /tmp may not take
    d = Path(tempfile.mkdtemp(prefix="sandlot-serve-", dir="/var/tmp"))
    server = Serve(d / "data")
    yield server
    if server.proc is not None:
        server.proc.kill()
        server.proc.wait(10)
    shutil.rmtree(d, ignore_errors=True)


def test_serve_stops_on_ctrl_c_and_keeps_the_sandboxes(served: Serve) -> None:
    served.start()
    created = served.cli("create", "--timeout", "120")
    sid = created.stdout.strip()
    assert sid.startswith("sb-"), created.stderr
    try:
        assert served.interrupt() == 0
        served.start()  # a new server adopts the sandbox the last one left running
        assert served.cli("exec", sid, "echo still here").stdout == "still here\n"
    finally:
        if served.proc is not None:
            served.cli("kill", sid)
    assert served.cli("ls").stderr == "no sandboxes\n"
    assert served.interrupt() == 0


def test_run_embeds_a_node(tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir()
    (data / "store-v2").symlink_to(IMAGE_CACHE)  # reuse the test image cache
    argv = [*SANDLOT, "run", "--image", "busybox", "--data-dir", str(data), "--", "sh", "-c", "echo hi; exit 4"]
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (res.returncode, res.stdout) == (4, "hi\n"), res.stderr
