"""Where a sandbox can write: its disk (/tmp included), a small /dev and /dev/shm, nothing of the host.

Every path a sandbox can write outside volumes is either in its writable layer
(counted against its disk limit, carried by checkpoints, restore, fork, pause
with memory and hibernation) or a tmpfs of a fixed size: filling any of them
ends in ENOSPC (or EROFS) and the sandbox lives, in both runtimes.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from sandlot.node import Limits

pytestmark = pytest.mark.integration

FILL = "dd if=/dev/zero of={path} bs=1M count={mb} 2>&1; echo rc=$?"


def test_tmp_lives_on_the_disk_and_checkpoints_carry_it(
    node: Any, make_sandbox: Any, aio: Any, runtime_name: str
) -> None:
    sbx = make_sandbox("busybox", runtime_name, limits=Limits(disk_mb=96))
    # /tmp is the disk's: same filesystem as /, of the disk's size (not an unbounded tmpfs).
    df = aio(sbx.run("df -k /tmp / | tail -n 2")).stdout.split("\n")
    assert df[0].split()[1] == df[1].split()[1], df
    aio(sbx.agent.write("/tmp/data.txt", b"hello"))
    assert aio(sbx.run("mkdir -p /tmp/d /var/tmp && echo kept > /tmp/d/f && echo v > /var/tmp/v")).exit_code == 0
    ck = aio(node.checkpoint(sbx.id, "clean"))
    aio(sbx.agent.write("/tmp/data.txt", b"oops"))
    aio(node.restore(sbx.id, ck.id))
    assert aio(sbx.run("cat /tmp/data.txt /tmp/d/f /var/tmp/v")).stdout == "hellokept\nv\n"
    (kid,) = aio(node.fork(ck.id, 1))
    try:
        assert aio(kid.run("cat /tmp/data.txt")).stdout == "hello"
    finally:
        aio(node.kill(kid.id))
        node.checkpoints.delete(ck.id)


def test_filling_any_path_is_enospc_and_the_sandbox_lives(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name, limits=Limits(memory_mb=128, disk_mb=64))
    run_dir = sbx.dir / "run"
    before = sorted(os.listdir(run_dir))
    # Each is bigger than its filesystem: /tmp and / share the 64 MB disk, /dev/shm is a
    # quarter of the memory (32 MB), /dev 1 MB; memory_mb=128 would die on 160 MB of tmpfs.
    for path, mb in (("/tmp/fill", 100), ("/fill", 100), ("/dev/shm/fill", 64), ("/dev/fill", 8)):
        out = aio(sbx.run(FILL.format(path=path, mb=mb), timeout=120)).stdout
        assert "No space left on device" in out and "rc=1" in out, (path, out)
    assert aio(sbx.run("echo alive")).stdout == "alive\n"
    # Full filesystems are the sandbox's own problem: freeing them makes it whole again.
    assert (
        aio(sbx.run("rm /tmp/fill /fill /dev/shm/fill /dev/fill && echo ok > /tmp/after && cat /tmp/after")).stdout
        == "ok\n"
    )
    # The agent's run directory lies on the host's disk, so it is read-only inside.
    out = aio(sbx.run(FILL.format(path="/.sandlot/run/fill", mb=1))).stdout
    assert "Read-only file system" in out, out
    assert sorted(os.listdir(run_dir)) == before
    # Terminals still work with the sized /dev (gVisor's is remade by the agent).
    res = aio(sbx.run("echo x > /dev/null && head -c 3 /dev/urandom | wc -c && ls /dev/pts/ptmx"))
    assert res.stdout.split() == ["3", "/dev/pts/ptmx"], res


def test_no_process_keeps_cap_sys_admin(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    # Under gVisor the agent holds CAP_SYS_ADMIN only to mount /dev, then drops it for good,
    # from every one of its threads (the sets are per thread).
    sbx = make_sandbox("busybox", runtime_name)
    status = aio(sbx.run("grep Cap /proc/1/task/*/status /proc/self/status")).stdout
    lines = [line for line in status.splitlines() if "Amb" not in line]
    masks = [int(line.split()[-1], 16) for line in lines]
    threads = {line.split("/")[4] for line in lines if line.startswith("/proc/1/task/")}
    assert len(threads) > 1, status  # the Go runtime's threads, each checked (the agent may make more later)
    assert len(masks) == 4 * (len(threads) + 1) and not any(m & (1 << 21) for m in masks), status


def test_pause_with_memory_and_hibernation_keep_tmp(node: Any, make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox("busybox", "gvisor")
    aio(sbx.run("echo one > /tmp/a && echo shm > /dev/shm/s"))
    aio(node.pause(sbx.id, memory=True))
    aio(node.resume(sbx.id))
    assert aio(sbx.run("cat /tmp/a /dev/shm/s")).stdout == "one\nshm\n"
    aio(sbx.run("echo two > /tmp/b"))
    aio(node.hibernate(sbx.id))
    aio(node.wake(sbx.id))
    assert aio(sbx.run("cat /tmp/a /tmp/b && df -k /dev/shm | tail -n 1")).stdout.startswith("one\ntwo\n")
    # Hibernated to disk and back, /dev keeps its limit.
    out = aio(sbx.run(FILL.format(path="/dev/fill", mb=8))).stdout
    assert "No space left on device" in out, out
