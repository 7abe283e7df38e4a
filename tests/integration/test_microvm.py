"""The microvm runtime on real QEMU: under TCG here (this host's /dev/kvm cannot boot a Linux guest).

A boot costs seconds under TCG, so the module shares one VM (busybox, an egress
network, small limits) across the tests of commands, files, the terminal,
limits, network, pause and memory pause; checkpoint/restore/fork and the warm
pool boot what they must, and the last test kills the shared VM and checks
that nothing of it is left on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.node import Limits, SandboxSpec, cgroups
from sandlot.node.images import ImageConfig
from sandlot.node.microvm import guest
from sandlot.node.microvm.channels import qmp
from sandlot.node.netpolicy import NetworkPolicy
from sandlot.node.sandbox import State
from sandlot.node.volumes import VolumeMount
from tests.netlab import Internet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BOOT_TIMEOUT = 300  # a TCG boot on a loaded 2-core host


@pytest.fixture(scope="module")
def vm(node: Any, aio: Any, internet: Internet) -> Iterator[Any]:
    policy = NetworkPolicy.parse({"mode": "egress", "allow": [f"{internet.web}/32"]})
    limits = Limits(cpu=1, memory_mb=128, pids=64, disk_mb=64)
    spec = SandboxSpec(image="busybox", runtime="microvm", limits=limits, network=policy, hostname="vm1")
    sbx = aio(node.create(spec), timeout=BOOT_TIMEOUT)
    yield sbx
    with contextlib.suppress(errors.SandlotError):
        aio(node.kill(sbx.id))


async def _read_all(stream: Any) -> bytes:
    return b"".join([chunk async for chunk in stream])


def _read_until(aio: Any, it: Any, marker: bytes) -> bytes:
    async def read() -> bytes:
        acc = bytearray()
        async for _fd, data in it:
            acc += data
            if marker in acc:
                break
        return bytes(acc)

    return bytes(aio(read(), timeout=60))


def test_a_real_kernel_runs_the_commands(vm: Any, aio: Any) -> None:
    res = aio(vm.run("uname -r; hostname; cat /proc/1/cmdline; echo; nproc; echo oops >&2; exit 3"))
    kernel, host, init, cpus = res.stdout.splitlines()
    assert kernel.endswith("-cloud-amd64") and kernel != os.uname().release  # its own kernel, not the host's
    assert host == "vm1" and init.startswith("/.sandlot/sandlot-agent") and cpus == "1"
    assert res.exit_code == 3 and res.stderr == "oops\n"
    argv = ["sh", "-c", 'read x; echo "$x $GREETING $(pwd)"']
    res = aio(vm.run(argv, env={"GREETING": "hi"}, cwd="/tmp", stdin=b"in\n"))
    assert res.stdout == "in hi /tmp\n", res


def test_files_and_watch(vm: Any, aio: Any) -> None:
    agent = vm.agent
    aio(agent.write("/data/a.txt", b"hello vm"))
    assert aio(_read_all(agent.read("/data/a.txt"))) == b"hello vm"
    assert [e.name for e in aio(agent.list("/data"))] == ["a.txt"]
    aio(agent.rename("/data/a.txt", "/data/b.txt"))
    assert aio(vm.run("cat /data/b.txt")).stdout == "hello vm"
    with pytest.raises(errors.SandboxFileNotFoundError):
        aio(_read_all(agent.read("/data/a.txt")))
    watch = aio(agent.watch("/data"))

    async def first_event() -> Any:
        async for ev in watch.events():
            return ev
        return None

    pending = asyncio.run_coroutine_threadsafe(first_event(), vm.conn._server.get_loop())
    time.sleep(0.3)
    aio(vm.run("echo x > /data/c.txt"))
    ev = pending.result(30)
    assert ev is not None and ev.path.endswith("c.txt")
    aio(watch.close())


def test_terminal(vm: Any, aio: Any) -> None:
    proc = aio(vm.start(["/bin/sh", "-i"], pty=p.PtySize(rows=30, cols=100)))
    aio(vm.agent.send_input(proc.pid, b"stty size; tty\n"))
    it = proc.output()
    out = _read_until(aio, it, b"/dev/pts/")
    assert b"30 100" in out
    aio(vm.agent.resize(proc.pid, 50, 120))
    aio(vm.agent.send_input(proc.pid, b"stty size\nexit 0\n"))
    assert b"50 120" in _read_until(aio, it, b"50 120")


def test_limits_inside_and_the_vm_lives(vm: Any, aio: Any) -> None:
    # Disk: ENOSPC inside, and the VM carries on once the space is freed.
    res = aio(vm.run("dd if=/dev/zero of=/fill bs=1M count=200", timeout=120))
    assert res.exit_code != 0 and "No space left" in res.stderr, res
    assert aio(vm.run("rm /fill && echo ok > /after && cat /after")).stdout == "ok\n"
    # Memory: a process over the limit is killed, not the VM.
    hog = """awk 'BEGIN { s = sprintf("%1048576s", ""); while (1) a[i++] = s }'"""  # 1 MB more each turn
    res = aio(vm.run(hog, timeout=120))
    assert res.oom_killed and res.signal == 9, res
    assert aio(vm.run("echo still-here")).stdout == "still-here\n"
    # pids: a fork bomb stops at the limit.
    res = aio(vm.run("bomb() { bomb | bomb & }; bomb; sleep 5; echo survived", timeout=120))
    assert res.pids_limit_hit or "survived" in res.stdout, res
    with contextlib.suppress(errors.ProcessNotFoundError):
        aio(vm.agent.signal(res.pid, 9, group=True))
    deadline = time.monotonic() + 60
    while True:
        try:
            assert aio(vm.run("echo alive", timeout=60)).stdout == "alive\n"
            break
        except errors.LimitReachedError:
            assert time.monotonic() < deadline, "the VM never recovered from the fork bomb"
            time.sleep(0.5)
    # cpu: one vCPU, and the host cgroup holds QEMU to one core.
    cpu = next(c for c in cgroups.paths(vm.id) if c.parent.parent.name == "cpu")
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "100000"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_memory_the_guest_frees_goes_back_to_the_host(vm: Any, aio: Any) -> None:
    (qemu,) = vm.runtime.host_pids(vm.id)
    # A process touches 60 MB and exits: the guest frees it, its balloon reports it, QEMU drops it.
    touch = """awk 'BEGIN { s = sprintf("%1048576s", ""); for (i = 0; i < 60; i++) a[i] = s }'"""
    assert aio(vm.run(touch, timeout=120)).exit_code == 0
    peak = _rss_mb(qemu)
    deadline = time.monotonic() + 60
    while _rss_mb(qemu) > peak - 30:
        assert time.monotonic() < deadline, f"QEMU's RSS stayed at {_rss_mb(qemu):.0f} MB (peak {peak:.0f} MB)"
        time.sleep(0.5)


def _http_get(aio: Any, vm: Any, address: str) -> Any:
    # busybox's nc (its static wget crashes on Debian 12, on the host too)
    return aio(vm.run(f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {address} 80", timeout=60))


def test_network_policy_applies_to_the_guest(vm: Any, aio: Any, internet: Internet) -> None:
    ok = _http_get(aio, vm, internet.web)
    assert ok.exit_code == 0 and internet.web in ok.stdout, ok
    for blocked in (internet.other, internet.gateway):  # not allowed; the host itself
        res = _http_get(aio, vm, blocked)
        assert blocked not in res.stdout, res


def test_pause_and_pause_with_memory(node: Any, vm: Any, aio: Any) -> None:
    # The count is renamed into place: `echo > /tmp/n` empties the file before it writes, and a read
    # in between (the guest runs emulated, slowly) saw an empty file.
    job = aio(vm.start("n=0; while true; do n=$((n+1)); echo $n > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.2; done"))
    aio(job.detach())
    time.sleep(1)
    aio(node.pause(vm.id))
    assert vm.state is State.PAUSED
    status = aio(qmp(vm.dir / "run" / "qmp.sock", "query-status"))
    assert status["status"] == "paused", status  # QEMU's vCPUs stopped
    aio(node.resume(vm.id))
    assert aio(vm.run("cat /tmp/n")).exit_code == 0
    # With memory: QEMU's state goes to a file and QEMU exits; the processes come back as they were.
    qemu = vm.runtime.host_pids(vm.id)
    aio(node.pause(vm.id, memory=True), timeout=BOOT_TIMEOUT)
    deadline = time.monotonic() + 10  # (QEMU's exit goes on behind the pause)
    while any(os.path.exists(f"/proc/{pid}") for pid in qemu):
        assert time.monotonic() < deadline, f"QEMU still runs: {qemu}"
        time.sleep(0.05)
    assert (vm.dir / "memory" / "checkpoint.img").exists()
    aio(node.resume(vm.id), timeout=BOOT_TIMEOUT)
    procs = aio(vm.agent.list_processes())
    assert any(pi.pid == job.pid and pi.running for pi in procs), procs
    before = int(aio(vm.run("cat /tmp/n")).stdout)
    time.sleep(1)
    assert int(aio(vm.run("cat /tmp/n")).stdout) > before
    aio(vm.agent.signal(job.pid, 9, group=True))
    # Its disk thawed: writes go through after the restore.
    assert aio(vm.run("echo thawed > /tmp/t && cat /tmp/t", timeout=60)).stdout == "thawed\n"


def test_checkpoint_restore_and_fork(node: Any, vm: Any, aio: Any) -> None:
    aio(vm.run("echo before > /state"))
    ck = aio(node.checkpoint(vm.id, "clean"))
    aio(vm.run("echo after > /state; echo junk > /junk"))
    aio(node.restore(vm.id, ck.id), timeout=BOOT_TIMEOUT)
    assert aio(vm.run("cat /state; test -e /junk || echo gone")).stdout == "before\ngone\n"
    (kid,) = aio(node.fork(ck.id, 1), timeout=BOOT_TIMEOUT)
    try:
        assert aio(kid.run("cat /state")).stdout == "before\n"
        aio(kid.run("echo kid > /state"))
        assert aio(vm.run("cat /state")).stdout == "before\n"
        # A VM that dies on its own (QEMU killed from outside) is cleaned up like any sandbox.
        for pid in kid.runtime.host_pids(kid.id):
            os.kill(pid, 9)
        deadline = time.monotonic() + 30
        while kid.state is not State.KILLED and time.monotonic() < deadline:
            time.sleep(0.2)
        assert kid.state is State.KILLED and not cgroups.paths(kid.id)
    finally:
        with contextlib.suppress(errors.SandlotError):
            aio(node.kill(kid.id))
        node.checkpoints.delete(ck.id)


def test_warm_pool_hands_out_a_booted_vm(node: Any, aio: Any) -> None:
    spec = SandboxSpec(image="busybox", runtime="microvm", limits=Limits(memory_mb=64))

    async def set_size(n: int) -> Any:
        return node.pool.set_size(spec, n)

    key = aio(set_size(1))
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while node.pool.idle(key) < 1:
            assert time.monotonic() < deadline, "the pool never booted its VM"
            time.sleep(0.2)
        hits = node.pool.hits
        sbx = aio(node.create(SandboxSpec(image="busybox", runtime="microvm", limits=Limits(memory_mb=64))))
        assert node.pool.hits == hits + 1
        assert aio(sbx.run("echo pooled")).stdout == "pooled\n"
        aio(node.kill(sbx.id))
    finally:
        aio(set_size(0))


def test_export_reads_a_frozen_clone_of_the_guest_disk(vm: Any, aio: Any, node: Any, tmp_path: Path) -> None:
    from sandlot.node.sandbox_export import export_sandbox

    aio(vm.run("mkdir -p /work && echo made in a vm > /work/note"))
    aio(export_sandbox(node, vm.id, tmp_path / "out", tag="snap"))
    layout = tmp_path / "out"
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs" / "sha256" / digest).read_text())
    top = manifest["layers"][-1]["digest"].split(":")[1]
    with tarfile.open(layout / "blobs" / "sha256" / top) as tar:
        note = tar.extractfile("work/note")
        assert note is not None and note.read() == b"made in a vm\n"
    assert aio(vm.run("cat /work/note")).stdout == "made in a vm\n"  # still running, disk thawed


def test_volumes_over_virtiofs(node: Any, aio: Any) -> None:
    vol = node.volumes.create("microvm-data", owner="tests")
    node.volumes.mount(vol.id)  # a sized volume's files are on its own disk, mounted while in use
    (vol.data / "from-host.txt").write_text("host\n")
    mounts = [VolumeMount(vol.id, "/data"), VolumeMount(vol.id, "/ro data", read_only=True)]
    sbx = aio(node.create(SandboxSpec(image="busybox", runtime="microvm", volumes=mounts)), timeout=BOOT_TIMEOUT)
    try:
        assert aio(sbx.run("cat /data/from-host.txt && echo vm > /data/from-vm.txt")).stdout == "host\n"
        assert (vol.data / "from-vm.txt").read_text() == "vm\n"
        # Read-only even for the guest's root: its remount cannot reach the host's read-only bind.
        res = aio(sbx.run("mount -o remount,rw '/ro data'; echo x > '/ro data/nope'"))
        assert res.exit_code != 0 and not (vol.data / "nope").exists(), res
        with pytest.raises(errors.SandboxStateError, match="volumes"):
            aio(node.pause(sbx.id, memory=True))
        assert aio(sbx.run("echo still running")).stdout == "still running\n"
    finally:
        aio(node.kill(sbx.id))
        node.delete_volume(vol.id)
    assert not cgroups.paths(sbx.id)


def test_a_restarted_node_finds_its_vms_again(node: Any, aio: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    from sandlot.node import Node, NodeConfig
    from sandlot.node.recovery import recover

    data = Path(tmp_path_factory.mktemp("mvrestart", numbered=True))
    built = aio(node.bundle()).path
    shutil.copytree(built, data / "bundle" / built.name, symlinks=True)  # no second agent build
    config = NodeConfig(data_dir=data, images_dir=node.config.images_dir)
    first, second = Node(config), None
    spec = SandboxSpec(image="busybox", runtime="microvm", limits=Limits(memory_mb=64))
    sbx = aio(first.create(spec), timeout=BOOT_TIMEOUT)
    try:
        job = aio(sbx.start("sleep 1000"))
        aio(job.detach())
        aio(sbx.conn.close())  # the node goes away; QEMU and the guest run on
        for watcher in list(first._watchers):  # as the dead node's would
            watcher.cancel()
        second = Node(config)
        report = aio(recover(second, {sbx.id: spec}), timeout=120)  # QEMU redials the new node's socket
        assert report.adopted == [sbx.id], report
        again = second.get(sbx.id)
        assert any(pi.pid == job.pid and pi.running for pi in aio(again.agent.list_processes()))
    finally:
        aio((second or first).close(), timeout=120)
    assert not cgroups.paths(sbx.id)


def test_deleting_a_template_drops_its_erofs_image(node: Any, vm: Any, aio: Any, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hello").write_text("hi\n")
    name = f"vm-gc-{os.getpid()}"
    image = node.images.add(name, root, ImageConfig())
    vm_cache = node.runtime("microvm").cache
    erofs = guest.ensure_rootfs_image(vm_cache, image.lowerdir)
    in_use = guest.ensure_rootfs_image(vm_cache, vm.image.lowerdir)  # busybox's: the shared VM runs on it
    assert erofs.exists() and erofs != in_use
    aio(node.delete_template(name))
    assert not erofs.exists() and not erofs.with_suffix(".lowerdir").exists()
    assert in_use.exists() and in_use.with_suffix(".lowerdir").exists()


def test_kill_leaves_nothing_behind(node: Any, vm: Any, aio: Any) -> None:
    qemu = vm.runtime.host_pids(vm.id)
    assert qemu
    net = vm.net
    disk = vm.layer.image_file
    aio(node.kill(vm.id))
    assert not any(os.path.exists(f"/proc/{pid}") for pid in qemu)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert vm.id not in ps
    assert not cgroups.paths(vm.id)
    assert not disk.exists() and not vm.dir.exists()
    assert not list(Path(node.state_dir).rglob(f"*{vm.id}*"))
    with open("/proc/self/mountinfo") as f:
        assert vm.id not in f.read()
    assert net is not None and not net.netns_path.exists()
    with pytest.raises(errors.SandboxStateError, match="killed"):
        aio(vm.run("true"))


def test_a_killed_server_leaves_no_kvm_probe_running(tmp_path: Path) -> None:
    """The KVM probe guest hangs where KVM cannot boot Linux (this host): a server SIGKILLed while it
    probes must not leave that QEMU spinning a CPU (it did, once per fault-test restart)."""
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm: no probe is run")
    from tests.conftest import IMAGE_CACHE

    cache = IMAGE_CACHE / "vm"
    vmlinux = guest.ensure_vmlinux(cache, guest.find_kernel())
    initrd = tmp_path / "probe.cpio"  # its own path: the test finds its QEMU by it
    shutil.copy(guest.ensure_probe_initrd(cache), initrd)
    code = (
        "import sys; from pathlib import Path; from sandlot.node.microvm import accel;"
        "print(accel._probe('qemu-system-x86_64', Path(sys.argv[1]), Path(sys.argv[2])))"
    )
    prober = subprocess.Popen([sys.executable, "-c", code, str(vmlinux), str(initrd)], stdout=subprocess.DEVNULL)

    def probes() -> list[int]:
        out = subprocess.run(["pgrep", "-f", str(initrd)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split() if int(pid) != prober.pid]

    deadline = time.monotonic() + 30
    while not probes() and prober.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    prober.kill()
    prober.wait()
    deadline = time.monotonic() + 10
    while probes() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = probes()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    assert not left, f"the probe QEMU outlived its killed parent: {left}"
