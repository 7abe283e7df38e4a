"""Filesystem checkpoints: take, list, delete; restore rolls back; fork starts copies."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import pytest

from sandlot import errors
from tests.leftovers import assert_clean

pytestmark = pytest.mark.integration


def test_checkpoint_restore_rolls_the_filesystem_back(node: Any, make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox("busybox", "gvisor")
    aio(sbx.run("echo one > /data && mkdir /d && echo keep > /d/f && rm /bin/vi"))
    ck = aio(node.checkpoint(sbx.id, "first"))
    assert ck.sandbox_id == sbx.id and ck.name == "first"
    assert [c.id for c in node.checkpoints.list(sbx.id)] == [ck.id]
    # The sandbox keeps running after a checkpoint, and what it writes next is not in it.
    aio(sbx.run("echo two > /data && rm -r /d && echo new > /later && echo x > /bin/vi"))
    assert aio(sbx.run("cat /data")).stdout == "two\n"
    aio(node.restore(sbx.id, ck.id))
    res = aio(sbx.run("cat /data /d/f; ls /later; ls /bin/vi"))
    assert res.stdout.startswith("one\nkeep\n"), res
    assert "/later" in res.stderr and "/bin/vi" in res.stderr, res  # deletions and additions both rolled back
    assert sbx.state.value == "running"
    # A checkpoint can be restored again after the sandbox changed once more.
    aio(sbx.run("echo three > /data"))
    aio(node.restore(sbx.id, ck.id))
    assert aio(sbx.run("cat /data")).stdout == "one\n"


def test_fork_starts_independent_sandboxes(node: Any, make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox("busybox", "gvisor")
    aio(sbx.run("echo parent > /who"))
    ck = aio(node.checkpoint(sbx.id, "base"))
    kids = aio(node.fork(ck.id, 3))
    try:
        assert len({k.id for k in kids} | {sbx.id}) == 4
        for i, kid in enumerate(kids):
            assert aio(kid.run("cat /who")).stdout == "parent\n"
            aio(kid.run(f"echo kid{i} > /who"))
        assert [aio(k.run("cat /who")).stdout for k in kids] == ["kid0\n", "kid1\n", "kid2\n"]
        assert aio(sbx.run("cat /who")).stdout == "parent\n"
    finally:
        for kid in kids:
            aio(node.kill(kid.id))
    # A fork's sandbox cannot restore its parent's checkpoint: that is another sandbox's.
    other = make_sandbox("busybox", "gvisor")
    with pytest.raises(errors.InvalidArgumentError, match="is of sandbox"):
        aio(node.restore(other.id, ck.id))
    # Checkpoints outlive their sandbox until deleted.
    aio(node.kill(sbx.id))
    (kid,) = aio(node.fork(ck.id, 1))
    assert aio(kid.run("cat /who")).stdout == "parent\n"
    aio(node.kill(kid.id))
    node.checkpoints.delete(ck.id)
    assert not ck.dir.exists()
    with pytest.raises(errors.CheckpointNotFoundError):
        aio(node.fork(ck.id, 1))


def test_checkpoint_errors_leave_the_sandbox_as_it_was(node: Any, make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox("busybox", "container")
    aio(sbx.run("echo v1 > /v"))
    with pytest.raises(errors.InvalidArgumentError, match="checkpoint name"):
        aio(node.checkpoint(sbx.id, "../x"))
    ck = aio(node.checkpoint(sbx.id, "v1"))
    with pytest.raises(errors.ConflictError, match="already has a checkpoint named 'v1'"):
        aio(node.checkpoint(sbx.id, "v1"))
    with pytest.raises(errors.CheckpointNotFoundError):
        aio(node.restore(sbx.id, "ck-0000000000000000"))
    with pytest.raises(errors.InvalidArgumentError, match="count"):
        aio(node.fork(ck.id, 0))
    assert aio(sbx.run("cat /v")).stdout == "v1\n"
    # A paused sandbox checkpoints and stays paused; a restore brings it back running.
    aio(node.pause(sbx.id))
    ck2 = aio(node.checkpoint(sbx.id, "paused"))
    assert sbx.state.value == "paused"
    aio(node.restore(sbx.id, ck2.id))
    assert aio(sbx.run("cat /v")).stdout == "v1\n"
    aio(node.kill(sbx.id))
    with pytest.raises(errors.SandboxNotFoundError):
        aio(node.checkpoint(sbx.id, "late"))
    with pytest.raises(errors.SandboxNotFoundError):
        aio(node.pause(sbx.id))


def test_full_disk_store_refuses_checkpoints_and_keeps_the_sandbox(loop: Any, aio: Any, node: Any) -> None:
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from sandlot.node import Node, NodeConfig, SandboxSpec
    from tests.conftest import IMAGE_CACHE

    data = Path(tempfile.mkdtemp(prefix="sl-full-", dir="/var/tmp"))
    shutil.copytree(node.config.data_dir / "bundle", data / "bundle", symlinks=True)
    small = Node(NodeConfig(data_dir=data, images_dir=IMAGE_CACHE, disk_store_bytes=400 << 20))
    try:
        sbx = aio(small.create(SandboxSpec(image="busybox", runtime="gvisor")))
        aio(sbx.run("echo precious > /keep"))
        ck = aio(small.checkpoint(sbx.id, "roomy"))
        # Other data fills the store (as other sandboxes' writes would).
        filler = small.disks.root / "filler"
        subprocess.run(["fallocate", "-l", "1G", str(filler)], capture_output=True)
        for size in ("64M", "16M", "4M", "1M"):
            for i in range(16):
                if subprocess.run(["fallocate", "-l", size, f"{filler}-{size}-{i}"], capture_output=True).returncode:
                    break
        with pytest.raises(errors.NoSpaceError, match="disk store is full"):
            aio(small.checkpoint(sbx.id, "full"))
        with pytest.raises(errors.NoSpaceError, match="cannot fork"):
            aio(small.fork(ck.id, 1))
        # The sandbox stays as it was: running, its files intact, no half-made checkpoint.
        assert sbx.state.value == "running"
        assert aio(sbx.run("cat /keep")).stdout == "precious\n"
        assert [c.name for c in small.checkpoints.list(sbx.id)] == ["roomy"]
        assert not [p for p in small.disks.checkpoints.iterdir() if p.name.startswith(".")]
        for f in small.disks.root.glob("filler*"):
            f.unlink()
        subprocess.run(["sync", "-f", str(small.disks.root)], check=True)  # btrfs frees at its commit
        assert aio(small.checkpoint(sbx.id, "after")).name == "after"
    finally:
        aio(small.close())
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.parametrize("runtime", ["gvisor", "container"])
def test_a_restore_racing_commands_ends_them_and_rolls_back(
    node: Any, make_sandbox: Any, aio: Any, runtime: str
) -> None:
    sbx = make_sandbox("busybox", runtime)
    aio(sbx.run("echo one > /data"))
    ck = aio(node.checkpoint(sbx.id, "one"))
    aio(sbx.run("echo two > /data"))

    async def race() -> tuple[Any, list[Any]]:
        # A command writing all along, and more commands sent while the restore runs.
        writer = asyncio.ensure_future(sbx.run("while true; do echo x >> /data; done", timeout=60))
        await asyncio.sleep(0.3)
        restore = asyncio.ensure_future(node.restore(sbx.id, ck.id))
        late = []
        for _ in range(5):
            late.append(asyncio.ensure_future(sbx.run("cat /data")))
            await asyncio.sleep(0.02)
        await restore
        got = await asyncio.gather(writer, *late, return_exceptions=True)
        return got[0], list(got[1:])

    writer, late = aio(race())
    # The writer's processes did not outlive the restore: it ended, with an error or killed.
    assert isinstance(writer, errors.SandboxStateError) or writer.exit_code != 0, writer
    for res in late:  # each sent during the restore: refused clearly, or ran on one side of it
        before = not isinstance(res, BaseException) and res.stdout.startswith("two\n")
        assert isinstance(res, errors.SandboxStateError) or before or res.stdout == "one\n", res
        if isinstance(res, errors.SandboxStateError):
            assert sbx.id in str(res)
    assert sbx.state.value == "running"
    assert aio(sbx.run("cat /data")).stdout == "one\n"
    assert aio(sbx.runtime.alive(sbx.id))  # the runtime knows the new boot, and only it
    aio(asyncio.sleep(0.3))
    assert aio(sbx.run("cat /data")).stdout == "one\n"  # nothing of the old boot writes any more


def test_ten_forks_are_distinct_sandboxes_with_the_checkpoints_files(node: Any, make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox("busybox", "gvisor", network="egress")
    aio(sbx.run("echo parent > /who && head -c 1048576 /dev/urandom > /blob && md5sum /blob > /sum"))
    ck = aio(node.checkpoint(sbx.id, "base"))
    kids = aio(node.fork(ck.id, 10))
    disks = [k.layer.image_file for k in kids]
    try:
        assert len({k.id for k in kids} | {sbx.id}) == 11
        assert len({k.net.address for k in kids} | {sbx.net.address}) == 11  # each its own network
        assert len(set(disks)) == 10

        async def check() -> list[str]:
            script = "cat /who && md5sum -c /sum && echo kid{} > /who && cat /who"
            runs = await asyncio.gather(*(k.run(script.format(i)) for i, k in enumerate(kids)))
            return [r.stdout for r in runs]

        outs = aio(check())
        assert outs == [f"parent\n/blob: OK\nkid{i}\n" for i in range(10)]
        assert aio(sbx.run("cat /who")).stdout == "parent\n"
    finally:

        async def kill_all() -> None:
            await asyncio.gather(*(node.kill(k.id) for k in kids))

        aio(kill_all())
    # Every fork's processes, runtime state, cgroups, network and disk went with it (a kill may
    # return before its cleanup ends on a loaded host: KILL_WAIT_S).
    deadline = time.monotonic() + 60
    while any(k.dir.exists() for k in kids):
        assert time.monotonic() < deadline, "the forks' cleanup did not end"
        time.sleep(0.05)
    assert_clean(node.config.data_dir, live=node.known_ids(), gone=[k.id for k in kids])
    for disk in disks:  # and its loop device
        assert not disk.exists()
        assert subprocess.run(["losetup", "-j", str(disk)], capture_output=True, text=True).stdout == ""
    assert not [k for k in kids if node.knows(k.id)]


def test_a_restore_failing_after_its_swap_and_network_renewal_leaves_nothing(
    node: Any, make_sandbox: Any, aio: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandlot import failpoints

    sbx = make_sandbox("busybox", "gvisor", network="egress")
    ck = aio(node.checkpoint(sbx.id, "c"))
    monkeypatch.setattr(failpoints, "_points", {"node.restore.after_swap": "error"})
    with pytest.raises(errors.InternalError, match=r"failpoint node\.restore\.after_swap"):
        aio(node.restore(sbx.id, ck.id))
    assert failpoints.armed() == {}
    assert not node.knows(sbx.id) and sbx.state.value == "killed"
    # The new network (made beside the swap), the new disk and the old one's leftovers all went.
    deadline = time.monotonic() + 60
    while sbx.dir.exists():
        assert time.monotonic() < deadline, "the failed restore's cleanup did not end"
        time.sleep(0.05)
    assert_clean(node.config.data_dir, live=node.known_ids(), gone=[sbx.id])  # leases, netns, nft included


def test_a_restored_connected_sandbox_gets_its_namespace_back_in_place(node: Any, make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox("busybox", "gvisor", network="egress")
    ck = aio(node.checkpoint(sbx.id, "c"))
    netns, address = sbx.net.netns, sbx.net.address
    for _ in range(2):  # again: each start takes the address into its netstack
        aio(node.restore(sbx.id, ck.id))
        assert (sbx.net.netns, sbx.net.address) == (netns, address)
        out = aio(sbx.run(["ip", "-4", "-o", "addr", "show", "eth0"]))
        assert out.exit_code == 0 and f"{address}/30" in out.stdout, out
    # Nothing of the ended boots lingers in connection tracking: a pause with memory is not refused.
    aio(node.pause(sbx.id, memory=True))
    aio(node.resume(sbx.id))
    assert aio(sbx.run("echo ok")).stdout == "ok\n"
