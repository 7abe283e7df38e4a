"""The SSH gateway driven by Debian's OpenSSH client (ssh, scp, sftp, ssh-keyscan) on gVisor sandboxes.

The shared test server runs the gateway (`--ssh-port`); keys are registered with
`sandlot keys ssh add`, as a user would.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandlot.api.ssh import host_key
from tests.api.harness import ROOT, Server, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class Team:
    def __init__(self, server: Server, key: str, home: Path) -> None:
        self.server, self.key, self.home = server, key, home
        self.identity = home / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.identity)], check=True)

    def sandlot(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SANDLOT_API_URL": self.server.url, "SANDLOT_API_KEY": self.key}
        return subprocess.run(
            [sys.executable, "-m", "sandlot.cli", *args], env=env, input=stdin, capture_output=True, text=True, cwd=ROOT
        )

    def opts(self, port_flag: str = "-p", *, key: bool = True) -> list[str]:
        common = [
            *("-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={self.home / 'known_hosts'}"),
            *("-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", port_flag, str(self.server.ssh_port)),
        ]
        if not key:  # the API key as the password, typed by SSH_ASKPASS
            return [*common, "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]
        return [*common, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(self.identity)]

    def ssh(
        self, sandbox_id: str, *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["ssh", *self.opts(), f"{sandbox_id}@127.0.0.1", *args]
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, env=env)

    def create(self) -> str:
        r = httpx.post(f"{self.server.url}/sandboxes", json={"template": "busybox"}, headers={"X-API-Key": self.key})
        assert r.status_code == 201, r.text
        return str(r.json()["sandbox_id"])


def _team(server: Server, admin: httpx.Client, name: str, home: Path) -> Team:
    r = admin.post("/keys", json={"team": name})
    assert r.status_code == 201, r.text
    home.mkdir(parents=True, exist_ok=True)
    return Team(server, str(r.json()["key"]), home)


@pytest.fixture(scope="module")
def team(api_server: Server, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    if shutil.which("ssh") is None:
        pytest.fail("Debian's openssh-client is missing: scripts/setup.sh --test installs it")
    t = _team(api_server, admin, "ssh-tests", tmp_path_factory.mktemp("ssh-home"))
    added = t.sandlot("keys", "ssh", "add", str(t.identity) + ".pub")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("sshk-") and "logs in for team ssh-tests" in added.stderr
    yield t
    with httpx.Client(base_url=api_server.url, headers={"X-API-Key": t.key}) as c:
        for s in c.get("/sandboxes").json()["sandboxes"]:
            c.delete(f"/sandboxes/{s['sandbox_id']}")


@pytest.fixture(scope="module")
def sandbox(team: Team) -> str:
    return team.create()


def test_commands_pass_output_stdin_and_exit_status(team: Team, sandbox: str) -> None:
    r = team.ssh(sandbox, "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    r = team.ssh(sandbox, "wc -c", stdin="x" * 100000)
    assert r.returncode == 0 and r.stdout.strip() == "100000"
    r = team.ssh(sandbox, "kill -9 $$")
    assert r.returncode == 255 or r.returncode == 128 + 9, r  # a signal death, as OpenSSH reports it


def test_a_client_that_goes_away_hangs_up_on_its_command(team: Team, sandbox: str) -> None:
    client = subprocess.Popen(
        ["ssh", *team.opts(), f"{sandbox}@127.0.0.1", "sleep 777"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def sleeping() -> bool:
        return "sleep 777" in team.ssh(sandbox, "ps -o args").stdout

    try:
        for _ in range(100):
            if sleeping():
                break
            time.sleep(0.2)
        assert sleeping()
    finally:
        client.kill()
        client.wait(10)
    for _ in range(100):
        if not sleeping():
            break
        time.sleep(0.2)
    assert not sleeping()


def test_login_shell_has_a_pty_that_follows_resizes(team: Team, sandbox: str) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        ["ssh", "-tt", *team.opts(), f"{sandbox}@127.0.0.1"],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    seen = b""

    def until(token: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 30
        while token not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 65536)
        assert token in seen, seen[-500:]

    try:
        os.write(master, b"stty size; tty\n")
        until(b"30 100")
        until(b"/dev/pts/")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
        os.kill(proc.pid, signal.SIGWINCH)
        for _ in range(20):  # the window change travels ssh -> gateway -> agent: ask until it is there
            os.write(master, b"stty size\n")
            try:
                until(b"50 132")
                break
            except AssertionError:
                continue
        os.write(master, b"exit 5\n")
        assert proc.wait(30) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_scp_and_sftp_copy_files_both_ways(team: Team, sandbox: str, tmp_path: Path) -> None:
    blob = os.urandom(3 << 20)
    (tmp_path / "big.bin").write_bytes(blob)
    (tmp_path / "small.txt").write_text("hello scp\n")
    scp = ["scp", "-q", *team.opts("-P")]
    up = subprocess.run([*scp, str(tmp_path / "big.bin"), str(tmp_path / "small.txt"), f"{sandbox}@127.0.0.1:/data/"])
    assert up.returncode == 0
    assert team.ssh(sandbox, "md5sum /data/big.bin").stdout.split()[0] == hashlib.md5(blob).hexdigest()
    down = subprocess.run([*scp, f"{sandbox}@127.0.0.1:/data/big.bin", str(tmp_path / "back.bin")])
    assert down.returncode == 0 and (tmp_path / "back.bin").read_bytes() == blob

    batch = "\n".join(
        [
            "cd /data",
            "ls -l",
            "mkdir sub",
            f"put {tmp_path / 'small.txt'} sub/a.txt",
            "rename sub/a.txt sub/b.txt",
            f"get sub/b.txt {tmp_path / 'got.txt'}",
            "rm sub/b.txt",
            "rmdir sub",
            "pwd",
        ]
    )
    r = subprocess.run(
        ["sftp", *team.opts("-P"), "-b", "-", f"{sandbox}@127.0.0.1"], input=batch, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "small.txt" in r.stdout and "Remote working directory: /data" in r.stdout
    assert (tmp_path / "got.txt").read_text() == "hello scp\n"
    assert team.ssh(sandbox, "ls /data").stdout.split() == ["big.bin", "small.txt"]
    r = subprocess.run(
        ["sftp", *team.opts("-P"), "-b", "-", f"{sandbox}@127.0.0.1"], input=b"get /no/such", capture_output=True
    )
    assert r.returncode != 0 and b'File "/no/such" not found' in r.stderr


def test_local_forward_reaches_a_port_inside_the_sandbox(team: Team, sandbox: str) -> None:
    assert (
        team.ssh(sandbox, "mkdir -p /srv && echo '<h1>hi</h1>' > /srv/index.html && httpd -p 8000 -h /srv").returncode
        == 0
    )
    local = free_port()
    fwd = subprocess.Popen(
        ["ssh", *team.opts(), "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local}:localhost:8000",
         f"{sandbox}@127.0.0.1"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        body = ""
        for _ in range(100):
            try:
                body = httpx.get(f"http://127.0.0.1:{local}/index.html", timeout=5).text
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert body == "<h1>hi</h1>\n"
    finally:
        fwd.terminate()
        fwd.wait(10)
    # only the sandbox's own ports: anything else is refused, and says why
    other = free_port()
    bad = subprocess.Popen(
        ["ssh", "-o", "LogLevel=INFO", *team.opts(), "-N", "-L", f"127.0.0.1:{other}:10.0.0.1:80",
         f"{sandbox}@127.0.0.1"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(100):  # once ssh listens, a connection through it is refused by the gateway
            try:
                with socket.create_connection(("127.0.0.1", other), timeout=5) as conn:
                    conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    with contextlib.suppress(ConnectionResetError):
                        assert conn.recv(100) == b""  # closed (or reset): nothing answered
                break
            except ConnectionRefusedError:
                time.sleep(0.2)
    finally:
        bad.kill()  # ssh may linger on SIGTERM while a refused channel closes; its stderr is all we need
        _, err = bad.communicate(timeout=30)
    assert "only ports of the sandbox itself can be forwarded" in err


def test_a_team_reaches_only_its_own_sandboxes(
    api_server: Server,
    admin: httpx.Client,
    team: Team,
    sandbox: str,
    tmp_path: Path,
) -> None:
    other = _team(api_server, admin, "ssh-other", tmp_path / "other")
    assert other.sandlot("keys", "ssh", "add", str(other.identity) + ".pub").returncode == 0
    r = other.ssh(sandbox, "true")
    assert r.returncode == 255 and "Permission denied" in r.stderr
    mine = other.create()
    assert other.ssh(mine, "echo mine").stdout == "mine\n"
    assert team.ssh(mine, "true").returncode == 255
    # the same key registered twice is a clear conflict; a bad key file a clear error
    again = other.sandlot("keys", "ssh", "add", str(team.identity) + ".pub")
    assert again.returncode == 2 and "registered already" in again.stderr
    (tmp_path / "bad.pub").write_text("not a key")
    bad = other.sandlot("keys", "ssh", "add", str(tmp_path / "bad.pub"))
    assert bad.returncode == 2 and "not an OpenSSH public key" in bad.stderr
    # removed: the key logs in no more
    key_id = next(k for k in other.sandlot("keys", "ssh", "list", "--json").stdout.split('"') if k.startswith("sshk-"))
    assert other.sandlot("keys", "ssh", "rm", key_id).returncode == 0
    assert other.ssh(mine, "true").returncode == 255


def test_api_key_as_password_and_a_persistent_host_key(
    api_server: Server, team: Team, sandbox: str, tmp_path: Path
) -> None:
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{team.key}'\n")
    askpass.chmod(0o700)
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    cmd = ["ssh", *team.opts(key=False), f"{sandbox}@127.0.0.1", "echo via-password"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout == "via-password\n", r.stderr
    askpass.write_text("#!/bin/sh\necho sl_wrong\n")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 255 and "Permission denied" in r.stderr

    scan = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(api_server.ssh_port), "127.0.0.1"], capture_output=True, text=True
    )
    served = scan.stdout.split()[1:3]
    kept = api_server.data_dir / "ssh_host_ed25519_key"
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    assert host_key(api_server.data_dir).export_public_key().decode().split()[:2] == served
