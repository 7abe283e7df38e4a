"""A fleet on this machine, for tests and the bench: API replicas and node daemons as
`sandlot serve --no-local-node` and `sandlot node` subprocesses, each with its own data
directory, port and sandbox subnet (the image cache is shared, unless a node is given its own)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.api.harness import IMAGE_CACHE, ROOT, Subprocess, free_port

__all__ = ["NODE_TIMEOUT", "TOKEN", "Fleet", "create", "node_templates", "run", "states", "wait"]


TOKEN = "fleet-test-node-token"
NODE_TIMEOUT = 6  # seconds without a heartbeat before a node is unreachable (30 by default)


def wait(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if result := check():
                return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Proc(Subprocess):
    """A `sandlot` subprocess (replica or node daemon) with its log."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name, self.args, self.log = name, args, log
        self.proc = None

    def start(self, **env: str) -> Proc:
        """Start it (again), with `env` added to the environment (SANDLOT_FAILPOINTS=...)."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandlot.cli", *self.args],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return self

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class Fleet:
    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.database_url = database_url
        self.replicas: list[Proc] = []
        self.replica_urls: list[str] = []
        self.nodes: dict[str, Proc] = {}

    def add_replica(self, *extra: str) -> str:
        i = len(self.replicas)
        port = free_port()
        data = self.root / f"replica{i}"
        args = ["serve", "--port", str(port), "--data-dir", str(data), "--database-url", self.database_url,
                "--no-local-node", "--node-token", TOKEN, "--node-timeout", str(NODE_TIMEOUT),
                "--default-template", "busybox", "--log-level", "info", *extra]  # fmt: skip
        self.replicas.append(Proc(f"replica{i}", args, self.root / f"replica{i}.log").start())
        url = f"http://127.0.0.1:{port}"
        self.replica_urls.append(url)
        wait(f"replica{i} to answer", lambda: httpx.get(url + "/openapi.json", timeout=5).status_code == 200, 300)
        return url

    def add_node(self, name: str, api_url: str, subnet: str, *labels: str, images: Path = IMAGE_CACHE) -> Proc:
        """A node daemon; its templates are the shared cache's unless it gets `images` of its own."""
        port = free_port()
        args = ["node", "--api-url", api_url, "--token", TOKEN, "--name", name,
                "--data-dir", str(self.root / name), "--images-dir", str(images), "--port", str(port),
                "--subnet", subnet, "--warm-template", "busybox", "--no-dns", "--heartbeat", "1", "--kill-on-shutdown",
                "--log-level", "info"]  # fmt: skip
        for label in labels:
            args += ["--label", label]
        node = self.nodes[name] = Proc(name, args, self.root / f"{name}.log").start()
        return node

    @property
    def admin_key(self) -> str:
        return str(wait("the admin key", lambda: (self.root / "replica0" / "admin.key").read_text().strip()))

    def client(self, i: int) -> httpx.Client:
        return httpx.Client(base_url=self.replica_urls[i], headers={"X-API-Key": self.admin_key}, timeout=120)


def states(c: httpx.Client) -> dict[str, str]:
    return {n["name"]: n["state"] for n in c.get("/nodes").json()["nodes"]}


def node_templates(c: httpx.Client, name: str) -> set[str]:
    """The templates node `name` itself lists (asked on its own address, with the node token)."""
    address = next(n["address"] for n in c.get("/nodes").json()["nodes"] if n["name"] == name)
    r = httpx.get(f"{address}/v1/templates", headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text
    return {t["name"] for t in r.json()}


def create(c: httpx.Client, **body: Any) -> dict[str, Any]:
    r = c.post("/sandboxes", json={"template": "busybox", **body})
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def run(c: httpx.Client, sid: str, cmd: str) -> dict[str, Any]:
    """Run a command; its stdout and exit code, from the streamed NDJSON events."""
    r = c.post(f"/sandboxes/{sid}/commands", json={"cmd": cmd})
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    stdout = "".join(e["data"] for e in events if e["type"] == "stdout")
    return {"stdout": stdout, "exit_code": next(e["exit_code"] for e in events if e["type"] == "exit")}
