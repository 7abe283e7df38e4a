"""Run a real API server for tests: a subprocess on a free 127.0.0.1 port with its own data dir.

    python -m tests.api.harness --port N --data-dir D [--fake] [--database-url URL] [--max-sandboxes N]

With `--fake` (used only when the Go agent's source is missing from this
checkout), sandboxes use `FakeRuntime`: the node, layers, store, API and SDK are
all real, but the "sandbox" is tests/api/fake_agent.py running on the host.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx

from sandlot.node.bundle import AGENT_SOURCE

IMAGE_CACHE = Path(os.environ.get("SANDLOT_TEST_IMAGE_CACHE", "/var/cache/sandlot/store-v2"))
#: The agent, built once per source version and copied into each server's data dir (a Go build each is minutes on a
#: loaded host); keyed by the sources' hash and locked by `ensure_bundle`, so checkouts can share it.
BUNDLE_CACHE = Path(os.environ.get("SANDLOT_TEST_BUNDLE_CACHE", "/var/tmp/sandlot-test-bundle-cache"))
ROOT = Path(__file__).resolve().parents[2]
FAKE_AGENT = Path(__file__).with_name("fake_agent.py")


def agent_available() -> bool:
    """Whether to use the real agent (set SANDLOT_TEST_FAKE_AGENT=1 to force the stand-in)."""
    return (AGENT_SOURCE / "go.mod").exists() and os.environ.get("SANDLOT_TEST_FAKE_AGENT") != "1"


def tar_of(files: dict[str, bytes]) -> bytes:
    """A tar of `files` (path -> contents): a build's context, for instance."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def free_port() -> int:
    """A port free on both loopbacks (a server listens on 127.0.0.1 and ::1)."""
    while True:
        with socket.socket() as s, socket.socket(socket.AF_INET6) as s6:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            try:
                s6.bind(("::1", port))
            except OSError:
                continue
            return port


def _fake_node(data_dir: Path) -> Any:
    from sandlot.node import Node, NodeConfig
    from sandlot.node.bundle import Bundle
    from sandlot.node.runtimes.base import Resources, Runtime

    class FakeRuntime(Runtime):
        name = "fake"
        binary = sys.executable

        def resources(self, memory_bytes: int, pids: int) -> Resources:
            return Resources(memory_bytes, pids)

        def adjust(self, config: dict[str, Any]) -> None:
            pass

        async def start(self, sandbox_id: str, bundle: Path, log: Path, *, connected: bool = False) -> int:
            sdir = bundle.parent
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                argv = [sys.executable, str(FAKE_AGENT), str(sdir / "run" / "agent.sock"), str(sdir / "rootfs")]
                pid = os.posix_spawn(
                    sys.executable,
                    argv,
                    {**os.environ, "PYTHONPATH": str(ROOT / "src")},
                    file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)],
                    setsid=True,
                )
            finally:
                os.close(fd)
            (bundle / "pid").write_text(str(pid))
            return pid

        def _pid(self, sandbox_id: str) -> int | None:
            with contextlib.suppress(OSError, ValueError):
                return int((data_dir / "sandboxes" / sandbox_id / "bundle" / "pid").read_text())
            return None

        async def destroy(self, sandbox_id: str) -> list[str]:
            pid = self._pid(sandbox_id)
            if pid and await self.alive(sandbox_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            return []

        async def alive(self, sandbox_id: str) -> bool:
            pid = self._pid(sandbox_id)
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return False
            return state != "Z"

        def host_pids(self, sandbox_id: str) -> list[int]:
            return []

    node = Node(NodeConfig(data_dir=data_dir, images_dir=IMAGE_CACHE, default_runtime="fake"))
    node._runtimes["fake"] = FakeRuntime(node.state_dir)
    (data_dir / "bundle").mkdir(parents=True, exist_ok=True)
    node._bundle = Bundle(data_dir / "bundle")
    return node


def _dump_tasks(signum: int, frame: object) -> None:
    import asyncio

    for task in asyncio.all_tasks(asyncio.get_running_loop()):
        print(f"task {task.get_name()}:", file=sys.stderr)
        coro: Any = task.get_coro()
        while coro is not None:  # down the chain of awaits, to where it waits
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                print(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}", file=sys.stderr)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    sys.stderr.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--fake", action="store_true")
    parser.add_argument("--max-sandboxes", type=int, default=100)
    parser.add_argument("--template", default="busybox")
    parser.add_argument("--hibernate-after", type=float, default=900.0)
    parser.add_argument("--max-lifetime", type=int, default=None)
    parser.add_argument("--images-dir", type=Path, default=IMAGE_CACHE)
    parser.add_argument("--disk-store-mb", type=int, default=None)
    parser.add_argument("--agent-timeout", type=float, default=None)
    parser.add_argument("--max-concurrent-starts", type=int, default=None)
    parser.add_argument("--max-queued-starts", type=int, default=256)
    parser.add_argument("--ssh-port", type=int, default=None)
    args = parser.parse_args()

    import logging

    # The node's own account of what it does (recovery above all) goes to the server's log.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("sandlot").setLevel(logging.INFO)
    # A server that does not come up says where it stands: every thread (SIGUSR1) and task (SIGUSR2).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    signal.signal(signal.SIGUSR2, _dump_tasks)

    from sandlot.api import DEFAULT_HOSTS, create_app, run_app
    from sandlot.api.config import ApiConfig
    from sandlot.api.service import Quotas

    config = ApiConfig(
        data_dir=args.data_dir,
        images_dir=args.images_dir,
        database_url=args.database_url,
        default_template=args.template,
        default_runtime="fake" if args.fake else "gvisor",
        quotas=Quotas(max_sandboxes=args.max_sandboxes, max_lifetime_s=args.max_lifetime),
        reap_interval=0.5,
        hibernate_after_s=args.hibernate_after,
        housekeeping_interval_s=0.5,  # checkpoint retention is swept as soon as it is due
        kill_on_shutdown=True,
        registries_only=True,  # generated requests (the fuzz test) must never reach beyond 127.0.0.1
        dns_servers=[],  # tests never ask a real resolver
        disk_store_bytes=args.disk_store_mb << 20 if args.disk_store_mb else None,
        **({"agent_timeout_s": args.agent_timeout} if args.agent_timeout else {}),
        max_concurrent_starts=args.max_concurrent_starts,
        max_queued_starts=args.max_queued_starts,
        ssh_port=args.ssh_port,
    )
    node = _fake_node(args.data_dir) if args.fake else None
    app = create_app(config, node=node)
    run_app(app, DEFAULT_HOSTS, args.port, log_level="warning")  # where `sandlot serve` listens


