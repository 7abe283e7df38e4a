"""Filesystem images mounted through loop devices set up with ioctls (node/loopdev.py)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandlot import errors
from sandlot.node.loopdev import mount_image, wait_released
from sandlot.node.rootfs import is_mountpoint, make_disk, move_mount, umount

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    d = Path(tempfile.mkdtemp(prefix="sl-loop-", dir="/var/tmp"))
    yield d
    for m in sorted(d.glob("m*")):
        if is_mountpoint(m):
            umount(m)
    subprocess.run(["rm", "-rf", str(d)], check=True)


def _loops_of(image: Path) -> list[str]:
    out = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, check=True).stdout
    return [line.split(":", 1)[0] for line in out.splitlines()]


def test_a_mounted_image_holds_its_files_and_its_loop_device_goes_with_the_unmount(scratch: Path) -> None:
    image, target = scratch / "disk.img", scratch / "m0"
    target.mkdir()
    make_disk(image, 64 << 20)
    mount_image(image, target, "ext4")
    assert is_mountpoint(target)
    (target / "f").write_text("kept")
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    opts = next(line.split()[5] for line in mounts if line.split()[4] == str(target))
    assert "noatime" in opts.split(","), opts
    assert len(_loops_of(image)) == 1
    umount(target)
    assert wait_released(image)  # autoclear: the kernel frees the device just after the unmount
    assert _loops_of(image) == []
    mount_image(image, target, "ext4")  # the same disk again: the file is there
    assert (target / "f").read_text() == "kept"


def test_many_images_mount_at_once_each_on_its_own_device(scratch: Path) -> None:
    pairs = []
    for i in range(8):
        image, target = scratch / f"disk{i}.img", scratch / f"m{i}"
        target.mkdir()
        make_disk(image, 32 << 20)
        pairs.append((image, target))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: mount_image(p[0], p[1], "ext4"), pairs))
    devices = [_loops_of(image) for image, _ in pairs]
    assert all(len(d) == 1 for d in devices) and len({d[0] for d in devices}) == 8
    for i, (_, target) in enumerate(pairs):
        (target / "who").write_text(str(i))
    assert [(t / "who").read_text() for _, t in pairs] == [str(i) for i in range(8)]


def test_a_file_that_is_no_filesystem_fails_clearly_and_leaves_no_loop_device(scratch: Path) -> None:
    image, target = scratch / "junk.img", scratch / "m0"
    target.mkdir()
    image.write_bytes(os.urandom(1 << 20))
    with pytest.raises(errors.InternalError, match=r"mounting .*junk\.img.* failed"):
        mount_image(image, target, "ext4")
    assert not is_mountpoint(target)
    assert wait_released(image) and _loops_of(image) == []
    with pytest.raises(errors.InternalError, match=r"mounting .*missing\.img.* failed"):
        mount_image(scratch / "missing.img", target, "ext4")


@pytest.mark.parametrize("shared", [False, True], ids=["private", "shared-parent"])
def test_a_moved_mount_keeps_its_files_and_leaves_one_mount(scratch: Path, shared: bool) -> None:
    """How a create takes a spare disk's mount (node/rootfs.py move_mount)."""
    root = scratch / "m-parent"
    root.mkdir()
    if shared:  # as under systemd, whose / is shared: MS_MOVE is refused there, a bind does it
        subprocess.run(["mount", "--bind", str(root), str(root)], check=True)
        subprocess.run(["mount", "--make-shared", str(root)], check=True)
    image, source, target = scratch / "disk.img", root / "src", root / "dst"
    source.mkdir()
    target.mkdir()
    make_disk(image, 64 << 20)
    mount_image(image, source, "ext4")
    (source / "f").write_text("moved")
    move_mount(source, target)
    assert not is_mountpoint(source)
    assert (target / "f").read_text() == "moved"
    assert len(_loops_of(image)) == 1
    umount(target)
    assert wait_released(image)  # nothing else held the disk
