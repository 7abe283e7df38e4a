"""Commands, background processes and terminals, on real gVisor and crun."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.node.sandbox import collect

pytestmark = pytest.mark.integration


def test_shell_and_argv_in_busybox_and_debian(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    for image in ("busybox", "debian"):
        sbx = make_sandbox(image, runtime_name)
        res = aio(sbx.run("echo hello; echo oops >&2; exit 3"))
        assert (res.stdout, res.stderr, res.exit_code) == ("hello\n", "oops\n", 3)
        res = aio(sbx.run(["printf", "%s-%s", "a b", "c"]))
        assert res.stdout == "a b-c" and res.exit_code == 0
    res = aio(sbx.run(["python3", "-c", "import sys; print(sys.version_info[0])"]))
    assert res.stdout.strip() == "3"


def test_env_cwd_user_stdin(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("debian", runtime_name, env={"SANDBOX_WIDE": "1"})
    res = aio(sbx.run("echo $SANDBOX_WIDE $FOO; pwd; id -u; id -un", env={"FOO": "bar"}, cwd="/tmp", user="user"))
    assert res.stdout.split() == ["1", "bar", "/tmp", "1000", "user"]
    res = aio(sbx.run(["cat"], stdin=b"from stdin\n"))
    assert res.stdout == "from stdin\n"
    res = aio(sbx.run("echo $HOME", user="user"))
    assert res.stdout.strip() == "/home/user"


def test_ls_and_stat_work_in_debian_under_gvisor(make_sandbox: Any, aio: Any) -> None:
    # gVisor 20221219 rejects statx(AT_NO_AUTOMOUNT), which GNU coreutils uses.
    sbx = make_sandbox("debian", "gvisor")
    res = aio(sbx.run("ls -l / >/dev/null && stat -c %n /etc && ls /"))
    assert res.exit_code == 0, res.stderr
    assert "etc" in res.stdout.split()


def test_output_streams_as_produced(make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox()
    seen: list[tuple[float, str]] = []
    t0 = time.monotonic()
    res = aio(
        sbx.run("echo first; sleep 1.5; echo second", on_stdout=lambda s: seen.append((time.monotonic() - t0, s)))
    )
    assert res.stdout == "first\nsecond\n"
    assert seen[0][1] == "first\n" and seen[0][0] < 1.2, seen


def test_exit_code_signal_and_not_found(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name)
    res = aio(sbx.run("kill -9 $$"))
    assert res.exit_code is None and res.signal == 9
    with pytest.raises(errors.CommandNotFoundError, match="no-such-cmd"):
        aio(sbx.run(["no-such-cmd", "x"]))
    with pytest.raises(errors.SandboxFileNotFoundError, match="/nope"):
        aio(sbx.run(["true"], cwd="/nope"))
    with pytest.raises(errors.UserNotFoundError, match="ghost"):
        aio(sbx.run(["true"], user="ghost"))
    res = aio(sbx.run("no-such-cmd"))  # through a shell it is the shell's exit code
    assert res.exit_code == 127


def test_timeout_kills_the_command(make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox()
    t0 = time.monotonic()
    with pytest.raises(errors.TimeoutError_, match="timed out after 1s") as info:
        aio(sbx.run("echo start; sleep 30", timeout=1))
    res = info.value.result
    assert res.timed_out and res.signal == 9 and res.stdout == "start\n"
    assert time.monotonic() - t0 < 10


def test_background_list_reconnect_input_signal(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name)
    proc = aio(sbx.start("echo ready; while read line; do echo got:$line; done", stdin=True, tag="worker"))
    pid = proc.pid
    aio(proc.detach())
    procs = aio(sbx.agent.list_processes())
    assert any(pi.pid == pid and pi.running and pi.tag == "worker" for pi in procs)
    again = aio(sbx.agent.connect(pid))
    aio(sbx.agent.send_input(pid, b"one\n"))

    async def until_exit() -> Any:
        got = b""
        async for _fd, data in again.output():
            got += data
            if b"got:one" in got:
                await sbx.agent.signal(pid, 15)
        return got

    got = aio(until_exit())
    assert b"ready\n" in got and b"got:one\n" in got
    assert again.exit is not None and again.exit.signal == 15
    procs = aio(sbx.agent.list_processes())
    assert any(pi.pid == pid and not pi.running for pi in procs)


def test_background_output_replayed_after_exit(make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox()
    proc = aio(sbx.start("echo early; exit 4"))
    aio(proc.detach())
    time.sleep(1)
    res = aio(collect(aio(sbx.agent.connect(proc.pid))))
    assert res.stdout == "early\n" and res.exit_code == 4
    with pytest.raises(errors.ProcessNotFoundError):
        aio(sbx.agent.signal(999_999, 9))


def test_pty_shell_resize(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("debian", runtime_name)
    proc = aio(sbx.start(["/bin/bash", "-i"], pty=p.PtySize(rows=30, cols=100)))
    aio(sbx.agent.send_input(proc.pid, b"stty size; echo TTY=$(tty)\n"))

    async def read_until(marker: bytes, it: Any, acc: bytearray) -> bytes:
        async for _fd, data in it:
            acc += data
            if marker in acc:
                return bytes(acc)
        return bytes(acc)

    it = proc.output()
    out = aio(read_until(b"TTY=/dev/pts/", it, bytearray()))
    assert b"30 100" in out
    aio(sbx.agent.resize(proc.pid, 50, 120))
    aio(sbx.agent.send_input(proc.pid, b"stty size\nexit 0\n"))
    out = aio(read_until(b"50 120", it, bytearray()))
    assert b"50 120" in out


def test_zombies_are_reaped(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name)
    # Orphans re-parent to init (the agent), which must reap them.
    aio(sbx.run("for i in 1 2 3 4 5; do (sleep 0.1 &) ; done; true"))
    time.sleep(1.5)
    res = aio(sbx.run("cat /proc/[0-9]*/stat 2>/dev/null | awk '{print $3}' | sort | uniq -c"))
    assert " Z" not in res.stdout, res.stdout


def test_signals_to_init_are_forwarded(make_sandbox: Any, aio: Any, node: Any) -> None:
    from sandlot.node.runtimes.base import run_tool

    sbx = make_sandbox()
    proc = aio(sbx.start("trap 'echo got-term; exit 0' TERM; echo armed; while true; do sleep 0.1; done"))

    async def first_chunk() -> bytes:
        async for _fd, data in proc.output():
            return data
        return b""

    assert aio(first_chunk()) == b"armed\n"
    rc, out = aio(run_tool("runsc", "--root", str(node.state_dir / "runsc"), "kill", sbx.id, "TERM"))
    assert rc == 0, out
    res = aio(collect(proc))
    assert "got-term" in res.stdout and res.exit_code == 0
    assert aio(sbx.run("echo alive")).stdout == "alive\n"
