"""microVMs on QEMU: the sandbox gets a kernel of its own. For untrusted code that needs a real kernel.

One QEMU process per sandbox (machine type `microvm`: virtio-mmio devices, no
PCI, no firmware), booting Debian's cloud kernel with Sandlot's initramfs
(node/microvm/guest.py, init.c), under KVM where a probe guest boots with it,
else under TCG (node/microvm/accel.py). The OCI bundle the node prepares for
every runtime is what this one reads too: limits, host name, volumes, network
namespace, the agent's config, and (annotations) the sandbox's disk and the
template's layers. What becomes of them:

- root filesystem: the template's layers as a read-only erofs disk (cached per
  layer stack) and the sandbox's writable disk (the same ext4 file in the
  node's disk store as for the other runtimes: checkpoints, restore and fork
  clone it) joined by overlayfs inside the guest. The host's own overlay of
  that disk is unmounted before the VM starts (`prepare_disk`);
- the agent: PID 1 inside, speaking the unchanged protocol over a
  virtio-serial port that QEMU bridges to the node's per-sandbox Unix socket
  (it reconnects after a node restart, like the agent's redial);
- limits: vCPUs (ceil of `cpu`) and the host cgroup's CPU quota; guest memory
  (the limit plus the kernel's own); disk (ENOSPC inside the guest); pids and
  memory: the agent's watchdog, as for gVisor, and a cgroup inside the guest
  that its processes are started in (init.c), as crun's on the host;
- network: a tap bridged into the sandbox's namespace (microvm/netdev.py), so
  the node's nftables policy applies unchanged; volumes: virtiofs;
- pause: QMP `stop`/`cont`; memory: QEMU's migration to a file and back
  (`-incoming`), with the guest's disk frozen first so that a checkpoint of
  the disk alone (a fork) is consistent too.

Invariant: `<state>/microvm/<id>.json` names every host process of a started
sandbox (QEMU, virtiofsd), so `destroy` finds them after a node restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.node import cgroups, reaper
from sandlot.node.microvm import accel as accel_mod
from sandlot.node.microvm import guest, netdev
from sandlot.node.microvm.channels import guest_request, qmp
from sandlot.node.rootfs import WritableLayer
from sandlot.node.runtimes.base import Resources, Runtime, run_tool, start_detached

__all__ = ["ANNOTATION_DISK", "ANNOTATION_LAYERS", "MicroVMRuntime", "accel_args"]

ANNOTATION_DISK = "org.sandlot.disk"
ANNOTATION_LAYERS = "org.sandlot.image.lowerdir"
QEMU = "qemu-system-x86_64"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
#: The guest kernel's own memory beside the sandbox's limit (kernel, initramfs, page cache headroom).
GUEST_OVERHEAD = 96 << 20
#: QEMU's own memory, and TCG's translation cache (`tb-size`), in the sandbox's host cgroup.
QEMU_OVERHEAD = 128 << 20
TCG_TB_MB = 128
#: QEMU's threads (vCPUs, I/O workers) and virtiofsd's; the guest's processes are its kernel's.
HOST_PIDS = 512
#: The name of the memory image, as memory_pause.saved() looks for it.
MEMORY_IMAGE = "checkpoint.img"


def _tsc_khz() -> int | None:
    """The host's TSC rate: a microvm guest under TCG calibrates it unreliably (MEASURED.md)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


def accel_args(accel: accel_mod.Accel) -> list[str]:
    """QEMU's accelerator and CPU: the host's under KVM; under TCG every feature QEMU emulates."""
    if accel.name == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", f"tcg,thread=multi,tb-size={TCG_TB_MB}", "-cpu", "max"]