class Subprocess:
    """A server process of a test: `kill()` is SIGKILL, as a crash would be; `stop()` is SIGTERM."""

    proc: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self, wait: float = 120) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:  # it kills its sandboxes first: slow on a loaded host
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


class Server(Subprocess):
    """A server subprocess. `kill()` is SIGKILL (sandboxes survive); `stop()` kills them too."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        max_sandboxes: int = 100,
        extra: tuple[str, ...] = (),
        ssh: bool = False,
    ) -> None:
        self.data_dir = data_dir
        #: more arguments for the server (e.g. --hibernate-after 2)
        self.extra = extra
        self.database_url = database_url
        self.max_sandboxes = max_sandboxes
        self.fake = not agent_available()
        self.port = 0
        #: run the SSH gateway too (the shared api_server does; tests/ssh_gateway drives it)
        self.ssh = ssh
        #: its port, once started
        self.ssh_port = 0
        self.proc = None
        self.log = data_dir.parent / f"{data_dir.name}.server.log"
        #: where the log of the current start begins
        self.log_offset = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def start(self, timeout: float = 300, env: dict[str, str] | None = None) -> Server:
        """Start (again); `env` adds to the server's environment (e.g. SANDLOT_FAILPOINTS)."""
        if not self.fake:
            from sandlot.node.bundle import ensure_bundle

            built = ensure_bundle(BUNDLE_CACHE)
            target = self.data_dir / "bundle" / built.path.name
            if not target.exists():  # never over a restarted server's: its live sandboxes run that agent
                tmp = target.with_name(target.name + ".copying")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(built.path, tmp, symlinks=True)
                tmp.rename(target)
        self.port, self.ssh_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "tests.api.harness", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.ssh:
            cmd += ["--ssh-port", str(self.ssh_port)]
        cmd += ["--max-sandboxes", str(self.max_sandboxes), *self.extra]
        if self.fake:
            cmd.append("--fake")
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        with open(self.log, "ab") as log:
            self.log_offset = log.tell()
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=log, stderr=log, start_new_session=True, env={**os.environ, **(env or {})}
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(self.url + "/health", timeout=2)
                if health.status_code == 200:
                    return self
                if "not ready: starting" not in health.text and "preparing" not in health.text:
                    self.kill()
                    raise RuntimeError(f"the server cannot create sandboxes: {health.text}")
            time.sleep(0.2)
        if self.proc.poll() is None:  # where it hangs, in its log
            for sig in (signal.SIGUSR1, signal.SIGUSR2):
                self.proc.send_signal(sig)
                time.sleep(1)
        raise RuntimeError(f"the server did not become healthy:\n{self.log.read_text()[-20000:]}")


if __name__ == "__main__":
    main()
