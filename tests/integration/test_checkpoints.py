"""Filesystem checkpoints: take, list, delete; restore rolls back; fork starts copies."""

from __future__ import annotations

from typing import Any

import pytest

from sandlot import errors

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
