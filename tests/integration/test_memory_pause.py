"""Pause with memory to disk: processes, memory, open files and listeners survive; memory is released."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sandlot import errors
from sandlot.node import Limits, cgroups

pytestmark = pytest.mark.integration

# A Python process holding a variable, an open file it keeps writing and a
# listening TCP server on the sandbox's loopback; it answers "state" queries.
SERVER = r"""
import socket, sys
secret = "s3cret-" + "x" * 10
blob = bytearray(range(256)) * (40 << 12)  # ~40 MB of memory that must come back intact
log = open("/tmp/open.log", "w")
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 7000)); srv.listen()
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    c.recv(100)
    log.write("served\n"); log.flush()
    c.sendall(f"{secret} {sum(blob[:1<<20])} {len(blob)}".encode()); c.close()
"""
CLIENT = "import socket; s=socket.create_connection(('127.0.0.1', 7000)); s.send(b'q'); print(s.recv(200).decode())"
EXPECTED = f"s3cret-xxxxxxxxxx {sum(bytearray(range(256)) * 4096)} {256 * (40 << 12)}"


async def _ready(proc: Any) -> None:
    """Until the process prints "ready"."""
    async for _fd, data in proc.output():
        if b"ready" in data:
            return


def test_pause_to_disk_and_resume(node: Any, make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox("debian", "gvisor")
    proc = aio(sbx.start(["python3", "-c", SERVER]))

    aio(_ready(proc))
    pids_before = sbx.runtime.host_pids(sbx.id)
    assert pids_before
    aio(node.pause(sbx.id, memory=True))
    assert sbx.state.value == "paused"
    # Memory and processes are released (their exit goes on behind the pause): soon nothing of the
    # sandbox runs on the host.
    deadline = time.monotonic() + 10
    while sbx.runtime.host_pids(sbx.id) or any(_alive(p) for p in pids_before):
        assert time.monotonic() < deadline, f"still running: {sbx.runtime.host_pids(sbx.id)}"
        time.sleep(0.02)
    with pytest.raises(errors.SandboxStateError):
        aio(sbx.run("true"))
    aio(node.resume(sbx.id))
    assert sbx.state.value == "running"
    res = aio(sbx.run(["python3", "-c", CLIENT], timeout=60))
    assert res.stdout.strip() == EXPECTED, res
    assert aio(sbx.run("cat /tmp/open.log")).stdout == "served\n"
    # A second round trip through disk works the same.
    aio(node.pause(sbx.id, memory=True))
    aio(node.resume(sbx.id))
    assert aio(sbx.run(["python3", "-c", CLIENT], timeout=60)).stdout.strip() == EXPECTED
    assert aio(sbx.run("cat /tmp/open.log")).stdout == "served\nserved\n"
    # Killing a sandbox paused to disk frees everything.
    aio(node.pause(sbx.id, memory=True))
    aio(node.kill(sbx.id))
    assert not sbx.dir.exists()


def test_a_sandbox_resumed_from_memory_keeps_its_cpu_limit(node: Any, make_sandbox: Any, aio: Any) -> None:
    """Its memory is saved and loaded without its CPU limit (the runtime's own work, every task
    stopped); once it runs again, the limit holds."""
    sbx = make_sandbox("debian", "gvisor", limits=Limits(cpu=0.25))
    assert cgroups.cpu_quota(sbx.id) == (25_000, 100_000)
    aio(node.pause(sbx.id, memory=True))
    aio(node.resume(sbx.id))
    assert cgroups.cpu_quota(sbx.id) == (25_000, 100_000)
    cpu = cgroups.controllers(sbx.id)["cpu"]
    procs = {int(p) for p in (cpu / "cgroup.procs").read_text().split()}
    assert set(sbx.runtime.host_pids(sbx.id)) & procs, "the restored sentry is in the limited cgroup"
    usage = cgroups.controllers(sbx.id).get("cpuacct")
    if usage is not None and (usage / "cpuacct.usage").exists():  # cgroup v1: what the quota allowed
        before = int((usage / "cpuacct.usage").read_text())
        aio(sbx.run(["python3", "-c", "import time\nt = time.time()\nwhile time.time() - t < 2: pass"], timeout=60))
        used_s = (int((usage / "cpuacct.usage").read_text()) - before) / 1e9
        assert used_s < 1.0, f"{used_s:.2f} s of CPU in about 2 s at a quarter of a core"
    aio(node.pause(sbx.id, memory=True))
    assert cgroups.cpu_quota(sbx.id) in (None, (25_000, 100_000))  # gone with the saved sandbox, or as it was


def test_container_runtime_refuses_memory_pause_clearly(node: Any, make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox("busybox", "container")
    with pytest.raises(errors.InvalidArgumentError, match="runtime 'container' cannot pause a sandbox with its memory"):
        aio(node.pause(sbx.id, memory=True))
    assert sbx.state.value == "running"
    assert aio(sbx.run("echo still")).stdout == "still\n"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


COUNTING_SERVER = r"""
import socket
n = 0
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 7001)); srv.listen()
print("ready", flush=True)
while True:
    c, _ = srv.accept(); c.recv(10); n += 1
    open("/tmp/n", "w").write(str(n)); c.sendall(str(n).encode()); c.close()
