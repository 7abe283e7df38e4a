"""A private "internet" for network tests: a namespace the tests make, on addresses of their own.

`Internet` creates a network namespace joined to the host by a veth pair
(host side 198.18.N.1/24; inside 198.18.N.2 and 198.18.N.3, from the
benchmarking range, which no policy blocks by default; N from the test
process's pid, so two test runs at once do not share a route) and runs, inside
it, `lab_server.py`: HTTP on port 80 that answers with the address it was
reached on, and DNS on 198.18.N.2:53 that knows a few `.test` names. Nothing
here sends a packet anywhere but this namespace and 127.0.0.0/8.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Internet"]

SERVER = Path(__file__).with_name("lab_server.py")


class Internet:
    def __init__(self) -> None:
        net = f"198.18.{os.getpid() % 250 + 1}"
        self.subnet = f"{net}.0/24"
        self.gateway, self.web, self.other = f"{net}.1", f"{net}.2", f"{net}.3"
        self.dns = self.web
        #: DNS names the lab's server answers (`set_name` changes one)
        self.names = {"allowed.test": self.web, "denied.test": self.other, "moving.test": self.web}
        self.names_file = Path(f"/run/sltest-inet-{os.getpid()}-names.json")
        tag = f"{os.getpid() % 100000}"
        self.netns = f"sltest-inet-{tag}"
        self.host_if = f"sltinet{tag}"[:15]
        self.proc: subprocess.Popen[bytes] | None = None

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def start(self) -> Internet:
        self.stop()
        self._ip("netns", "add", self.netns)
        self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        self._ip("addr", "add", f"{self.gateway}/24", "dev", self.host_if)
        self._ip("link", "set", self.host_if, "up")
        for addr in (self.web, self.other):
            self._ip("-n", self.netns, "addr", "add", f"{addr}/24", "dev", "eth0")
        self._ip("-n", self.netns, "link", "set", "eth0", "up")
        self._ip("-n", self.netns, "link", "set", "lo", "up")
        self._ip("-n", self.netns, "route", "add", "default", "via", self.gateway)
        self.names_file.write_text(json.dumps(self.names))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, str(SERVER), self.dns,
             str(self.names_file)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == b"ready", line
        return self

    def set_name(self, name: str, address: str) -> None:
        """From now on the lab's DNS answers `address` for `name`."""
        self.names[name] = address
        self.names_file.write_text(json.dumps(self.names))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        self.names_file.unlink(missing_ok=True)
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.host_if], capture_output=True)


def host_http_server() -> tuple[socket.socket, int]:
    """A listening TCP socket on the host's 127.0.0.1 (a "node service" sandboxes must not reach)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, s.getsockname()[1]


def wait_until(pred: object, timeout: float = 10.0) -> bool:
    assert callable(pred)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())
