"""The `e2b` SDK's sandbox lifecycle, commands, files and terminals against Sandlot."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import pytest
from e2b import CommandExitException, NotFoundException, Sandbox, SandboxMetrics, SandboxQuery
from e2b.exceptions import AuthenticationException, SandboxException, SandboxNotFoundException, TimeoutException

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def sbx(e2b_env: dict[str, str]) -> Iterator[Sandbox]:
    """One Debian sandbox shared by the command, file and terminal tests."""
    s = Sandbox.create(template="base", timeout=600, metadata={"suite": "e2b"}, envs={"FROM_CREATE": "yes"})
    yield s
    s.kill()


def test_create_envs_and_info(sbx: Sandbox) -> None:
    r = sbx.commands.run("echo $FROM_CREATE; whoami; pwd")
    assert r.stdout.split() == ["yes", "user", "/home/user"]
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id
    assert info.metadata == {"suite": "e2b"}
    assert info.template_id == "base"
    assert sbx.is_running()


def test_commands_foreground_streaming_and_exit(sbx: Sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    r = sbx.commands.run("echo one; echo two >&2; echo three", on_stdout=out.append, on_stderr=err.append)
    assert r.exit_code == 0 and r.stdout == "one\nthree\n" and r.stderr == "two\n"
    assert "".join(out) == "one\nthree\n" and "".join(err) == "two\n"
    with pytest.raises(CommandExitException) as ei:
        sbx.commands.run("echo bad >&2; exit 3")
    assert ei.value.exit_code == 3 and "bad" in ei.value.stderr


def test_commands_background_list_stdin_kill(sbx: Sandbox) -> None:
    h = sbx.commands.run("cat", background=True, stdin=True)
    assert h.pid in [p.pid for p in sbx.commands.list()]
    sbx.commands.send_stdin(h.pid, "ping\n")
    sbx.commands.close_stdin(h.pid)
    r = h.wait()
    assert r.stdout == "ping\n"
    talker = sbx.commands.run("echo early; sleep 1; echo late", background=True)
    talker.disconnect()
    again = sbx.commands.connect(talker.pid)
    assert again.wait().stdout.endswith("late\n")
    sleeper = sbx.commands.run("sleep 300", background=True)
    assert sbx.commands.kill(sleeper.pid) is True
    with pytest.raises(CommandExitException):
        sleeper.wait()
    assert sleeper.pid not in [p.pid for p in sbx.commands.list()]
    assert sbx.commands.kill(sleeper.pid) is False


def test_command_timeout(sbx: Sandbox) -> None:
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 30", timeout=1)


def test_files(sbx: Sandbox) -> None:
    info = sbx.files.write("notes/hello.txt", "hello e2b")
    assert info.path == "/home/user/notes/hello.txt"
    assert sbx.files.read("notes/hello.txt") == "hello e2b"
    blob = bytes(range(256)) * 100
    sbx.files.write("/tmp/blob.bin", blob)
    assert bytes(sbx.files.read("/tmp/blob.bin", format="bytes")) == blob
    assert b"".join(sbx.files.read("/tmp/blob.bin", format="stream")) == blob
    many = sbx.files.write_files([{"path": "/tmp/m/a.txt", "data": "A"}, {"path": "/tmp/m/b.txt", "data": b"B"}])
    assert sorted(w.path for w in many) == ["/tmp/m/a.txt", "/tmp/m/b.txt"]
    assert sorted(e.name for e in sbx.files.list("/tmp/m")) == ["a.txt", "b.txt"]
    assert sbx.files.exists("/tmp/m/a.txt") and not sbx.files.exists("/tmp/m/zzz")
    entry = sbx.files.get_info("/tmp/blob.bin")
    assert entry.size == len(blob) and entry.type is not None and entry.type.value == "file"
    moved = sbx.files.rename("/tmp/m/a.txt", "/tmp/m/c.txt")
    assert moved.path == "/tmp/m/c.txt" and sbx.files.read("/tmp/m/c.txt") == "A"
    assert sbx.files.make_dir("/tmp/m/sub") is True
    assert sbx.files.make_dir("/tmp/m/sub") is False
    sbx.files.remove("/tmp/m")
    assert not sbx.files.exists("/tmp/m")
    with pytest.raises(NotFoundException):
        sbx.files.read("/tmp/nope.txt")


def test_watch_dir(sbx: Sandbox) -> None:
    sbx.files.make_dir("/tmp/watched")
    handle = sbx.files.watch_dir("/tmp/watched")
    sbx.files.write("/tmp/watched/new.txt", "x")
    events = []
    for _ in range(50):
        events += handle.get_new_events()
        if any(e.name == "new.txt" for e in events):
            break
        time.sleep(0.1)
    handle.stop()
    assert any(e.name == "new.txt" and e.type.name in ("CREATE", "WRITE") for e in events), events


def test_pty(sbx: Sandbox) -> None:
    from e2b import PtySize

    chunks: list[bytes] = []
    term = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.resize(term.pid, PtySize(rows=40, cols=100))
    sbx.pty.send_stdin(term.pid, b"stty size; exit 0\n")
    term.wait(on_pty=chunks.append)
    assert "40 100" in b"".join(chunks).decode(errors="replace")
    term2 = sbx.pty.create(PtySize(rows=24, cols=80))
    assert sbx.pty.kill(term2.pid) is True


def test_list_with_metadata_filter_connect_and_timeout(e2b_env: dict[str, str], sbx: Sandbox) -> None:
    tag = uuid.uuid4().hex
    other = Sandbox.create(template="base", timeout=60, metadata={"tag": tag})
    try:
        found = Sandbox.list(query=SandboxQuery(metadata={"tag": tag})).next_items()
        assert [s.sandbox_id for s in found] == [other.sandbox_id]
        assert found[0].metadata == {"tag": tag}
        again = Sandbox.connect(other.sandbox_id)
        assert again.commands.run("echo hi").stdout == "hi\n"
        before = other.get_info().end_at
        other.set_timeout(900)
        assert (other.get_info().end_at - before).total_seconds() > 800
        assert other.pause() is not False
        assert other.get_info().state.value == "paused"
        resumed = Sandbox.connect(other.sandbox_id)
        assert resumed.get_info().state.value == "running"
        assert resumed.commands.run("echo back").stdout == "back\n"
    finally:
        other.kill()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(other.sandbox_id)
    assert Sandbox.kill(other.sandbox_id) is False


def test_errors(e2b_env: dict[str, str]) -> None:
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect("sb-0000000000000000")
    with pytest.raises(SandboxException, match="no-such-template"):
        Sandbox.create(template="no-such-template")
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="sl_not_a_key").next_items()


def test_microvm_runtime_through_metadata(e2b_env: dict[str, str]) -> None:
    """The E2B SDK has no runtime option; Sandlot reads it from the metadata, and the SDK's
    commands, files and terminals work unchanged in a microVM (its own kernel)."""
    from e2b import PtySize

    vm = Sandbox.create(template="base", timeout=600, metadata={"sandlot.runtime": "microvm"}, request_timeout=300)
    try:
        r = vm.commands.run("uname -r; cat /proc/1/cmdline")
        kernel, init = r.stdout.splitlines()
        assert kernel.endswith("-cloud-amd64") and init.startswith("/.sandlot/sandlot-agent")
        vm.files.write("notes/vm.txt", "in a vm")
        assert vm.commands.run("cat ~/notes/vm.txt").stdout == "in a vm"
        chunks: list[bytes] = []
        term = vm.pty.create(PtySize(rows=24, cols=80))
        vm.pty.send_stdin(term.pid, b"stty size; exit 0\n")
        term.wait(on_pty=chunks.append)
        assert "24 80" in b"".join(chunks).decode(errors="replace")
    finally:
        vm.kill()


def test_get_metrics(sbx: Sandbox) -> None:
    deadline = time.monotonic() + 60
    while not (metrics := sbx.get_metrics()) and time.monotonic() < deadline:
        time.sleep(1)
    assert metrics and all(isinstance(m, SandboxMetrics) for m in metrics)
    m = metrics[-1]
    assert m.cpu_count >= 1 and 0 <= m.cpu_used_pct <= 100
    assert 0 < m.mem_used <= m.mem_total and 0 < m.disk_used < m.disk_total
    assert Sandbox.get_metrics(sbx.sandbox_id, start=m.timestamp + dt.timedelta(hours=1)) == []
    assert Sandbox.get_metrics(sbx.sandbox_id, end=m.timestamp)[-1].timestamp <= m.timestamp
