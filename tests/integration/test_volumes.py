"""Volumes: shared between sandboxes and runtimes, read-only where asked, outliving sandboxes."""

from __future__ import annotations

from typing import Any

import pytest

from sandlot import errors
from sandlot.node.rootfs import is_mountpoint
from sandlot.node.volumes import VolumeMount

pytestmark = pytest.mark.integration


def test_volume_shared_read_only_and_outliving(node: Any, make_sandbox: Any, aio: Any) -> None:
    vol = node.volumes.create("shared-data", owner="tests")
    try:
        writer = make_sandbox("busybox", "gvisor", volumes=[VolumeMount(vol.id, "/data")])
        other = make_sandbox("busybox", "container", volumes=[VolumeMount(vol.id, "/mnt/in")])
        reader = make_sandbox("busybox", "gvisor", volumes=[VolumeMount(vol.id, "/ro", read_only=True)])
        aio(writer.run("echo from-gvisor > /data/a"))
        assert aio(other.run("cat /mnt/in/a")).stdout == "from-gvisor\n"
        aio(other.run("echo from-crun > /mnt/in/b"))
        assert aio(writer.run("cat /data/b")).stdout == "from-crun\n"
        assert aio(reader.run("cat /ro/a")).stdout == "from-gvisor\n"
        res = aio(reader.run("echo no > /ro/c"))
        assert res.exit_code != 0 and "Read-only file system" in res.stderr, res
        with pytest.raises(errors.ConflictError, match="mounted by"):
            node.delete_volume(vol.id)
        # A checkpoint's fork mounts the same volumes; the data outlives every sandbox.
        ck = aio(node.checkpoint(writer.id, "with-volume"))
        (kid,) = aio(node.fork(ck.id, 1))
        assert aio(kid.run("cat /data/b")).stdout == "from-crun\n"
        for s in (writer, other, reader, kid):
            aio(node.kill(s.id))
        node.checkpoints.delete(ck.id)
        assert not is_mountpoint(vol.data)  # its disk is mounted only while a sandbox uses it
        again = make_sandbox("busybox", "gvisor", volumes=[VolumeMount(vol.id, "/data")])
        assert aio(again.run("cat /data/a /data/b")).stdout == "from-gvisor\nfrom-crun\n"
        aio(node.kill(again.id))
    finally:
        node.delete_volume(vol.id)
    assert not vol.dir.exists()


def test_volume_errors(node: Any, aio: Any) -> None:
    from sandlot.node import SandboxSpec

    vol = node.volumes.create("errs", owner="tests")
    try:
        with pytest.raises(errors.ConflictError, match="already exists"):
            node.volumes.create("errs", owner="tests")
        with pytest.raises(errors.InvalidArgumentError, match="volume name"):
            node.volumes.create("../x", owner="tests")
        for path in ("relative", "/a/../b", "/proc/x", "/"):
            with pytest.raises(errors.InvalidArgumentError):
                aio(node.create(SandboxSpec(image="busybox", volumes=[VolumeMount(vol.id, path)])))
        with pytest.raises(errors.VolumeNotFoundError):
            aio(node.create(SandboxSpec(image="busybox", volumes=[VolumeMount("vol-0000000000000000", "/d")])))
        assert node.list_sandboxes() == [] or all(s.spec.volumes == [] for s in node.list_sandboxes())
    finally:
        node.delete_volume(vol.id)


def test_a_full_volume_is_enospc_and_the_sandbox_lives(node: Any, make_sandbox: Any, aio: Any) -> None:
    vol = node.volumes.create("small", owner="tests", size_mb=32)
    try:
        assert vol.size_mb == 32 and node.volumes.get(vol.id).size_mb == 32
        for runtime in ("gvisor", "container"):
            sbx = make_sandbox("busybox", runtime, volumes=[VolumeMount(vol.id, "/v")])
            assert aio(sbx.run("ls -A /v")).stdout == ""  # empty: no lost+found
            res = aio(sbx.run("dd if=/dev/zero of=/v/fill bs=1M count=64 2>&1; echo rc=$?", timeout=120))
            assert "No space left on device" in res.stdout and "rc=1" in res.stdout, res
            assert aio(sbx.run("rm /v/fill && echo alive")).stdout == "alive\n"
            aio(node.kill(sbx.id))
            assert not is_mountpoint(vol.data)
        with pytest.raises(errors.InvalidArgumentError, match="size_mb"):
            node.volumes.create("tiny", owner="tests", size_mb=1)
    finally:
        node.delete_volume(vol.id)
    assert not vol.dir.exists()


def test_volumes_from_before_sizes_still_mount(node: Any, make_sandbox: Any, aio: Any) -> None:
    import json
    import shutil

    legacy = node.volumes.dir / "vol-legacy0000000000"
    (legacy / "data").mkdir(parents=True)
    (legacy / "data" / "old").write_text("kept\n")
    meta = {"id": legacy.name, "name": "legacy", "owner": "tests", "created_at": 1.0}
    (legacy / "volume.json").write_text(json.dumps(meta))
    try:
        assert node.volumes.get(legacy.name).size_mb is None
        sbx = make_sandbox("busybox", "gvisor", volumes=[VolumeMount(legacy.name, "/v")])
        assert aio(sbx.run("cat /v/old")).stdout == "kept\n"
        aio(node.kill(sbx.id))
        node.delete_volume(legacy.name)
        assert not legacy.exists()
    finally:
        shutil.rmtree(legacy, ignore_errors=True)