@dataclass
class _VM:
    """What one sandbox's VM is made of, read from its OCI bundle."""

    id: str
    bundle: Path
    run: Path  # the agent's run dir on the host: its config, the sockets
    agent_dir: Path
    disk: Path
    lowerdir: str
    hostname: str
    memory_limit: int  # the sandbox's, for the guest
    pids_limit: int
    host_memory: int
    cpu_quota: int
    cpu_period: int
    netns: Path | None
    volumes: list[tuple[str, str, bool]] = field(default_factory=list)  # (host dir, path inside, read-only)

    @classmethod
    def from_bundle(cls, sandbox_id: str, bundle: Path) -> _VM:
        cfg = json.loads((bundle / "config.json").read_text())
        notes = cfg.get("annotations") or {}
        if ANNOTATION_DISK not in notes or ANNOTATION_LAYERS not in notes:
            raise errors.InternalError(f"the bundle of sandbox {sandbox_id} names no disk for the VM")
        mounts = {m["destination"]: m for m in cfg["mounts"]}
        run = Path(mounts["/.sandlot/run"]["source"])
        agent_cfg = json.loads((run / "config.json").read_text())
        res = cfg["linux"]["resources"]
        netns = next((n.get("path") for n in cfg["linux"]["namespaces"] if n["type"] == "network"), None)
        volumes = [
            (m["source"], m["destination"], "ro" in m.get("options", []))
            for m in cfg["mounts"]
            if m.get("type") == "bind" and not m["destination"].startswith("/.sandlot")
        ]
        return cls(
            id=sandbox_id,
            bundle=bundle,
            run=run,
            agent_dir=Path(mounts["/.sandlot"]["source"]),
            disk=Path(notes[ANNOTATION_DISK]),
            lowerdir=notes[ANNOTATION_LAYERS],
            hostname=cfg.get("hostname") or "sandbox",
            memory_limit=int(agent_cfg.get("memory_limit_bytes") or 512 << 20),
            pids_limit=int(agent_cfg.get("pids_limit") or 0),
            host_memory=int(res["memory"]["limit"]),
            cpu_quota=int(res["cpu"]["quota"]),
            cpu_period=int(res["cpu"]["period"]),
            netns=Path(netns) if netns else None,
            volumes=volumes,
        )

    @property
    def vcpus(self) -> int:
        return max(1, min(os.cpu_count() or 1, math.ceil(self.cpu_quota / self.cpu_period)))

    @property
    def guest_mb(self) -> int:
        return (self.memory_limit + GUEST_OVERHEAD) >> 20

    def sock(self, name: str) -> Path:
        return self.run / name