"""
ASK = "import socket; s=socket.create_connection(('127.0.0.1', 7001)); s.send(b'q'); print(s.recv(20).decode())"


def test_checkpoint_with_memory_restores_processes(node: Any, make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox("debian", "gvisor")
    proc = aio(sbx.start(["python3", "-c", COUNTING_SERVER]))

    aio(_ready(proc))
    assert aio(sbx.run(["python3", "-c", ASK])).stdout == "1\n"
    ck = aio(node.checkpoint(sbx.id, "one-served", memory=True))
    assert ck.memory and sbx.state.value == "running"
    assert aio(sbx.run(["python3", "-c", ASK])).stdout == "2\n"  # it runs on after the checkpoint
    assert aio(sbx.run(["python3", "-c", ASK])).stdout == "3\n"
    aio(node.restore(sbx.id, ck.id))
    # Memory and files are the checkpoint's: the server's counter and /tmp/n both say 1.
    assert aio(sbx.run("cat /tmp/n")).stdout == "1"
    assert aio(sbx.run(["python3", "-c", ASK])).stdout == "2\n"
    aio(node.restore(sbx.id, ck.id))  # a memory checkpoint restores more than once
    assert aio(sbx.run(["python3", "-c", ASK])).stdout == "2\n"
    crun = make_sandbox("busybox", "container")
    with pytest.raises(errors.InvalidArgumentError, match="cannot pause a sandbox with its memory"):
        aio(node.checkpoint(crun.id, "mem", memory=True))
    assert node.checkpoints.list(crun.id) == []


EVENT_LOOP_SERVER = """
import asyncio
async def answer(r, w):
    w.write(b"hi"); await w.drain(); w.close()
async def main():
    server = await asyncio.start_server(answer, "0.0.0.0", 8000)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def test_an_event_loop_server_refuses_the_save_and_the_sandbox_runs_on(node: Any, make_sandbox: Any, aio: Any) -> None:
    """gVisor cannot save a listening socket in an epoll set, and a refused save ends the sandbox:
    the pause is refused before anything is saved, naming the server; the sandbox keeps running. A
    server that listens without epoll (a thread per connection) still pauses and resumes."""
    sbx = make_sandbox("debian", "gvisor")
    proc = aio(sbx.start(["python3", "-c", EVENT_LOOP_SERVER]))

    aio(_ready(proc))
    with pytest.raises(errors.SandboxStateError, match=r"python3 \(pid \d+\) on 0\.0\.0\.0:8000"):
        aio(node.pause(sbx.id, memory=True))
    assert sbx.state.value == "running"
    ask = "import socket; print(socket.create_connection(('127.0.0.1', 8000)).recv(10).decode())"
    assert aio(sbx.run(["python3", "-c", ask])).stdout == "hi\n"  # the server, and the sandbox, run on
    aio(node.pause(sbx.id))  # a pause without memory (a freeze) still works
    aio(node.resume(sbx.id))
    assert aio(sbx.run(["python3", "-c", ask])).stdout == "hi\n"

    aio(sbx.run("pkill -f start_server; true"))
    threaded = aio(sbx.start(["python3", "-m", "http.server", "8001", "--bind", "127.0.0.1"]))
    deadline = time.monotonic() + 30
    while 8001 not in [x.port for x in aio(sbx.agent.listeners())]:
        assert time.monotonic() < deadline, "http.server did not listen"
        time.sleep(0.1)
    assert [x.epoll for x in aio(sbx.agent.listeners()) if x.port == 8001] == [False]
    aio(node.pause(sbx.id, memory=True))
    aio(node.resume(sbx.id))
    fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8001/').status)"
    assert aio(sbx.run(["python3", "-c", fetch], timeout=60)).stdout == "200\n"
    assert threaded.pid is not None
