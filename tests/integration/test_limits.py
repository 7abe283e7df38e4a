"""cpu, memory, pids and disk limits are enforced, and the sandbox survives its own excess."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest

from sandlot import errors
from sandlot.node import Limits, cgroups
from sandlot.node.runtimes.container import AGENT_THREADS

pytestmark = pytest.mark.integration

HOG = "b=[]\nwhile True: b.append(bytearray(8<<20))"


def test_memory_hog_is_killed_inside_the_sandbox(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("debian", runtime_name, limits=Limits(memory_mb=128))
    other = make_sandbox("busybox", runtime_name)
    res = aio(sbx.run(["python3", "-c", HOG], timeout=60))
    assert res.oom_killed, res
    assert res.signal == 9 and res.exit_code is None
    # Through a shell, the shell reports the kill (137) and the result still says why.
    res = aio(sbx.run(f"python3 -c '{HOG}'", timeout=60))
    assert res.oom_killed and res.exit_code == 137, res
    # The sandbox, its neighbours and the host keep working.
    assert aio(sbx.run("echo still-here")).stdout == "still-here\n"
    assert aio(other.run("echo neighbour")).stdout == "neighbour\n"


def test_memory_hog_in_a_later_child_is_killed(make_sandbox: Any, aio: Any, runtime_name: str, node: Any) -> None:
    """The agent's watchdog sleeps once the sandbox is calm; memory growth the
    agent did not start (a grandchild, seconds later) still wakes it: the node
    sees the host cgroup grow and pokes it (node/limits.py). Under crun the
    kernel's cgroup may get there first."""
    sbx = make_sandbox("debian", runtime_name, limits=Limits(memory_mb=128))
    res = aio(sbx.run(f"sleep 2; python3 -c '{HOG}'", timeout=60))
    assert res.oom_killed and res.exit_code == 137, res
    if runtime_name == "gvisor":
        assert node.limit_monitor.pokes.get(sbx.id, 0) > 0
    assert aio(sbx.run("echo still-here")).stdout == "still-here\n"


def test_fork_bomb_stops_at_the_pids_limit(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name, limits=Limits(pids=64))
    other = make_sandbox("busybox", runtime_name)
    res = aio(sbx.run("bomb() { bomb | bomb & }; bomb; sleep 5; echo survived", timeout=30))
    # crun: the host's pids cgroup makes fork fail and the bomb fizzles (or its shell gives up);
    # the node saw the refusals in pids.events and says so. gVisor: the agent kills a tree that
    # outgrows the limit (pids_limit_hit), or gVisor's own limit refuses the forks first and the
    # bomb fizzles. Either way it stops, quickly.
    if runtime_name == "container":
        assert res.pids_limit_hit, res
    else:
        assert res.pids_limit_hit or "survived" in res.stdout or "can't fork" in res.stderr, res
    assert not res.timed_out, res
    # What is left of the bomb is in the command's process group: kill it there.
    with contextlib.suppress(errors.ProcessNotFoundError):
        aio(sbx.agent.signal(res.pid, 9, group=True))
    deadline = time.monotonic() + 30
    while True:  # the sandbox recovers as soon as the bomb's last processes exit
        try:
            assert aio(sbx.run("echo alive", timeout=30)).stdout == "alive\n"
            break
        except errors.LimitReachedError:
            assert time.monotonic() < deadline, "the sandbox never recovered from the fork bomb"
            time.sleep(0.5)
    assert aio(other.run("echo neighbour")).stdout == "neighbour\n"
    if runtime_name == "container":  # the agent took its threads before the bomb could (go/threads.go)
        threads = aio(sbx.run("ls /proc/1/task | wc -l")).stdout
        assert int(threads) >= AGENT_THREADS, threads


def test_disk_filler_gets_enospc(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name, limits=Limits(disk_mb=64))
    res = aio(sbx.run("dd if=/dev/zero of=/fill bs=1M count=200", timeout=120))
    assert res.exit_code != 0 and "No space left" in res.stderr, res
    # Freeing the space makes the sandbox usable again; the host never saw the writes.
    assert aio(sbx.run("rm /fill && echo ok > /after && cat /after")).stdout == "ok\n"


def test_cpu_limit_is_enforced(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name, limits=Limits(cpu=0.25))
    cg = next(p for p in cgroups.paths(sbx.id) if p.parent.parent.name == "cpuacct")
    before = int((cg / "cpuacct.usage").read_text())
    t0 = time.monotonic()
    aio(sbx.run("timeout 3 sh -c 'while true; do :; done'; true", timeout=30))
    wall = time.monotonic() - t0
    used = (int((cg / "cpuacct.usage").read_text()) - before) / 1e9
    assert used / wall < 0.45, f"used {used:.2f}s of CPU in {wall:.2f}s with a 0.25-core limit"
