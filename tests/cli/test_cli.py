"""`sandlot` end to end: the CLI as a subprocess against a live server and real sandboxes."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.api.harness import agent_available
from tests.cli.conftest import SANDLOT, Cli

pytestmark = pytest.mark.integration
real_agent = pytest.mark.skipif(not agent_available(), reason="needs the real agent (pty, tar)")


def test_help_needs_no_server() -> None:
    res = subprocess.run([*SANDLOT, "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0
    for name in ("serve", "create", "ls", "exec", "shell", "cp", "kill", "logs", "keys", "run"):
        assert f"\n  {name} " in res.stdout


def test_create_ls_kill(cli: Cli) -> None:
    created = cli("create", "--timeout", "120", "-m", "suite=lifecycle", "-m", "who=[me]", "--json", check=True)
    info = json.loads(created.stdout)
    sid = info["sandbox_id"]
    assert sid.startswith("sb-") and info["metadata"] == {"suite": "lifecycle", "who": "[me]"}

    table = cli("ls", "--metadata", "suite=lifecycle", check=True).stdout
    header, row = table.splitlines()
    assert header.split()[:4] == ["ID", "TEMPLATE", "RUNTIME", "STATE"]
    assert row.split()[:4] == [sid, "busybox", "gvisor", "running"]
    assert "who=[me]" in row  # labels are data, not rich markup
    listed = json.loads(cli("ls", "--json", "-m", "suite=lifecycle", check=True).stdout)
    assert [s["sandbox_id"] for s in listed] == [sid]

    assert cli("kill", sid, check=True).stdout.split() == [sid]
    assert cli("kill", sid, check=True).stdout.split() == [sid]  # idempotent
    assert sid not in cli("ls", check=True).stdout
    killed = json.loads(cli("ls", "--state", "killed", "-m", "suite=lifecycle", "--json", check=True).stdout)
    assert [(s["sandbox_id"], s["state"]) for s in killed] == [(sid, "killed")]
    res = cli("exec", sid, "true")
    assert (res.returncode, res.stderr) == (2, f"sandlot: sandbox {sid} is killed (killed by request)\n")


def test_pause_and_resume(cli: Cli, sandbox: str) -> None:
    assert cli("pause", sandbox, check=True).stdout.split() == [sandbox]
    assert json.loads(cli("ls", "--state", "paused", "--json", check=True).stdout)[0]["sandbox_id"] == sandbox
    res = cli("exec", sandbox, "true")
    assert res.returncode == 2 and "paused" in res.stderr
    res = cli("pause", sandbox)
    assert (res.returncode, res.stderr) == (2, f"sandlot: cannot pause sandbox {sandbox} in state paused\n")
    assert cli("resume", sandbox, check=True).stdout.split() == [sandbox]
    assert cli("exec", sandbox, "echo thawed", check=True).stdout == "thawed\n"


def test_exec_output_and_exit_codes(cli: Cli, sandbox: str) -> None:
    res = cli(
        "exec",
        sandbox,
        "-e",
        "GREETING=hi",
        "--cwd",
        "/tmp",
        "--",
        "sh",
        "-c",
        'echo "$GREETING $PWD"; echo oops >&2; exit 3',
    )
    assert (res.returncode, res.stdout, res.stderr) == (3, "hi /tmp\n", "oops\n")
    assert cli("exec", sandbox, "kill -9 $$").returncode == 128 + 9
    assert cli("exec", sandbox, "kill -TERM $$").returncode == 128 + 15
    assert cli("exec", sandbox, "-i", "--", "tr", "a-z", "A-Z", input="piped in\n", check=True).stdout == "PIPED IN\n"
    assert cli("exec", sandbox, "cat", input="ignored\n", check=True).stdout == ""  # stdin closed without -i
    res = cli("exec", sandbox, "--timeout", "1", "sleep 30")
    assert res.returncode == 128 + 9 and "timed out" in res.stderr


def test_exec_streams_as_produced(cli: Cli, sandbox: str) -> None:
    with cli.popen("exec", sandbox, "echo first; sleep 3; echo second", stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        t0 = time.monotonic()
        assert proc.stdout.readline() == "first\n"
        assert time.monotonic() - t0 < 2.5, "the first line waited for the command to end"
        assert proc.stdout.readline() == "second\n"
        assert proc.wait(30) == 0


def test_exec_ctrl_c_or_a_closed_pipe_kill_the_command(cli: Cli, sandbox: str) -> None:
    with cli.popen("exec", sandbox, "echo started; sleep 60", stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "started\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130

    # a reader that goes away (`| head -1`) ends us quietly, and the command with us
    with cli.popen("exec", sandbox, "yes", stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == "y\n"
        proc.stdout.close()
        assert proc.wait(30) == 128 + signal.SIGPIPE
        assert proc.stderr.read() == ""

    procs = json.loads(cli("logs", sandbox, "--json", check=True).stdout)
    for cmd in ("echo started; sleep 60", "yes"):
        mine = [p for p in procs if p["cmd"] == cmd or p["argv"] == [cmd]]
        assert len(mine) == 1 and not mine[0]["running"] and mine[0]["exit"]["signal"] == 9, procs


@real_agent
def test_cp_files_and_directories(cli: Cli, sandbox: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o755)

    cli("cp", str(script), f"{sandbox}:/new/dir/", check=True)  # a trailing slash: a directory, made as needed
    assert cli("exec", sandbox, "/new/dir/run.sh", check=True).stdout == "ran\n"  # the mode came along
    cli("exec", sandbox, "mkdir -p /up", check=True)
    cli("cp", str(script), f"{sandbox}:/up", check=True)  # an existing directory: lands inside it
    assert cli("exec", sandbox, "/up/run.sh", check=True).stdout == "ran\n"
    cli("cp", str(src), f"{sandbox}:/up/tree", check=True)  # a new name: the copy takes it
    cli("cp", str(src), f"{sandbox}:/up", check=True)  # an existing directory: src/ inside it
    listing = cli("exec", sandbox, "cd /up && find . | sort", check=True).stdout.split()
    assert listing == [
        ".", "./run.sh", "./src", "./src/a.txt", "./src/sub", "./src/sub/b.bin",
        "./tree", "./tree/a.txt", "./tree/sub", "./tree/sub/b.bin",
    ]  # fmt: skip

    out = tmp_path / "out"
    out.mkdir()
    cli("cp", f"{sandbox}:/up/src/a.txt", str(out / "copy.txt"), check=True)
    assert (out / "copy.txt").read_text() == "alpha\n"
    cli("cp", f"{sandbox}:/up/tree", str(out), check=True)  # into an existing local directory
    assert (out / "tree" / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    cli("cp", f"{sandbox}:/up/tree", str(out / "again"), check=True)
    assert sorted(p.name for p in (out / "again").iterdir()) == ["a.txt", "sub"]
    assert cli("cp", f"{sandbox}:/up/src/a.txt", "-", check=True).stdout == "alpha\n"
    assert not list(out.glob("*.sandlot-part"))

    res = cli("cp", f"{sandbox}:/no/such/file", str(out))
    assert res.returncode == 2 and res.stderr.startswith("sandlot: ") and "Traceback" not in res.stderr
    res = cli("cp", str(tmp_path / "missing"), f"{sandbox}:/tmp/")
    assert res.returncode == 2 and res.stderr == f"sandlot: No such file or directory: {tmp_path / 'missing'}\n"
    res = cli("cp", str(script), str(out))
    assert res.returncode == 2 and "SANDBOX_ID:/path" in res.stderr


def test_logs_of_a_background_process(cli: Cli, sandbox: str) -> None:
    # It prints "two" only once told to (a file appears), so "so far" never races a slow machine.
    script = "echo one; echo err >&2; while [ ! -e /tmp/logs-go ]; do sleep 0.1; done; echo two"
    pid = cli("exec", "-d", sandbox, script, check=True).stdout.strip()
    assert pid.isdigit()
    procs = cli("logs", sandbox, check=True).stdout
    assert any(line.split()[:2] == [pid, "running"] for line in procs.splitlines())
    so_far = cli("logs", sandbox, pid, check=True)  # what it printed so far, without waiting for the end
    assert (so_far.stdout, so_far.stderr) == ("one\n", "err\n")
    cli("exec", sandbox, "touch /tmp/logs-go", check=True)
    followed = cli("logs", sandbox, pid, "--follow", check=True)
    assert (followed.stdout, followed.stderr) == ("one\ntwo\n", "err\n")
    assert cli("logs", sandbox, pid, check=True).stdout == "one\ntwo\n"  # after its exit, still there
    res = cli("logs", sandbox, "99999")
    assert (res.returncode, res.stderr) == (2, f"sandlot: process 99999 not found in sandbox {sandbox}\n")


def test_keys(cli: Cli) -> None:
    key = cli("keys", "create", "--team", "cli-keys", "--name", "ci", as_admin=True, check=True).stdout.strip()
    assert key.startswith("sl_")
    keys = json.loads(cli("keys", "list", "--json", as_admin=True, check=True).stdout)
    mine = [k for k in keys if k["team"] == "cli-keys"]
    assert len(mine) == 1 and mine[0]["name"] == "ci" and not mine[0]["revoked"]
    assert any(
        line.split()[:2] == [mine[0]["key_id"], "cli-keys"]
        for line in cli("keys", "list", as_admin=True).stdout.splitlines()
    )

    as_new = {**cli.env, "SANDLOT_API_KEY": key}
    assert subprocess.run([*SANDLOT, "ls", "--json"], env=as_new, capture_output=True, text=True).stdout == "[]\n"
    res = cli("keys", "list")  # a team key may not manage keys
    assert (res.returncode, res.stderr) == (2, "sandlot: only an admin API key may manage keys\n")

    assert cli("keys", "revoke", mine[0]["key_id"], as_admin=True, check=True).stdout.strip() == mine[0]["key_id"]
    res = subprocess.run([*SANDLOT, "ls"], env=as_new, capture_output=True, text=True)
    assert (res.returncode, res.stderr) == (2, "sandlot: this API key is not valid (unknown or revoked)\n")
    res = subprocess.run([*SANDLOT, "--api-key", key, "ls"], env=cli.env, capture_output=True, text=True)
    assert res.returncode == 2 and "not valid" in res.stderr  # --api-key wins over $SANDLOT_API_KEY


def test_teams_set_quota_and_show(cli: Cli) -> None:
    out = cli("teams", "set-quota", "cli-tests", "--max-sandboxes", "7", "--checkpoint-retention", "0", "--json",
              as_admin=True, check=True).stdout  # fmt: skip
    info = json.loads(out)
    assert info["quota"]["max_sandboxes"] == 7 and info["quota"]["checkpoint_retention_s"] == 0
    assert sorted(info["overrides"]) == ["checkpoint_retention_s", "max_sandboxes"]
    table = cli("teams", "show", "cli-tests", check=True).stdout  # a team's own key may look
    assert "cli-tests" in table and " 7 " in table
    res = cli("teams", "set-quota", "cli-tests", "--max-sandboxes", "9")
    assert (res.returncode, res.stderr) == (2, "sandlot: only an admin API key may set a team's quota\n")
    cli("teams", "set-quota", "cli-tests", "--default", "max_sandboxes", "--default", "checkpoint_retention_s",
        as_admin=True, check=True)  # fmt: skip
    teams = json.loads(cli("teams", "ls", "--json", as_admin=True, check=True).stdout)
    mine = next(t for t in teams if t["team"] == "cli-tests")
    assert mine["overrides"] == [] and mine["quota"]["max_sandboxes"] == 100
    res = cli("teams", "set-quota", "cli-tests", as_admin=True)
    assert res.returncode == 2 and "nothing to change" in res.stderr


def test_user_errors_are_one_line(cli: Cli) -> None:
    for args, message in [
        (["exec", "sb-nosuchsandbox0000", "true"], "sandlot: sandbox sb-nosuchsandbox0000 not found\n"),
        (["kill", "sb-nosuchsandbox0000"], "sandlot: sandbox sb-nosuchsandbox0000 not found\n"),
        (["shell", "sb-nosuchsandbox0000"], "sandlot: sandbox sb-nosuchsandbox0000 not found\n"),
        (["create", "--env", "NOEQUALS"], "sandlot: --env wants KEY=VALUE, got 'NOEQUALS'\n"),
        (["create", "--template", "no-such-template"], None),
        (["--api-url", "http://127.0.0.1:9", "ls"], "sandlot: cannot reach the Sandlot API at http://127.0.0.1:9"),
    ]:
        res = cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith(message or "sandlot: "), (args, res.stderr)
        assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, (args, res.stderr)
    res = cli("exec")  # a usage error: click's message, exit 2
    assert res.returncode == 2 and "Usage: sandlot exec" in res.stderr


Step = tuple[str, bytes | Callable[[int], None]]


def _drive_pty(argv: list[str], env: dict[str, str], steps: list[Step], timeout: float = 30) -> tuple[str, int]:
    """Run argv on a new terminal; each time a step's text has appeared, type its bytes (or call it with the fd)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once (nothing of pytest's may run here)
        os.execvpe(argv[0], argv, env)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if steps and steps[0][0].encode() in out:
                action = steps.pop(0)[1]
                out = b""  # later expectations look only at what comes next
                os.write(fd, action) if isinstance(action, bytes) else action(fd)
            if not select.select([fd], [], [], 0.1)[0]:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child exited and the terminal closed
                break
            if not data:
                break
            out += data
    finally:
        os.close(fd)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert not steps, f"never saw {steps[0][0]!r}; last output: {out!r}"
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def _set_size(rows: int, cols: int) -> Callable[[int], None]:
    """Resize the terminal (the kernel sends SIGWINCH to `sandlot shell`), then ask the sandbox's."""

    def act(fd: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        time.sleep(0.5)  # the resize is a separate message: let it land before the next command
        os.write(fd, b"stty size\r")

    return act


@real_agent
def test_shell_is_an_interactive_terminal(cli: Cli, sandbox: str) -> None:
    out, status = _drive_pty(
        [*SANDLOT, "shell", sandbox],
        cli.env,
        [
            ("# ", b"echo hi; tty\r"),
            ("hi\r\n/dev/pts/", _set_size(33, 101)),
            ("33 101", b"exit 5\r"),
        ],
    )
    assert status == 5, out


def test_network_and_port_commands(cli: Cli) -> None:
    created = cli("create", "--network", "egress", "--allow", "198.18.0.0/24", "--json", check=True)
    info = json.loads(created.stdout)
    sid = info["sandbox_id"]
    assert info["network"]["mode"] == "egress" and info["network"]["allow"] == ["198.18.0.0/24"]
    shown = cli("network", sid, check=True).stdout
    assert "mode: egress" in shown and "allow: 198.18.0.0/24" in shown
    changed = cli("network", sid, "--mode", "full", "--deny", "198.18.0.3", check=True).stdout
    assert "mode: full" in changed and "deny: 198.18.0.3/32" in changed
    bad = cli("network", sid, "--mode", "full", "--allow", "no such host!")
    assert bad.returncode == 2 and "network.allow" in bad.stderr
    url = cli("port", "url", sid, "8080", check=True).stdout.strip()
    assert url.endswith(f"/sandboxes/{sid}/ports/8080/")
    host = cli("port", "url", sid, "8080", "--host", "--token", check=True).stdout.strip()
    assert host.startswith(f"http://8080-{sid}.localhost:") and "sandlot_access_token=" in host
    assert cli("port", "public", sid, "8080", check=True).stdout.strip() == f"port 8080 of {sid} is public"
    assert "public ports: 8080" in cli("network", sid, check=True).stdout
    cli("port", "private", sid, "8080", check=True)
    cli("kill", sid, check=True)


def test_top(cli: Cli, sandbox: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = json.loads(cli("top", "--json", check=True).stdout)
        mine = [r for r in rows if r["sandbox"]["sandbox_id"] == sandbox]
        if mine and mine[0]["metrics"] is not None:
            break
        time.sleep(1)
    assert mine[0]["metrics"]["mem_total"] > 0 and mine[0]["metrics"]["pids"] > 0
    header, *lines = cli("top", "--once", "--sort", "mem", check=True).stdout.splitlines()
    assert header.split()[:4] == ["ID", "TEMPLATE", "STATE", "CPU"]
    row = next(line for line in lines if line.startswith(sandbox))
    assert "% of 1" in row and "MiB / 512.0MiB" in row
    res = cli("top", "--sort", "disk")
    assert res.returncode == 2 and "--sort" in res.stderr
