"""Checkpoints in the SDK, sync and async, against a live server."""

from __future__ import annotations

import asyncio
import time

import pytest

from sandlot import AsyncSandbox, Sandbox, errors

pytestmark = pytest.mark.integration


def test_sync_checkpoint_restore_fork(sdk_env: str) -> None:
    with Sandbox.create(timeout=120) as sbx:
        sbx.files.write("/work.txt", "v1")
        ck = sbx.checkpoint("v1")
        assert [c.checkpoint_id for c in sbx.list_checkpoints()] == [ck.checkpoint_id]
        sbx.files.write("/work.txt", "v2")
        sbx.restore(ck)
        assert sbx.files.read("/work.txt") == "v1"
        with pytest.raises(errors.ConflictError):
            sbx.checkpoint("v1")
        kids = Sandbox.fork(ck, 2, metadata={"kid": "yes"}, timeout=120)
        try:
            assert [k.files.read("/work.txt") for k in kids] == ["v1", "v1"]
            assert all(k.get_info().metadata == {"kid": "yes"} for k in kids)
        finally:
            for k in kids:
                k.kill()
                k.close()
        Sandbox.delete_checkpoint(ck)
        with pytest.raises(errors.CheckpointNotFoundError):
            Sandbox.fork(ck.checkpoint_id)


def test_the_readme_example_holds(sdk_env: str) -> None:
    """README "Python SDK": /tmp/data.txt, checkpoint, overwrite, restore (under gVisor /tmp is on the disk).

    Fork, pause with memory and hibernation carrying /tmp: tests/integration/test_writable_paths.py.
    """
    with Sandbox.create(template="debian", timeout=120) as sbx:
        sbx.files.write("/tmp/data.txt", "hello")
        assert "data.txt" in [e.name for e in sbx.files.list("/tmp")]
        ck = sbx.checkpoint("clean")
        sbx.files.write("/tmp/data.txt", "oops")
        sbx.restore(ck)
        assert sbx.files.read("/tmp/data.txt") == "hello"


def test_async_checkpoint_restore_fork(sdk_env: str) -> None:
    async def main() -> None:
        async with await AsyncSandbox.create(timeout=120) as sbx:
            await sbx.commands.run("echo a > /f")
            ck = await sbx.checkpoint("a")
            await sbx.commands.run("echo b > /f")
            await sbx.restore(ck.checkpoint_id)
            assert (await sbx.commands.run("cat /f")).stdout == "a\n"
            (kid,) = await AsyncSandbox.fork(ck)
            async with kid:
                assert (await kid.commands.run("cat /f")).stdout == "a\n"
            await AsyncSandbox.delete_checkpoint(ck)

    asyncio.run(main())


def test_pause_with_memory_and_resume(sdk_env: str) -> None:
    with Sandbox.create(timeout=120) as sbx:
        handle = sbx.commands.run("read line; echo got $line; sleep 60", background=True)
        sbx.pause(memory=True)
        assert sbx.get_info().state.value == "paused"
        sbx.resume()
        # The process restored from disk still waits on its stdin, and answers; its output
        # is followed again through the agent (the old stream ended with the connection).
        again = sbx.commands.connect(handle.pid)
        sbx.commands.send_stdin(handle.pid, "hello\n")
        deadline = time.monotonic() + 30
        while "got hello" not in again.stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "got hello" in again.stdout


def test_create_persistent_and_on_timeout(sdk_env: str) -> None:
    with Sandbox.create(timeout=1, persistent=True) as sbx:
        with Sandbox.create(timeout=1, on_timeout="pause") as eph:
            assert sbx.get_info().persistent and eph.get_info().on_timeout == "pause"
            deadline = time.monotonic() + 30
            while eph.get_info().state.value != "paused" and time.monotonic() < deadline:
                time.sleep(0.3)
            assert eph.get_info().state.value == "paused"
            assert sbx.get_info().state.value == "running"  # past its timeout, persistent: still here


def test_volumes(sdk_env: str) -> None:
    from sandlot.sdk import VolumeMount, Volumes

    assert Volumes.create("sdk-vol").name == "sdk-vol"
    try:
        with Sandbox.create(timeout=120, volumes=[VolumeMount(name="sdk-vol", path="/v")]) as a:
            a.files.write("/v/x", "from a")
        with Sandbox.create(timeout=120, volumes=[VolumeMount(name="sdk-vol", path="/v", read_only=True)]) as b:
            assert b.files.read("/v/x") == "from a"
        assert "sdk-vol" in [v.name for v in Volumes.list()]
    finally:
        Volumes.delete("sdk-vol")
    with pytest.raises(errors.VolumeNotFoundError):
        Volumes.delete("sdk-vol")


def test_checkpoint_with_memory(sdk_env: str) -> None:
    # Each count replaces the file whole: `echo > /tmp/count` would empty it first, and a read
    # that came between the two would find nothing.
    loop = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done"
    with Sandbox.create(timeout=120) as sbx:
        job = sbx.commands.run(loop, background=True)
        time.sleep(0.5)
        ck = sbx.checkpoint("counting", memory=True)
        assert ck.memory
        at_checkpoint = int(sbx.files.read("/tmp/count"))
        time.sleep(2)
        later = int(sbx.files.read("/tmp/count"))
        assert later >= at_checkpoint + 10
        sbx.restore(ck)
        # The loop is back where it was at the checkpoint (its variable and its file), and running.
        restored = int(sbx.files.read("/tmp/count"))
        assert restored < later, (at_checkpoint, later, restored)
        assert any(p.pid == job.pid for p in sbx.commands.list())
