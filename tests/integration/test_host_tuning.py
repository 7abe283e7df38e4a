"""A node tunes its host's kernel for sandbox churn (host_tuning.py): cgroup2's `favordynmods`
and expedited RCU grace periods.

Both are host-wide, so each test puts back what it found.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandlot.node import Node, NodeConfig, cgroups, host_tuning
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
def untuned() -> Iterator[Path]:
    """The host with neither setting; both put back afterwards as they were."""
    if os.geteuid() != 0:
        pytest.skip("tuning the host's kernel needs root")
    found = _cgroup2()
    if found is None:
        pytest.skip("this host mounts no cgroup2 hierarchy")
    if not host_tuning.RCU_EXPEDITED.exists():
        pytest.skip(f"this kernel has no {host_tuning.RCU_EXPEDITED}")
    where, _, options = found
    expedited = host_tuning.RCU_EXPEDITED.read_text()
    try:
        _remount(where, favor=False)
    except OSError as exc:
        pytest.skip(f"this kernel cannot change cgroup2's options here: {exc}")
    host_tuning.RCU_EXPEDITED.write_text("0")
    yield where
    _remount(where, favor="favordynmods" in options)
    host_tuning.RCU_EXPEDITED.write_text(expedited)


def _new_node(loop: Any, **config: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="sandlot-tune-", dir="/var/tmp") as d:
        node = Node(NodeConfig(data_dir=Path(d), images_dir=IMAGE_CACHE, **config))
        loop.run(node.close())


def test_a_node_tunes_the_host_and_keeps_cgroup2s_other_options(untuned: Path, loop: Any) -> None:
    before = _cgroup2()
    assert before is not None and "favordynmods" not in before[2]
    _new_node(loop)
    after = _cgroup2()
    assert after is not None
    assert "favordynmods" in after[2]
    assert after[1] == before[1]  # nosuid, nodev, ... as they were
    assert sorted(set(after[2]) - {"favordynmods"}) == sorted(before[2])  # nsdelegate and the rest kept
    assert host_tuning.RCU_EXPEDITED.read_text().strip() == "1"
    assert host_tuning.tune() == []  # all set already: nothing to do, nothing to report


def test_a_node_told_not_to_leaves_the_host_as_it_is(untuned: Path, loop: Any) -> None:
    _new_node(loop, tune_host=False)
    after = _cgroup2()
    assert after is not None and "favordynmods" not in after[2]
    assert host_tuning.RCU_EXPEDITED.read_text().strip() == "0"


def test_rcu_is_expedited_unless_the_kernel_forces_normal_grace_periods(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expedited, normal = tmp_path / "rcu_expedited", tmp_path / "rcu_normal"
    monkeypatch.setattr(host_tuning, "RCU_EXPEDITED", expedited)
    monkeypatch.setattr(host_tuning, "RCU_NORMAL", normal)
    expedited.write_text("0\n")
    normal.write_text("0\n")
    assert host_tuning.expedite_rcu() is None
    assert expedited.read_text() == "1"
    normal.write_text("1\n")
    expedited.write_text("0\n")
    assert "rcu_normal" in (host_tuning.expedite_rcu() or "")
    assert expedited.read_text() == "0\n"  # left alone: it would change nothing
    normal.unlink()  # a kernel without rcu_normal, and here without rcu_expedited either
    monkeypatch.setattr(host_tuning, "RCU_EXPEDITED", tmp_path / "gone" / "rcu_expedited")
    assert "cannot set" in (host_tuning.expedite_rcu() or "")


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
