"""Create and kill: writable layers are private, and kill leaves nothing on the host."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sandlot import errors
from sandlot.node import cgroups

pytestmark = pytest.mark.integration


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sxk", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0]) * 1024


def _host_traces(node: Any, sbx: Any) -> dict[str, Any]:
    with open("/proc/self/mountinfo") as f:
        mounts = [line for line in f if sbx.id in line]
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return {
        "mounts": mounts,
        "cgroups": cgroups.paths(sbx.id),
        "files": sbx.dir.exists(),
        "processes": [line for line in procs.splitlines() if sbx.id in line],
        "runtime state": list((node.state_dir).rglob(f"*{sbx.id}*")),
    }


def _assert_clean(node: Any, sbx: Any) -> None:
    deadline = time.monotonic() + 10
    while True:
        traces = _host_traces(node, sbx)
        if not any(traces.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not any(traces.values()), traces


def test_writable_layers_are_private_and_cheap(make_sandbox: Any, aio: Any, node: Any, runtime_name: str) -> None:
    a = make_sandbox("debian", runtime_name)
    b = make_sandbox("debian", runtime_name)
    aio(a.run("echo mine > /etc/only-in-a; rm /etc/hostname"))
    assert aio(b.run("cat /etc/only-in-a")).exit_code != 0
    assert aio(b.run("test -e /etc/hostname && echo yes")).stdout == "yes\n"
    assert not (a.image.rootfs / "etc/only-in-a").exists() and (a.image.rootfs / "etc/hostname").exists()
    # Starting a sandbox never copies the image.
    assert _du(a.image.rootfs) > 100 << 20
    assert _du(a.layer.upper) < 5 << 20


def test_kill_leaves_nothing_behind(make_sandbox: Any, aio: Any, node: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name)
    aio(sbx.start("sleep 1000 & sleep 1000"))
    pids = sbx.runtime.host_pids(sbx.id)
    assert pids and any(_host_traces(node, sbx).values())
    aio(node.kill(sbx.id))
    _assert_clean(node, sbx)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)
    with pytest.raises(errors.SandboxStateError, match="killed"):
        aio(sbx.run("true"))
    with pytest.raises(errors.SandboxNotFoundError):
        aio(node.kill(sbx.id))


def test_crashed_init_is_cleaned_up(make_sandbox: Any, aio: Any, node: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name)
    # Kill the sandbox from outside, as a crash would: every host process of it.
    for pid in sbx.runtime.host_pids(sbx.id):
        with contextlib.suppress(ProcessLookupError):  # gone with the ones killed before it (the gofer)
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while sbx.state.value != "killed" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sbx.state.value == "killed"
    _assert_clean(node, sbx)
    with pytest.raises(errors.SandboxStateError, match="killed"):
        aio(sbx.run("true"))


def test_network_none_cannot_reach_host_loopback(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        sbx = make_sandbox("debian", runtime_name)
        code = (
            "import socket\ns=socket.socket()\ns.settimeout(2)\n"
            f"try:\n    s.connect(('127.0.0.1', {port}))\n    print('REACHED')\n"
            "except OSError as e:\n    print('blocked', e)"
        )
        res = aio(sbx.run(["python3", "-c", code]))
        assert "blocked" in res.stdout, res
        res = aio(sbx.run("cat /proc/net/dev"))
        ifaces = {line.split(":")[0].strip() for line in res.stdout.splitlines()[2:]}
        assert ifaces <= {"lo"}, ifaces
    finally:
        srv.close()


def test_unknown_image_and_runtime_are_clear_errors(node: Any, aio: Any) -> None:
    from sandlot.node import SandboxSpec

    with pytest.raises(errors.ImageNotFoundError, match="nope"):
        aio(node.create(SandboxSpec(image="nope")))
    with pytest.raises(errors.InvalidArgumentError, match="firecracker"):
        aio(node.create(SandboxSpec(image="busybox", runtime="firecracker")))
    before = set(os.listdir(node.sandboxes_dir)) if node.sandboxes_dir.exists() else set()
    with pytest.raises(errors.InvalidArgumentError, match="memory_mb"):
        aio(
            node.create(
                SandboxSpec(image="busybox", limits=__import__("sandlot.node", fromlist=["Limits"]).Limits(memory_mb=1))
            )
        )
    after = set(os.listdir(node.sandboxes_dir)) if node.sandboxes_dir.exists() else set()
    assert before == after


def test_pause_freezes_and_resume_continues(make_sandbox: Any, aio: Any, node: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name)
    proc = aio(sbx.start("while true; do echo tick >> /ticks; sleep 0.05; done"))
    aio(proc.detach())
    time.sleep(0.5)

    def ticks() -> int:
        return int(aio(sbx.run("wc -l < /ticks")).stdout)

    before = ticks()
    aio(node.pause(sbx.id))
    assert sbx.state.value == "paused"
    with pytest.raises(errors.SandboxStateError, match="paused"):
        aio(sbx.run("true"))
    with pytest.raises(errors.SandboxStateError, match="cannot pause"):
        aio(node.pause(sbx.id))
    time.sleep(2)  # 40 ticks if anything still ran
    aio(node.resume(sbx.id))
    after = ticks()
    assert after - before < 20, (before, after)
    time.sleep(0.5)
    assert ticks() > after  # it continues where it stopped
    with pytest.raises(errors.SandboxStateError, match="cannot resume"):
        aio(node.resume(sbx.id))
    # A paused sandbox is killed as cleanly as a running one.
    aio(node.pause(sbx.id))
    aio(node.kill(sbx.id))
    _assert_clean(node, sbx)
