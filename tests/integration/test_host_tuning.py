"""A node makes cgroup moves cheap on its host: cgroup2's `favordynmods` (cgroups.favor_moves).

Every sandbox start moves processes between cgroups, and without the option the kernel
makes the first move after a quiet moment wait for an RCU grace period. The option is
host-wide, so each test puts back what it found.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandlot.node import Node, NodeConfig, cgroups
from tests.conftest import IMAGE_CACHE

# mount(2) flags for the per-mount options a remount must hand back, or lose
_MOUNT_FLAGS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
_MS_REMOUNT = 32


def _cgroup2() -> tuple[Path, list[str], list[str]] | None:
    """The host's cgroup2 mount point, its per-mount options and its superblock options."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount, _, source = line.partition(" - ")
        fields, fs = mount.split(), source.split()
        if fs[0] == "cgroup2" and Path(fields[4]) in (cgroups.ROOT, cgroups.ROOT / "unified"):
            return Path(fields[4]), fields[5].split(","), fs[2].split(",")
    return None


def _remount(where: Path, favor: bool) -> None:
    """Remount the hierarchy with or without the option, its other options unchanged."""
    found = _cgroup2()
    assert found is not None
    _, per_mount, options = found
    flags = _MS_REMOUNT
    for o in per_mount:
        flags |= _MOUNT_FLAGS.get(o, 0)
    data = [o for o in options if o not in ("rw", "ro", "favordynmods")] + (["favordynmods"] if favor else [])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"cgroup2", bytes(where), b"cgroup2", flags, ",".join(data).encode()) != 0:
        raise OSError(ctypes.get_errno(), f"remounting {where}")


@pytest.fixture
def cgroup2() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("remounting the host's cgroup2 needs root")
    found = _cgroup2()
    if found is None:
        pytest.skip("this host mounts no cgroup2 hierarchy")
    where, _, options = found
    try:
        _remount(where, favor=False)
    except OSError as exc:
        pytest.skip(f"this kernel cannot change cgroup2's options here: {exc}")
    yield where
    _remount(where, favor="favordynmods" in options)


def _new_node(loop: Any, **config: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="sandlot-tune-", dir="/var/tmp") as d:
        node = Node(NodeConfig(data_dir=Path(d), images_dir=IMAGE_CACHE, **config))
        loop.run(node.close())


def test_a_node_sets_favordynmods_and_keeps_the_other_options(cgroup2: Path, loop: Any) -> None:
    before = _cgroup2()
    assert before is not None and "favordynmods" not in before[2]
    _new_node(loop)
    after = _cgroup2()
    assert after is not None
    assert "favordynmods" in after[2]
    assert after[1] == before[1]  # nosuid, nodev, ... as they were
    assert sorted(set(after[2]) - {"favordynmods"}) == sorted(before[2])  # nsdelegate and the rest kept
    assert cgroups.favor_moves() is None  # already set: nothing to do, nothing to report


def test_a_node_told_not_to_leaves_the_host_as_it_is(cgroup2: Path, loop: Any) -> None:
    _new_node(loop, favor_cgroup_moves=False)
    after = _cgroup2()
    assert after is not None and "favordynmods" not in after[2]


def test_the_mount_is_found_beside_v1_or_alone_and_names_are_unescaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = tmp_path / "mountinfo"
    monkeypatch.setattr(cgroups, "MOUNTINFO", info)
    v1 = "30 25 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    elsewhere = "40 25 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n"
    info.write_text(v1 + elsewhere)
    assert cgroups._cgroup2_mount() is None
    assert "no cgroup2 hierarchy" in (cgroups.favor_moves() or "")
    info.write_text(v1 + "41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    assert cgroups._cgroup2_mount() == (cgroups.ROOT / "unified", ["rw", "nsdelegate"])
    info.write_text("26 1 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,favordynmods\n")
    assert cgroups._cgroup2_mount() == (cgroups.ROOT, ["rw", "favordynmods"])
    assert cgroups.favor_moves() is None  # set already: no remount tried
    monkeypatch.setattr(cgroups, "ROOT", Path("/mnt/cg two"))
    info.write_text(elsewhere)  # mountinfo writes a space in a path as \040
    assert cgroups._cgroup2_mount() == (Path("/mnt/cg two"), ["rw"])
