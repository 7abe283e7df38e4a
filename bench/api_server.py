"""The API server the suite measures: a subprocess on a free 127.0.0.1 port.

    python bench/api_server.py --port N --data-dir D

Real gVisor sandboxes from the cached busybox image; every sandbox is killed
when the server stops (SIGTERM), so a finished benchmark leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from lib import IMAGE_CACHE, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = free_port()
        self.log = data_dir.parent / f"{data_dir.name}.server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def start(self, timeout: float = 120) -> Server:
        cmd = [sys.executable, str(Path(__file__)), "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not become healthy:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--database-url", default=None, help="PostgreSQL (default: SQLite in the data dir)")
    args = parser.parse_args()

    from sandlot.api import create_app
    from sandlot.api.config import ApiConfig
    from sandlot.api.service import Quotas
    from sandlot.serving import quiet_server

    config = ApiConfig(
        data_dir=args.data_dir,
        database_url=args.database_url,
        images_dir=IMAGE_CACHE,
        default_template="busybox",
        quotas=Quotas(max_sandboxes=1000),
        kill_on_shutdown=True,
        dns_servers=[],  # the benchmark's sandboxes resolve no names
    )
    quiet_server(create_app(config), host="127.0.0.1", port=args.port, log_level="warning").run()


if __name__ == "__main__":
    main()
