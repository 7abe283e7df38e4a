"""Spare disks, made and mounted ahead of creates (node/rootfs.py SpareDisks)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IMAGE_CACHE
from tests.leftovers import assert_clean

pytestmark = pytest.mark.integration


def _mount_ids(path: Path) -> list[str]:
    """The kernel's ids of the mounts at `path` (a moved mount keeps its id)."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return [line.split()[0] for line in f if line.split()[4] == target]


def _spare_mounts(spares: Path) -> dict[str, tuple[list[str], int]]:
    """spare file name -> (ids of the mounts at its .mnt, its inode)."""
    return {p.name: (_mount_ids(p.with_suffix(".mnt")), p.stat().st_ino) for p in spares.glob("*.img") if p.exists()}


def _wait_spares_mounted(spares: Path, n: int, timeout: float = 60) -> dict[str, tuple[list[str], int]]:
    deadline = time.monotonic() + timeout
    while True:
        found = _spare_mounts(spares)
        if len(found) >= n and all(len(ids) == 1 for ids, _ in found.values()):
            return found
        assert time.monotonic() < deadline, f"spares never mounted: {found}"
        time.sleep(0.1)


def test_a_create_takes_a_mounted_spare_whole_and_a_restart_unmounts_them(aio: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("sandboxes need root")
    from sandlot.node import Node, NodeConfig, SandboxSpec
    from sandlot.node.recovery import recover

    data = Path(tempfile.mkdtemp(prefix="sl-spares-", dir="/var/tmp"))
    config = NodeConfig(data_dir=data, images_dir=IMAGE_CACHE)
    node = Node(config)
    spec = SandboxSpec(image="busybox", runtime="gvisor")
    spares = data / "disks" / "spares"
    try:
        aio(node.bundle(), timeout=300)
        first = aio(node.create(spec))
        ready = _wait_spares_mounted(spares, node.spares.keep)
        second = aio(node.create(spec))
        # The second sandbox's disk is one of the spares, and its mount is that spare's own mount, moved.
        disk = data / "disks" / "sandboxes" / f"{second.id}.img"
        taken = [name for name, (_, ino) in ready.items() if ino == disk.stat().st_ino]
        assert len(taken) == 1, (ready, disk.stat().st_ino)
        assert _mount_ids(second.layer.layer) == ready[taken[0]][0]
        assert not (spares / taken[0]).exists() and not (spares / taken[0]).with_suffix(".mnt").exists()
        assert not (second.layer.layer / "lost+found").exists()
        assert aio(second.run(["sh", "-c", "echo kept > /root/f && cat /root/f"])).stdout == "kept\n"
        assert aio(second.run(["sh", "-c", "df -P / | tail -1"])).exit_code == 0
        assert_clean(data, live={first.id, second.id})

        # A node that stops without its close (killed) leaves spares mounted; the next one's
        # recovery unmounts them before anything else, keeps the files, and mounts them again.
        _wait_spares_mounted(spares, node.spares.keep)
        aio(node.kill(first.id))
        aio(node.kill(second.id))
        left = sorted(_spare_mounts(spares))
        aio(node.limit_monitor.close())  # (its tasks, which a killed node's process would take along)
        aio(node.metrics.close())
        node = Node(config)
        aio(node.bundle(), timeout=300)
        aio(recover(node, {}))
        assert sorted(_spare_mounts(spares)) == left
        assert all(ids == [] for ids, _ in _spare_mounts(spares).values())
        third = aio(node.create(spec))
        assert aio(third.run(["sh", "-c", "ls -a /root"])).exit_code == 0
        _wait_spares_mounted(spares, node.spares.keep)
        aio(node.kill(third.id))
        aio(node.close())
        assert_clean(data)
        assert not [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(data) in m]
    finally:
        aio(node.close())
        shutil.rmtree(data, ignore_errors=True)
