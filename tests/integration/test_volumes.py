"""Volumes: shared between sandboxes and runtimes, read-only where asked, outliving sandboxes."""

from __future__ import annotations

from typing import Any

import pytest

from sandlot import errors
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
        assert (vol.data / "a").read_text() == "from-gvisor\n"
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
