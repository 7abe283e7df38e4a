"""The Python SDK, sync and async, against a live server."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import time
from pathlib import Path

import pytest

from sandlot import AsyncSandbox, Sandbox, errors
from tests.api.harness import agent_available

pytestmark = pytest.mark.integration


def test_sync_sandbox_end_to_end(sdk_env: str, tmp_path: Path) -> None:
    seen: list[str] = []
    with Sandbox.create(metadata={"suite": "sdk"}, timeout=120) as sbx:
        assert sbx.sandbox_id.startswith("sb-")
        res = sbx.commands.run("echo out; echo err >&2; exit 3", on_stdout=seen.append)
        assert (res.stdout, res.stderr, res.exit_code, res.ok) == ("out\n", "err\n", 3, False)
        assert seen == ["out\n"]
        with pytest.raises(errors.CommandExitError) as exc_info:
            sbx.commands.run("exit 2", check=True)
        assert exc_info.value.exit_code == 2
        with pytest.raises(errors.CommandNotFoundError):
            sbx.commands.run(["no-such-cmd"])
        assert sbx.commands.run("cat", stdin="in\n").stdout == "in\n"

        info = sbx.files.write("/tmp/x/hello.txt", "héllo")
        assert info.size == len("héllo".encode())
        assert sbx.files.read("/tmp/x/hello.txt") == "héllo"
        sbx.files.write("/tmp/x/big.bin", io.BytesIO(b"\x00\xff" * 300_000))
        assert sbx.files.read("/tmp/x/big.bin", format="bytes") == b"\x00\xff" * 300_000
        blob = bytes(range(256)) * 12_289  # over 3 MB, not a whole number of the SDK's upload pieces
        for data in (blob, bytearray(blob), memoryview(blob)):
            assert sbx.files.write("/tmp/x/big.bin", data).size == len(blob)
            assert sbx.files.read("/tmp/x/big.bin", format="bytes") == blob
        assert sbx.files.write("/tmp/x/big.bin", "é" * (1 << 20)).size == 2 << 20
        assert sbx.files.read("/tmp/x/big.bin") == "é" * (1 << 20)
        sbx.files.write("/tmp/x/big.bin", io.BytesIO(b"\x00\xff" * 300_000))
        assert b"".join(sbx.files.read_stream("/tmp/x/hello.txt")) == "héllo".encode()
        assert sbx.files.exists("/tmp/x/hello.txt") and not sbx.files.exists("/tmp/x/nope")
        assert sbx.files.make_dir("/tmp/x/d") is True
        assert sbx.files.rename("/tmp/x/hello.txt", "/tmp/x/d/h.txt").name == "h.txt"
        assert sorted(e.name for e in sbx.files.list("/tmp/x")) == ["big.bin", "d"]
        assert sbx.files.stat("/tmp/x/d").type == "dir"
        sbx.files.remove("/tmp/x/d")
        with pytest.raises(errors.SandboxFileNotFoundError):
            sbx.files.read("/tmp/x/d/h.txt")

        assert [s.sandbox_id for s in Sandbox.list(metadata={"suite": "sdk"})] == [sbx.sandbox_id]
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.commands.run("echo same").stdout == "same\n"
        again.close()
        sbx.set_timeout(60)
        assert sbx.get_info().ends_at < time.time() + 61
    assert sbx.get_info().state == "killed"
    with pytest.raises(errors.SandboxStateError):
        sbx.commands.run("true")
    with pytest.raises(errors.SandboxStateError):
        Sandbox.connect(sbx.sandbox_id)


def test_sync_background_handle(sdk_env: str) -> None:
    with Sandbox.create() as sbx:
        handle = sbx.commands.run("echo ready; while read l; do echo got:$l; done", background=True)
        assert handle.pid > 0
        assert any(p.pid == handle.pid and p.running for p in sbx.commands.list())
        handle.send_stdin("one\n")
        deadline = time.monotonic() + 10
        while "got:one" not in handle.stdout and time.monotonic() < deadline:
            time.sleep(0.05)
        assert handle.kill() is True
        res = handle.wait()
        assert res.signal == 9 and "ready\n" in res.stdout and "got:one\n" in res.stdout
        assert sbx.commands.kill(999_999) is False
        with pytest.raises(errors.ProcessNotFoundError):
            sbx.commands.connect(999_999)
        # Reconnect to a process that already exited: its output is replayed.
        h2 = sbx.commands.run("echo early; exit 4", background=True)
        assert h2.wait().exit_code == 4
        assert sbx.commands.connect(h2.pid).wait().stdout == "early\n"


def test_errors_are_typed(sdk_env: str) -> None:
    with pytest.raises(errors.ImageNotFoundError):
        Sandbox.create(template="no-such-image")
    with pytest.raises(errors.InvalidArgumentError) as exc_info:
        Sandbox.create(memory_mb=1)
    assert exc_info.value.field == "memory_mb"
    with pytest.raises(errors.SandboxNotFoundError):
        Sandbox.connect("sb-0000000000000000")
    with pytest.raises(errors.PermissionDeniedError):
        Sandbox.list(api_key="sl_wrong")


def test_async_sandbox(sdk_env: str) -> None:
    async def main() -> None:
        async with await AsyncSandbox.create() as sbx:
            chunks: list[str] = []

            async def on_out(text: str) -> None:
                chunks.append(text)

            res = await sbx.commands.run("echo a; sleep 0.3; echo b", on_stdout=on_out)
            assert res.stdout == "a\nb\n" and chunks == ["a\n", "b\n"]
            results = await asyncio.gather(*(sbx.commands.run(f"echo {i}") for i in range(5)))
            assert [r.stdout for r in results] == [f"{i}\n" for i in range(5)]
            await sbx.files.write("/tmp/a.txt", b"async")
            assert await sbx.files.read("/tmp/a.txt") == "async"
            assert (await sbx.get_info()).state == "running"
        assert (await sbx.get_info()).state == "killed"
        await sbx.close()

    asyncio.run(main())


@pytest.mark.skipif(not agent_available(), reason="needs the real agent (pty, tar, watch)")
def test_watch_and_dirs(sdk_env: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.txt").write_text("B")
    with Sandbox.create() as sbx:
        sbx.files.upload_dir(src, "/tmp/up")
        assert sbx.files.read("/tmp/up/sub/b.txt") == "B"
        sbx.files.download_dir("/tmp/up", tmp_path / "down")
        assert (tmp_path / "down" / "sub" / "b.txt").read_text() == "B"

        watch = sbx.files.watch("/tmp/up")
        sbx.files.write("/tmp/up/new.txt", "n")
        ev = watch.next_event(timeout=10)
        assert ev is not None and ev.path.endswith("new.txt")
        watch.stop()


@pytest.mark.skipif(not agent_available(), reason="needs the real agent (pty)")
def test_pty(sdk_env: str) -> None:
    from sandlot.sdk import PtySize

    with Sandbox.create() as sbx:
        got: list[bytes] = []
        term = sbx.pty.create(PtySize(rows=30, cols=100), on_data=got.append, cmd="/bin/sh")
        term.send_stdin("stty size\n")
        deadline = time.monotonic() + 20
        while b"30 100" not in b"".join(got):  # the first size is printed before the resize
            assert time.monotonic() < deadline, got
            time.sleep(0.05)
        term.resize(PtySize(rows=40, cols=90))
        term.send_stdin("stty size; exit 5\n")
        res = term.wait(timeout=20)
        assert res.exit_code == 5 and "30 100" in res.stdout and "40 90" in res.stdout
        assert b"".join(got).decode(errors="replace") == res.stdout


def test_command_timeout_raises_with_its_output(sdk_env: str) -> None:
    with Sandbox.create() as sbx:
        with pytest.raises(errors.TimeoutError_, match="timed out after 1s") as info:
            sbx.commands.run("echo early; sleep 30", timeout=1)
        assert info.value.result.stdout == "early\n" and info.value.result.timed_out
        assert sbx.commands.run("echo after").stdout == "after\n"


def test_pause_and_resume(sdk_env: str) -> None:
    with Sandbox.create() as sbx:
        sbx.commands.run("while true; do echo t >> /ticks; sleep 0.05; done", background=True)
        time.sleep(0.5)
        sbx.pause()
        assert sbx.get_info().state.value == "paused"
        with pytest.raises(errors.SandboxStateError, match="paused"):
            sbx.commands.run("true")
        with pytest.raises(errors.SandboxStateError, match="cannot pause"):
            sbx.pause()
        sbx.resume()
        assert sbx.get_info().state.value == "running"
        before = int(sbx.commands.run("wc -l < /ticks").stdout)
        time.sleep(0.5)
        assert int(sbx.commands.run("wc -l < /ticks").stdout) > before


def test_get_metrics_sync_and_async(sdk_env: str) -> None:
    with Sandbox.create() as sbx:
        deadline = time.monotonic() + 60
        while not (samples := sbx.get_metrics()) and time.monotonic() < deadline:
            time.sleep(1)
        assert samples and samples[0].mem_total == 512 << 20 and samples[0].cpu_count == 1
        newest = samples[-1].timestamp
        assert sbx.get_metrics(start=newest + 3600) == []
        assert sbx.get_metrics(end=newest)[-1].timestamp == newest
        # a datetime holds microseconds: a second past it, still before the next sample (5 s)
        assert sbx.get_metrics(end=dt.datetime.fromtimestamp(newest + 1, dt.UTC))[-1].timestamp == newest

        async def via_async() -> list[float]:
            a = await AsyncSandbox.connect(sbx.sandbox_id)
            try:
                return [m.timestamp for m in await a.get_metrics(start=samples[0].timestamp)]
            finally:
                await a.close()

        assert asyncio.run(via_async())[: len(samples)] == [m.timestamp for m in samples]
        with pytest.raises(errors.InvalidArgumentError, match="start"):
            sbx.get_metrics(start=newest, end=newest - 10)
