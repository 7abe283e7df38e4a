"""A killed sandbox leaves nothing on the host: no process, mount, loop device, cgroup, netns, nftables
table, interface, runtime state or disk file; nor do a deleted checkpoint and volume.

Only what belongs to the sandboxes made here is looked at (other sandboxes may
be running on the same host at the same time).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sandlot.node import cgroups
from sandlot.node.volumes import VolumeMount

pytestmark = pytest.mark.integration


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True).stdout


def _mentions(path: Path, text: str) -> bool:
    try:
        return text in path.read_text()
    except OSError:
        return False


def leftovers(node: Any, sandbox_id: str, extra_files: list[Path]) -> list[str]:
    """Everything of `sandbox_id` still on the host (empty when it is all gone)."""
    found: list[str] = []
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount: {line.split()[4]}" for line in mounts.splitlines() if sandbox_id in line]
    loops = [line for line in _run("losetup", "-a").splitlines() if sandbox_id in line]
    if loops:  # say who still holds its filesystem (a mount namespace copied while it was mounted)
        holders = [p.parent.name for p in Path("/proc").glob("[0-9]*/mountinfo") if _mentions(p, sandbox_id)]
        found += [f"loop device: {line} (held in the mount namespaces of pids {holders})" for line in loops]
    found += [f"cgroup: {p}" for p in cgroups.paths(sandbox_id)]
    if Path(f"/run/netns/sandlot-{sandbox_id}").exists():
        found.append(f"netns sandlot-{sandbox_id}")
    table = "sandlot_" + sandbox_id.replace("-", "_")
    if table in _run("nft", "list", "tables"):
        found.append(f"nftables table {table}")
    if f"sl{sandbox_id[-13:]}" in _run("ip", "-o", "link", "show"):
        found.append(f"interface sl{sandbox_id[-13:]}")
    for state in (node.state_dir / "runsc", node.state_dir / "crun"):
        found += [f"runtime state: {p}" for p in state.glob(f"*{sandbox_id}*")] if state.is_dir() else []
    for path in [node.sandboxes_dir / sandbox_id, node.disks.disk_of(sandbox_id), *extra_files]:
        if os.path.lexists(path):
            found.append(f"file: {path}")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if sandbox_id.encode() in cmdline:
                found.append(f"process {pid}: {cmdline[:120]!r}")
    return found


@pytest.mark.parametrize("runtime", ["gvisor", "container"])
def test_kill_leaves_nothing_behind(node: Any, aio: Any, make_sandbox: Any, runtime: str) -> None:
    vol = node.volumes.create(f"left-{runtime}", owner="tests", size_mb=16)
    sbx = make_sandbox("busybox", runtime, network={"mode": "egress"}, volumes=[VolumeMount(vol.id, "/v")])
    aio(sbx.run("echo x > /v/f && echo y > /tmp/f"))
    ck = aio(node.checkpoint(sbx.id, "before-kill"))
    if runtime == "gvisor":  # a round trip of its memory through disk, too
        aio(node.pause(sbx.id, memory=True))
        aio(node.resume(sbx.id))
    aio(node.restore(sbx.id, ck.id))
    assert leftovers(node, sbx.id, []) != []  # the check sees a live sandbox's things
    aio(node.kill(sbx.id))
    assert leftovers(node, sbx.id, []) == []
    # The checkpoint outlives it until deleted; the volume until deleted; then they are gone too.
    assert ck.dir.exists()
    node.checkpoints.delete(ck.id)
    node.delete_volume(vol.id)
    assert not os.path.lexists(ck.dir) and not os.path.lexists(vol.dir)
    assert [line for line in _run("losetup", "-a").splitlines() if vol.id in line] == []
    assert vol.id not in Path("/proc/self/mountinfo").read_text()