class MicroVMRuntime(Runtime):
    name = "microvm"
    binary = QEMU
    saves_memory = True
    mounts_rootfs_on_host = False
    saves_open_connections = True  # the guest's kernel holds them, in the memory image
    saves_agent_link = True  # a virtio-serial port: QEMU saves it with the VM
    agent_connect_timeout = 180.0  # a TCG boot on a loaded 2-core host takes seconds, a pool of them longer
    netns_single_use = False  # the tap stays in the namespace; a restored guest keeps its address

    def __init__(self, state_dir: Path, cache_dir: Path | None = None) -> None:
        super().__init__(state_dir)
        self.cache = Path(cache_dir or state_dir) / "vm"
        self._kernel: guest.Kernel | None = None
        self._accel: accel_mod.Accel | None = None
        self._lock = asyncio.Lock()

    def check(self) -> None:
        super().check()
        for tool, package in (("mkfs.erofs", "erofs-utils"), ("gcc", "gcc")):
            if shutil.which(tool) is None:
                raise errors.RuntimeUnavailableError(f"runtime 'microvm' needs {tool} (Debian package {package})")
        self._kernel = guest.find_kernel()

    @property
    def accel(self) -> accel_mod.Accel | None:
        """The accelerator chosen at the first start (None before): reported by /health."""
        return self._accel

    def _state(self, sandbox_id: str) -> Path:
        return self.state_dir / "microvm" / f"{sandbox_id}.json"

    def resources(self, memory_bytes: int, pids: int) -> Resources:
        tb = 0 if self._accel is not None and self._accel.name == "kvm" else TCG_TB_MB << 20
        return Resources(memory_bytes + GUEST_OVERHEAD + QEMU_OVERHEAD + tb, HOST_PIDS)

    def adjust(self, config: dict[str, Any]) -> None:
        pass  # the bundle is read, not run: init.c makes the guest's mounts

    async def prepare_disk(self, layer: WritableLayer) -> None:
        # The guest mounts the disk itself: two kernels must never mount one ext4.
        problems = await asyncio.to_thread(layer.unmount)
        if problems:
            raise errors.InternalError("unmounting the sandbox disk for its VM failed: " + "; ".join(problems))

    # ------------------------------------------------------------ start

    async def ensure_accel(self) -> accel_mod.Accel:
        """KVM or TCG, chosen once (a probe boot the first time on this host: accel.py)."""
        assert self._kernel is not None
        async with self._lock:
            if self._accel is None:
                vmlinux = await asyncio.to_thread(guest.ensure_vmlinux, self.cache, self._kernel)
                probe = await asyncio.to_thread(guest.ensure_probe_initrd, self.cache)
                self._accel = await asyncio.to_thread(accel_mod.choose, self.cache, QEMU, vmlinux, probe)
        return self._accel

    @property
    def accelerator(self) -> str | None:
        return self._accel.name if self._accel is not None else None

    async def describe(self) -> dict[str, str]:
        accel = await self.ensure_accel()
        return {"accelerator": accel.name, "accelerator_reason": accel.why}

    def prune_cache(self) -> list[Path]:
        return guest.prune_rootfs_images(self.cache)

    async def _guest(self, vm: _VM) -> tuple[Path, Path, Path, accel_mod.Accel]:
        """The kernel, the shared initramfs and the template's image (built once), and the accelerator."""
        assert self._kernel is not None
        kernel = self._kernel
        accel = await self.ensure_accel()
        vmlinux = await asyncio.to_thread(guest.ensure_vmlinux, self.cache, kernel)
        initrd = await asyncio.to_thread(guest.ensure_initrd, self.cache, kernel, vm.agent_dir / "sandlot-agent")
        image = await asyncio.to_thread(guest.ensure_rootfs_image, self.cache, vm.lowerdir)
        return vmlinux, initrd, image, accel

    async def start(self, sandbox_id: str, bundle: Path, log: Path, *, connected: bool = False) -> int:
        vm = _VM.from_bundle(sandbox_id, bundle)
        vmlinux, base, image, accel = await self._guest(vm)
        conf = [f"hostname {vm.hostname}", f"limits {vm.pids_limit} {vm.memory_limit}"]
        if connected and vm.netns is not None:
            net = await netdev.attach(vm.netns, bundle / "vmnet.json")
            conf.append(f"net {net.address} {net.prefix} {net.gateway}")
        for i, (_, path, ro) in enumerate(vm.volumes):
            conf.append(f"volume vol{i} {'ro' if ro else 'rw'} {path.encode().hex()}")
        files = {
            "sandlot/run/config.json": (vm.run / "config.json").read_bytes(),
            "sandlot/vm.conf": ("\n".join(conf) + "\n").encode(),
        }
        await asyncio.to_thread(guest.sandbox_initrd, base, bundle / "initrd", files)
        return await self._launch(vm, vmlinux, image, accel, log, incoming=None)

    async def _launch(
        self, vm: _VM, kernel: Path, image: Path, accel: accel_mod.Accel, log: Path, incoming: Path | None
    ) -> int:
        os.makedirs(self._state(vm.id).parent, exist_ok=True)
        groups = await asyncio.to_thread(cgroups.create, vm.id, vm.host_memory, vm.cpu_quota, vm.cpu_period, HOST_PIDS)
        enter = ["sh", "-c", 'for g in $0; do echo $$ > "$g/cgroup.procs"; done; exec "$@"', " ".join(map(str, groups))]
        helpers = await self._start_virtiofsd(vm, enter, log)
        argv = [*enter]
        if vm.netns is not None and (vm.bundle / "vmnet.json").exists():
            argv += ["nsenter", f"--net={vm.netns}", "--"]
        argv += self._qemu_argv(vm, kernel, image, accel, log, incoming)
        self._save_state(vm, None, helpers)
        pid = await start_detached(argv, log, vm.bundle / "pid", f"QEMU could not start sandbox {vm.id}")
        self._save_state(vm, pid, helpers)
        return pid

    def _save_state(self, vm: _VM, pid: int | None, helpers: list[int]) -> None:
        state = {"pid": pid, "helpers": helpers, "run": str(vm.run), "bundle": str(vm.bundle)}
        tmp = self._state(vm.id).with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.rename(tmp, self._state(vm.id))

    def cmdline(self, accel: accel_mod.Accel) -> str:
        """The guest kernel's command line: small, and what TCG needs to boot reliably."""
        args = ["console=ttyS0", "quiet", "panic=-1", "reboot=t", "pci=off", "random.trust_cpu=on"]
        if accel.name == "tcg":
            khz = _tsc_khz()
            if khz:
                args += [f"tsc_early_khz={khz}", "tsc=reliable"]
            # TCG does not speculate: there is no side channel for the mitigations to close.
            args.append("mitigations=off")
        return " ".join(args)

    def _qemu_argv(
        self, vm: _VM, kernel: Path, image: Path, accel: accel_mod.Accel, log: Path, incoming: Path | None
    ) -> list[str]:
        machine = "microvm,x-option-roms=off,rtc=on"
        memory = []
        if vm.volumes:  # vhost-user (virtiofsd) needs the guest's memory shared with it
            memory = ["-object", f"memory-backend-memfd,id=mem,size={vm.guest_mb}M,share=on"]
            machine += ",memory-backend=mem"
        argv = [
            QEMU, "-name", f"sandlot-{vm.id}", "-M", machine, *accel_args(accel), *memory,
            "-m", f"{vm.guest_mb}M", "-smp", str(vm.vcpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            # virtio 1.0 over MMIO: vhost-user (virtiofsd) refuses the legacy devices microvm defaults to
            "-global", "virtio-mmio.force-legacy=false",
            "-sandbox", "on,obsolete=deny,resourcecontrol=deny",
            "-kernel", str(kernel), "-initrd", str(vm.bundle / "initrd"), "-append", self.cmdline(accel),
            "-chardev", f"file,id=con,path={log},append=on", "-serial", "chardev:con",
            "-device", "virtio-serial-device,max_ports=4",
            "-chardev", f"socket,id=agent,path={vm.sock('agent.sock')},reconnect=1",
            "-device", "virtserialport,chardev=agent,name=org.sandlot.agent",
            "-chardev", f"socket,id=ctl,path={vm.sock('ctl.sock')},server=on,wait=off",
            "-device", "virtserialport,chardev=ctl,name=org.sandlot.control",
            "-drive", f"file={image},if=none,id=image,format=raw,readonly=on",
            "-device", "virtio-blk-device,drive=image,serial=sandlot-image",
            # unsafe: flushes are not forced to the host's disk, as for the other runtimes'
            # loop-mounted layer; a checkpoint clones the file after the guest froze it.
            "-drive", f"file={vm.disk},if=none,id=disk,format=raw,cache=unsafe,discard=unmap",
            "-device", "virtio-blk-device,drive=disk,serial=sandlot-disk",
            # The guest reports the pages it frees (in 2 MiB blocks) and QEMU gives them back to
            # the host: what boot and a finished command touched does not stay resident.
            "-device", "virtio-balloon-device,free-page-reporting=on",
            "-qmp", f"unix:{vm.sock('qmp.sock')},server=on,wait=off",
            "-daemonize", "-pidfile", str(vm.bundle / "pid"),
        ]  # fmt: skip
        if vm.netns is not None and (vm.bundle / "vmnet.json").exists():
            mac = "52:54:00:" + ":".join(f"{b:02x}" for b in hashlib.sha256(vm.id.encode()).digest()[:3])
            argv += ["-netdev", f"tap,id=net,ifname={netdev.TAP},script=no,downscript=no",
                     "-device", f"virtio-net-device,netdev=net,mac={mac}"]  # fmt: skip
        for i in range(len(vm.volumes)):
            argv += ["-chardev", f"socket,id=vfs{i},path={vm.sock(f'vfs{i}.sock')}",
                     "-device", f"vhost-user-fs-device,chardev=vfs{i},tag=vol{i}"]  # fmt: skip
        if incoming is not None:
            argv += ["-incoming", f"exec:cat {shlex.quote(str(incoming / MEMORY_IMAGE))}"]
        return argv

    async def _start_virtiofsd(self, vm: _VM, enter: list[str], log: Path) -> list[int]:
        """One virtiofsd per volume (in the sandbox's cgroups); a read-only volume is served from a
        read-only bind mount in a mount namespace of its own, so the guest cannot write it."""
        pids: list[int] = []
        for i, (source, _, ro) in enumerate(vm.volumes):
            sock = vm.sock(f"vfs{i}.sock")
            sock.unlink(missing_ok=True)
            cmd = [VIRTIOFSD, f"--socket-path={sock}", "-o", f"source={source}", "-o", "cache=none",
                   "-o", "sandbox=chroot", "-o", "log_level=err"]  # fmt: skip
            if ro:
                ro_bind = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
                cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", ro_bind, source, *cmd]
            # In the background of a shell that exits at once: an orphan the node (a subreaper) reaps.
            rc, out = await run_tool(
                "setsid", "sh", "-c", 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!', "sh", str(log),
                *enter, *cmd,
            )  # fmt: skip
            if rc != 0 or not out.strip().isdigit():
                raise errors.InternalError(f"virtiofsd for the volume at {vm.volumes[i][1]} did not start: {out}")
            pids.append(int(out.strip()))
            for _ in range(250):  # it listens within milliseconds
                if sock.exists() or not os.path.exists(f"/proc/{pids[-1]}"):
                    break
                await asyncio.sleep(0.02)
            if not sock.exists():
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                raise errors.InternalError(f"virtiofsd for the volume at {vm.volumes[i][1]} did not start")
        return pids

    # ------------------------------------------------------------ stop, pause, memory

    def _read_state(self, sandbox_id: str) -> dict[str, Any]:
        try:
            state = json.loads(self._state(sandbox_id).read_text())
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    async def destroy(self, sandbox_id: str) -> list[str]:
        state = self._read_state(sandbox_id)
        pids = [p for p in [state.get("pid"), *state.get("helpers", [])] if isinstance(p, int) and p > 0]
        pids += cgroups.procs(sandbox_id)
        for pid in set(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        waits = [asyncio.ensure_future(reaper.wait_exit(pid)) for pid in set(pids)]
        problems: list[str] = []
        if waits:
            _, pending = await asyncio.wait(waits, timeout=10)
            for w in pending:
                w.cancel()
            if pending:
                problems.append(f"QEMU of sandbox {sandbox_id} did not exit")
        problems += await asyncio.to_thread(cgroups.remove, sandbox_id)  # rmdirs: off the event loop
        if "run" in state:
            for name in ("ctl.sock", "qmp.sock"):
                Path(state["run"], name).unlink(missing_ok=True)
        if not problems:
            self._state(sandbox_id).unlink(missing_ok=True)
        return problems

    def _qmp_socket(self, sandbox_id: str) -> Path:
        state = self._read_state(sandbox_id)
        if "run" not in state:
            raise errors.InternalError(f"sandbox {sandbox_id} has no VM")
        return Path(state["run"]) / "qmp.sock"

    async def pause(self, sandbox_id: str) -> None:
        await qmp(self._qmp_socket(sandbox_id), "stop")

    async def resume(self, sandbox_id: str) -> None:
        await qmp(self._qmp_socket(sandbox_id), "cont")

    async def snapshot_disk(self, sandbox_id: str, layer: WritableLayer, dest: Path, *, running: bool) -> None:
        """The guest freezes its disk (everything written reaches the file), the file is cloned, it thaws."""
        ctl = self._qmp_socket(sandbox_id).with_name("ctl.sock")
        if not running:  # a frozen VM cannot freeze its disk: let it run for that moment
            await self.resume(sandbox_id)
        try:
            await guest_request(ctl, "freeze")
            try:
                await asyncio.to_thread(layer.clone_disk, dest)
            finally:
                await guest_request(ctl, "thaw")
        finally:
            if not running:
                await self.pause(sandbox_id)

    async def save_memory(self, sandbox_id: str, image_dir: Path) -> None:
        vm = _VM.from_bundle(sandbox_id, Path(self._read_state(sandbox_id).get("bundle", "")))
        if vm.volumes:
            raise errors.SandboxStateError(
                f"sandbox {sandbox_id} cannot be paused with its memory: QEMU cannot save a VM with volumes "
                "(virtiofs); pause it without memory"
            )
        sock = vm.sock("qmp.sock")
        await guest_request(vm.sock("ctl.sock"), "freeze")  # a fork boots from this disk alone
        try:
            await qmp(sock, "stop")
            await qmp(sock, "migrate-set-parameters", **{"max-bandwidth": 1 << 40})
            await qmp(sock, "migrate", uri=f"exec:cat > {shlex.quote(str(image_dir / MEMORY_IMAGE))}")
            await self._migration_done(sock, sandbox_id)
        except BaseException:
            with contextlib.suppress(errors.SandlotError):
                await qmp(sock, "cont")
                await guest_request(vm.sock("ctl.sock"), "thaw", timeout=10)
            raise
        with contextlib.suppress(errors.SandlotError):
            await qmp(sock, "quit")

    async def _migration_done(self, sock: Path, sandbox_id: str, timeout: float = 300.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            info = await qmp(sock, "query-migrate")
            status = info.get("status")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                why = info.get("error-desc", status)
                raise errors.InternalError(f"QEMU could not save the memory of sandbox {sandbox_id}: {why}")
            await asyncio.sleep(0.02)
        raise errors.InternalError(f"saving the memory of sandbox {sandbox_id} took over {timeout:.0f}s")

    async def restore_memory(
        self, sandbox_id: str, bundle: Path, image_dir: Path, log: Path, *, connected: bool = False
    ) -> int:
        vm = _VM.from_bundle(sandbox_id, bundle)
        vmlinux, _, image, accel = await self._guest(vm)
        if connected and vm.netns is not None:
            await netdev.attach(vm.netns, bundle / "vmnet.json")
        pid = await self._launch(vm, vmlinux, image, accel, log, incoming=image_dir)
        await self._run_when_loaded(vm.sock("qmp.sock"), sandbox_id)
        await guest_request(vm.sock("ctl.sock"), "thaw", timeout=120)  # frozen by save_memory
        return pid

    async def _run_when_loaded(self, sock: Path, sandbox_id: str, timeout: float = 300.0) -> None:
        """Start the vCPUs once the memory image is loaded: QEMU keeps the state the VM was saved in
        (stopped, for a consistent image), where a restore wants it running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            with contextlib.suppress(errors.InternalError):  # the socket may not be there yet
                status = (await qmp(sock, "query-status")).get("status")
                if status == "running":
                    return
                if status in ("paused", "postmigrate", "prelaunch"):
                    await qmp(sock, "cont")
                    return
                if status not in ("inmigrate", None):
                    raise errors.InternalError(f"QEMU could not load the memory of sandbox {sandbox_id}: {status}")
            await asyncio.sleep(0.05)
        raise errors.InternalError(f"loading the memory of sandbox {sandbox_id} took over {timeout:.0f}s")

    async def alive(self, sandbox_id: str) -> bool:
        pid = self._read_state(sandbox_id).get("pid")
        if not isinstance(pid, int):
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z" and f"sandlot-{sandbox_id}".encode() in cmdline

    def host_pids(self, sandbox_id: str) -> list[int]:
        state = self._read_state(sandbox_id)
        pids = set(cgroups.procs(sandbox_id))
        pids.update(p for p in [state.get("pid"), *state.get("helpers", [])] if isinstance(p, int) and p > 0)
        return sorted(p for p in pids if os.path.exists(f"/proc/{p}"))
