"""The node: creates, tracks and destroys the sandboxes of one host.

Invariant: `_sandboxes` holds every sandbox this node created that is not yet
killed; a sandbox leaves it only once it is stopped and its cleanup task is in
`_cleanups` (which retries failed steps until done), so nothing the node made
(runtime state, cgroups, mounts, files) outlives a sandbox the node forgot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import json
import logging
import os
import resource
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.agent.client import RESPONSE_TIMEOUT, AgentConnection
from sandlot.failpoints import afailpoint
from sandlot.node import (
    cgroups,
    file_metadata,
    hibernation,
    host_tuning,
    intent,
    memory_pause,
    readiness,
    reaper,
    safepath,
)
from sandlot.node.admission import Admission
from sandlot.node.bundle import MOUNT_POINT, Bundle, ensure_bundle
from sandlot.node.checkpoints import MAX_FORK, Checkpoint, CheckpointStore, spec_from_dict
from sandlot.node.diskstore import DiskStore
from sandlot.node.dns import system_nameservers
from sandlot.node.images import Image
from sandlot.node.limits import LimitMonitor
from sandlot.node.metrics import MetricsSampler
from sandlot.node.netpolicy import NetworkPolicy
from sandlot.node.network import DEFAULT_SUBNET, NetworkManager, SandboxNet
from sandlot.node.oci.registry import RegistryConfig
from sandlot.node.oci.store import ImageStore
from sandlot.node.pool import WarmPool
from sandlot.node.rootfs import SpareDisks, WritableLayer
from sandlot.node.runtimes import RUNTIMES, Runtime, make_runtime
from sandlot.node.sandbox import Sandbox, State
from sandlot.node.spec import DEV_TMPFS_BYTES, SandboxSpec, new_sandbox_id, oci_config, shm_bytes
from sandlot.node.volumes import VolumeStore, bind_mounts
from sandlot.paths import default_data_dir

__all__ = ["Node", "NodeConfig"]

log = logging.getLogger("sandlot.node")

#: Unix socket paths are limited to 108 bytes (with the NUL) by sockaddr_un.
MAX_SOCKET_PATH = 107
#: How often the host names of network policies are resolved again (answers change: CDNs, failover).
NAME_REFRESH_INTERVAL = 60.0
#: How many ended sandboxes' exit reasons the node remembers (for records reconciled later).
ENDED_KEPT = 4096
#: How many times a start that failed transiently (runsc's own race under load) is tried again.
START_RETRIES = 2
#: How long `kill` waits for a killed sandbox's cleanup before returning (it goes on in the background).
KILL_WAIT_S = 5.0
#: The longest pause between two attempts of a failed cleanup step.
CLEANUP_RETRY_MAX_S = 60.0
#: How long `close` lets pending cleanups finish.
CLOSE_CLEANUP_WAIT_S = 60.0


@dataclass
class NodeConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    #: Where images are built and cached; shared by every node on the host by default.
    images_dir: Path | None = None
    #: registry host[:port] -> credentials and `insecure` (plain HTTP)
    registries: dict[str, RegistryConfig] = field(default_factory=dict)
    #: refuse pulls from registries not in `registries`
    registries_only: bool = False
    gvisor_platform: str = "ptrace"
    default_runtime: str = "gvisor"
    #: Size of the node's disk store (sparse; sandbox disks and checkpoints); default: the host filesystem's.
    disk_store_bytes: int | None = None
    #: where connected sandboxes get their addresses (a /30 each)
    net_subnet: str = DEFAULT_SUBNET
    #: resolvers that sandboxes' DNS queries go to, and that resolve policy host
    #: names (default: the host's non-loopback resolvers); [] disables DNS
    dns_servers: list[str] | None = None
    #: how long a call waits for the agent's first answer before asking whether it is alive at all
    agent_timeout_s: float = RESPONSE_TIMEOUT
    #: sandbox starts that run at once (default: 2 per core); the rest queue in order (admission.py)
    max_concurrent_starts: int | None = None
    #: starts that may wait; one more is refused with ServerBusyError (503 + Retry-After)
    max_queued_starts: int = 256
    #: the longest a start waits in the queue before it is refused the same way
    max_start_wait_s: float = 45.0
    #: set the host's kernel for sandbox churn at the start (host_tuning.py: cgroup2's favordynmods,
    #: expedited RCU), tens of ms off every start and stop; host-wide. SANDLOT_TUNE_HOST=0 leaves it be.
    tune_host: bool = field(default_factory=lambda: os.environ.get("SANDLOT_TUNE_HOST", "1") != "0")

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.images_dir = Path(self.images_dir) if self.images_dir else self.data_dir / "store-v2"


class Node:
    def __init__(self, config: NodeConfig | None = None) -> None:
        self.config = config or NodeConfig()
        assert self.config.images_dir is not None
        self.images = ImageStore(
            self.config.images_dir, self.config.registries, registries_only=self.config.registries_only
        )
        self.sandboxes_dir = self.config.data_dir / "sandboxes"
        self.state_dir = self.config.data_dir / "runtime"
        self._runtimes: dict[str, Runtime] = {}
        self._sandboxes: dict[str, Sandbox] = {}
        # _ended: why sandboxes that left _sandboxes ended, newest last (at most ENDED_KEPT).
        self._ended: dict[str, str] = {}
        self._bundle: Bundle | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        # _cleanups: cleanups of stopped sandboxes still running (retrying what failed), and releases
        # of sandboxes paused with memory (their killed processes' exit).
        self._cleanups: set[asyncio.Task[None]] = set()
        # Cleanups spawn runtime CLIs: a few at a time, so a burst of kills cannot flood the CPU.
        self._cleanup_slots = asyncio.Semaphore(max(4, 2 * (os.cpu_count() or 1)))
        self.disks = DiskStore(self.config.data_dir, self.config.disk_store_bytes)
        self.spares = SpareDisks(self.disks.spares)
        self.checkpoints = CheckpointStore(self.disks.checkpoints)
        self.volumes = VolumeStore(self.config.data_dir / "volumes")
        self.pool = WarmPool(functools.partial(self._start, background=True), self.kill)
        dns = self.config.dns_servers
        self.network = NetworkManager(
            str(self.config.data_dir),
            subnet=self.config.net_subnet,
            dns_servers=system_nameservers() if dns is None else dns,
        )
        # A burst of starts on a small host (100 at once on 2 cores) makes every
        # one of them slow enough to time out; queued, they all finish quickly.
        self.admission = Admission(
            self.config.max_concurrent_starts or max(2, 2 * (os.cpu_count() or 1)),
            self.config.max_queued_starts,
            self.config.max_start_wait_s,
        )
        self._refilling: asyncio.Future[None] | None = None
        self._name_refresher: asyncio.Task[None] | None = None
        self._exit_listeners: list[Callable[[str, str], None]] = []
        self._change_listeners: list[Callable[[str], None]] = []
        #: pokes a sandbox's limit watchdog when its host cgroup grows (limits.py)
        self.limit_monitor = LimitMonitor()
        #: samples every sandbox's resource use from the host side (metrics.py)
        self.metrics = MetricsSampler(self.list_sandboxes)
        # Orphaned sandbox processes must come to us, not to a lazy host init.
        reaper.become_subreaper()
        _raise_nofile_limit()
        if self.config.tune_host and os.geteuid() == 0:
            for why in host_tuning.tune():
                log.info("sandbox starts and stops stay slower on this host: %s", why)

    # ------------------------------------------------------------ setup

    def runtime(self, name: str) -> Runtime:
        rt = self._runtimes.get(name)
        if rt is None:
            rt = make_runtime(
                name, self.state_dir, gvisor_platform=self.config.gvisor_platform, cache_dir=self.config.images_dir
            )
            rt.check()
            self._runtimes[name] = rt
        return rt

    async def runtime_report(self) -> dict[str, dict[str, Any]]:
        """Each runtime: whether this host can run it (else why not), and what it says of itself."""
        report: dict[str, dict[str, Any]] = {}
        for name in RUNTIMES:
            try:
                rt = self.runtime(name)
                report[name] = {"available": True, **(await rt.describe())}
            except errors.SandlotError as exc:
                report[name] = {"available": False, "reason": exc.message}
        return report

    async def delete_template(self, name: str) -> None:
        """Delete a template and what only it used: its layers, and what runtimes built from them
        (microvm's erofs image). Refused while a sandbox or a warm pool uses it."""
        in_use = {s.image.name for s in self.list_sandboxes()} | {k.image for k in self.pool.sizes()}
        await asyncio.to_thread(self.images.remove, name, in_use)
        for rt_name in RUNTIMES:
            try:
                rt = self.runtime(rt_name)
            except errors.SandlotError:  # not on this host: it built nothing
                continue
            await asyncio.to_thread(rt.prune_cache)

    async def bundle(self) -> Bundle:
        if self._bundle is None:
            self._bundle = await asyncio.to_thread(ensure_bundle, self.config.data_dir / "bundle")
        return self._bundle

    # ------------------------------------------------------------ queries

    def get(self, sandbox_id: str) -> Sandbox:
        sbx = self._sandboxes.get(sandbox_id)
        if sbx is None:
            raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found")
        return sbx

    def list_sandboxes(self) -> list[Sandbox]:
        """Sandboxes handed out (idle ones in the warm pool are not listed)."""
        return [s for s in self._sandboxes.values() if not s.pooled]

    def knows(self, sandbox_id: str) -> bool:
        return sandbox_id in self._sandboxes

    def exit_reason(self, sandbox_id: str) -> str | None:
        """Why a sandbox this node had (since it started) ended; None if unknown or still there."""
        return self._ended.get(sandbox_id)

    def _forget(self, sbx: Sandbox) -> None:
        """Drop a destroyed sandbox, remembering why it ended."""
        if self._sandboxes.get(sbx.id) is sbx:
            del self._sandboxes[sbx.id]
        self._ended[sbx.id] = sbx.exit_reason or "killed"
        while len(self._ended) > ENDED_KEPT:
            del self._ended[next(iter(self._ended))]

    def known_ids(self) -> set[str]:
        """Every sandbox the node holds, idle ones of warm pools included."""
        return set(self._sandboxes)

    def runtimes_ready(self) -> list[str]:
        """The runtimes that passed their check so far."""
        return sorted(self._runtimes)

    def accelerators(self) -> dict[str, str]:
        """What each ready runtime that chooses its hardware chose (microvm: kvm or tcg)."""
        return {name: a for name, rt in self._runtimes.items() if (a := rt.accelerator) is not None}

    # ------------------------------------------------------------ create

    async def create(self, spec: SandboxSpec | None = None) -> Sandbox:
        """A running sandbox for `spec`: from the warm pool when it holds one, else started now."""
        spec = (spec or SandboxSpec(runtime=self.config.default_runtime)).validate()
        bind_mounts(self.volumes, spec.volumes)  # every volume exists: fail before starting anything
        pooled = None if spec.volumes else self.pool.take(spec)  # pooled sandboxes have no volumes
        if pooled is not None:
            if pooled.net is not None:  # booted with an interface; now the caller's policy
                try:
                    await self.set_network(pooled.id, spec.network)
                except BaseException:
                    with contextlib.suppress(errors.SandlotError):
                        await self.kill(pooled.id)
                    raise
            return pooled
        return await self._start(spec)

    async def _start(
        self,
        spec: SandboxSpec,
        disk_from: Path | None = None,
        *,
        background: bool = False,
        sandbox_id: str | None = None,
        boot: bool = True,
    ) -> Sandbox:
        """Start a sandbox once admitted (a fair queue; ServerBusyError when it is full).

        A caller cancelled while queued just leaves the queue. Cancelling
        halfway through `runsc run` would orphan a sandbox that no state
        records yet, so an admitted start runs to its end and is then killed.
        """
        async with self.admission.slot(background=background):
            task = asyncio.ensure_future(self._start_now(spec, disk_from, sandbox_id, boot=boot))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await self.kill((await task).id)
                raise

    async def _start_now(
        self, spec: SandboxSpec, disk_from: Path | None = None, sandbox_id: str | None = None, *, boot: bool = True
    ) -> Sandbox:
        """Start a sandbox of `spec`, on a fresh disk or a clone of `disk_from` (a checkpoint's, a moved
        sandbox's); without `boot` it is only provisioned, and left hibernated (`wake` boots it)."""
        runtime = self.runtime(spec.runtime)
        bundle = await self.bundle()
        image = await asyncio.to_thread(self._host_ready, spec.image)
        sandbox_id = sandbox_id or new_sandbox_id()
        sdir = self.sandboxes_dir / sandbox_id
        layer = WritableLayer(sdir, image.lowerdir, spec.limits.disk_mb << 20, self.disks.disk_of(sandbox_id))
        layer.source = disk_from
        socket_path = str(sdir / "run" / "agent.sock")
        if len(socket_path.encode()) > MAX_SOCKET_PATH:
            raise errors.InvalidArgumentError(
                f"the data directory {self.config.data_dir} is too long a path: a sandbox's agent socket "
                f"({socket_path}) must fit in {MAX_SOCKET_PATH} bytes; choose a shorter --data-dir",
                field="data_dir",
            )
        conn = AgentConnection(socket_path, sandbox_id, self.config.agent_timeout_s)
        sbx = Sandbox(sandbox_id, spec, image, runtime, sdir, layer, conn)
        sbx.on_change = self._changed
        self._sandboxes[sandbox_id] = sbx
        # The network (~60 ms of ip/nft calls) is made while the rootfs is mounted.
        net_setup = None
        if spec.network.connected:
            net_setup = asyncio.ensure_future(self.network.setup(sandbox_id, spec.network))
        try:
            await self._provision(sbx, bundle, net_setup)
            await afailpoint("node.create.before_start", sandbox_id)
            exited = await self.boot(sbx) if boot else None
        except BaseException as exc:
            if net_setup is not None and sbx.net is None:
                with contextlib.suppress(BaseException):
                    sbx.net = await net_setup
            problems = await self.destroy(sbx, f"failed to start: {exc}")
            self._forget(sbx)
            if problems:
                log.error("cleanup after a failed start of %s: %s", sandbox_id, "; ".join(problems))
            if _out_of_space(exc):  # a record or the runtime's state did not fit: say where
                raise errors.NoSpaceError(
                    f"cannot create a sandbox: the filesystem of the data directory {self.config.data_dir} "
                    f"is full ({exc}); free space there"
                ) from None
            raise
        if exited is None:  # provisioned only: nothing runs, as after a hibernation without memory
            await sbx.conn.close()
            hibernation.mark(sbx)
            for state in (State.RUNNING, State.PAUSED, State.HIBERNATED):
                sbx.transition(state)
            return sbx
        sbx.transition(State.RUNNING)
        self._spawn(self._on_exit(sbx, exited))
        if image.start is not None:  # handed out only once its template's start command is ready
            try:
                await readiness.start_and_wait(sbx, image.start, image.name)
            except BaseException:
                with contextlib.suppress(errors.SandlotError):
                    await self.kill(sandbox_id)
                raise
        return sbx

    def _host_ready(self, image: str) -> Image:
        """The image, and a disk store with room for a sandbox (one trip to a thread: on a busy host
        each trip back to the event loop waits for a core)."""
        found = self.images.ensure(image)
        self.disks.ensure()
        self.disks.check_room("create a sandbox")
        return found

    async def start_hibernated(self, spec: SandboxSpec, sandbox_id: str, disk: Path) -> Sandbox:
        """Make sandbox `sandbox_id` of `spec` on a clone of `disk` (one moved here from another node),
        hibernated: its first `wake` boots it."""
        if self.knows(sandbox_id):
            raise errors.ConflictError(f"node holds sandbox {sandbox_id} already")
        bind_mounts(self.volumes, spec.volumes)
        return await self._start(spec.validate(), disk, sandbox_id=sandbox_id, boot=False)

    async def clone_hibernated_disk(self, sbx: Sandbox, dest: Path) -> None:
        """Clone a hibernated sandbox's disk to `dest`, consistent (nothing runs in it meanwhile)."""
        async with sbx._kill_lock:
            if sbx.state is not State.HIBERNATED:
                raise errors.SandboxStateError(
                    f"cannot move sandbox {sbx.id} in state {sbx.state.value}: only a hibernated one moves"
                )
            await sbx.runtime.snapshot_disk(sbx.id, sbx.layer, dest, running=False)

    async def boot(self, sbx: Sandbox) -> asyncio.Task[None]:
        """Start the provisioned sandbox's runtime and wait for its agent; returns its exit watcher."""
        await sbx.runtime.prepare_disk(sbx.layer)
        for retry in range(START_RETRIES + 1):
            try:
                pid = await sbx.runtime.start(
                    sbx.id, sbx.dir / "bundle", sbx.dir / "runtime.log", connected=sbx.net is not None
                )
                break
            except errors.SandlotError as exc:
                if retry == START_RETRIES or not sbx.runtime.start_failed_transiently(exc):
                    raise
                log.warning("sandbox %s: start failed (%s); cleaning up and starting it again", sbx.id, exc)
                await self._undo_start(sbx)
        exited = self._spawn(reaper.wait_exit(pid))
        await afailpoint("node.boot.after_start", sbx.id)
        self._spawn(self._reap_helpers(sbx, pid))  # beside the wait: only their reaping depends on it
        await self.wait_agent(sbx, exited)
        return exited

    async def _reap_helpers(self, sbx: Sandbox, pid: int) -> None:
        """Reap the sandbox's other host processes that are the node's children (the gofer, under
        gVisor) when they exit; their pids are read from /proc in a thread."""
        found = await asyncio.to_thread(lambda: reaper.children_of_self(sbx.runtime.host_pids(sbx.id)))
        for other in found:
            if other != pid:
                self._spawn(reaper.wait_exit(other))

    async def _undo_start(self, sbx: Sandbox) -> None:
        """Clear what a failed start left (processes, runtime state, cgroups; a network namespace
        the runtime took over) so that the same sandbox can start again; raise if it cannot."""
        problems = await _wait_gone(sbx.runtime.terminate(sbx.id))  # reaped first: runsc waits for them
        problems += await sbx.runtime.destroy(sbx.id)
        if problems:
            raise errors.InternalError(f"cleaning up after a failed start of sandbox {sbx.id}: " + "; ".join(problems))
        (sbx.dir / "bundle" / "pid").unlink(missing_ok=True)
        if sbx.net is not None and sbx.runtime.netns_single_use and not await self.network.untouched(sbx.net):
            await self.renew_network(sbx)
        await sbx.reconnect()  # an agent of the failed start may have dialled in

    def _refill_spares(self) -> None:
        if self._refilling is None or self._refilling.done():
            self._refilling = asyncio.ensure_future(asyncio.to_thread(self.spares.refill))

    def on_exit(self, callback: Callable[[str, str], None]) -> None:
        """Call `callback(sandbox_id, reason)` whenever a sandbox dies on its own (not when killed)."""
        self._exit_listeners.append(callback)

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call `callback(sandbox_id)` whenever what a sandbox's status reports changes: a state
        transition (a death and a kill included) or its network (a new policy, refreshed addresses)."""
        self._change_listeners.append(callback)

    def _changed(self, sandbox_id: str) -> None:
        for listener in self._change_listeners:
            listener(sandbox_id)

    def adopt(self, sbx: Sandbox) -> None:
        """Register a sandbox found again after a restart (its agent already called back).

        Its processes are no longer the node's children, but a pidfd still says
        when its main process exits; `bundle/pid` is where the runtime wrote it.
        """
        try:
            pid = int((sbx.dir / "bundle" / "pid").read_text().strip())
        except (OSError, ValueError):
            raise errors.InternalError(f"sandbox {sbx.id} has no pid file to watch") from None
        sbx.on_change = self._changed
        sbx.transition(State.RUNNING)
        self._sandboxes[sbx.id] = sbx
        self._spawn(self._on_exit(sbx, self._spawn(reaper.wait_exit(pid))))

    def adopt_saved(self, sbx: Sandbox) -> None:
        """Register a sandbox found paused to disk or hibernated after a restart (nothing runs to watch)."""
        sbx.on_change = self._changed
        sbx.transition(State.RUNNING)
        sbx.transition(State.PAUSED)
        if hibernation.marked(sbx):
            sbx.transition(State.HIBERNATED)
        self._sandboxes[sbx.id] = sbx

    def track(self, sbx: Sandbox) -> None:
        """Register a sandbox found again after a restart that recovery is starting again
        (`reboot`, or `memory_pause.load`); `adopt_started` once it runs."""
        sbx.on_change = self._changed
        self._sandboxes[sbx.id] = sbx

    def adopt_started(self, sbx: Sandbox) -> None:
        sbx.transition(State.RUNNING)

    def _spawn(self, coro: Coroutine[Any, Any, None], *, cleanup: bool = False) -> asyncio.Task[None]:
        """Run `coro` as a task the node holds: a watcher (cancelled at close), or a `cleanup` (waited for)."""
        held = self._cleanups if cleanup else self._watchers
        task = asyncio.ensure_future(coro)
        held.add(task)
        task.add_done_callback(held.discard)
        return task

    async def _provision(self, sbx: Sandbox, bundle: Bundle, net_setup: asyncio.Future[SandboxNet] | None) -> None:
        spec, image = sbx.spec, sbx.image
        run_dir = sbx.dir / "run"
        run_dir.mkdir(parents=True)
        os.chmod(run_dir, 0o711)
        # The disk is mounted in a thread while the agent's socket and config are made here.
        mounting = asyncio.ensure_future(asyncio.to_thread(sbx.layer.mount, self.spares, sbx.layer.source))
        try:
            await sbx.conn.listen()
            (run_dir / "config.json").write_text(_agent_config(sbx).model_dump_json())
        finally:
            await asyncio.wait({mounting})  # a failure here leaves a mount the cleanup must see
        mounting.result()
        await afailpoint("node.create.after_mount", sbx.id)
        self._refill_spares()
        root = sbx.layer.rootfs
        safepath.ensure_dir(root, MOUNT_POINT.lstrip("/") + "/run")  # the node's own path, whatever was there
        if sbx.runtime.name == "gvisor" and image.has_glibc:
            _add_preload(root, bundle.statx_fix_in_sandbox)
        res = sbx.runtime.resources(spec.limits.memory_mb << 20, spec.limits.pids)
        config = oci_config(
            sandbox_id=sbx.id,
            spec=spec,
            image=image,
            rootfs=str(root),
            bundle_dir=str(bundle.path),
            run_dir=str(run_dir),
            agent_path=bundle.agent_in_sandbox,
            memory_limit_bytes=res.memory_bytes,
            pids_limit=res.pids,
            extra_env={"SANDLOT_AGENT_CONFIG": f"{MOUNT_POINT}/run/config.json"},
            netns_path=await self._attach_network(sbx, net_setup),
            disk=str(sbx.layer.image_file),
        )
        for m in spec.volumes:  # a sized volume's disk is mounted while a sandbox uses it
            await asyncio.to_thread(self.volumes.mount, m.volume_id)
        config["mounts"] += bind_mounts(self.volumes, spec.volumes)
        sbx.runtime.adjust(config)
        (sbx.dir / "bundle").mkdir()
        (sbx.dir / "bundle" / "config.json").write_text(json.dumps(config, indent=1))
        (sbx.dir / "sandbox.json").write_text(
            json.dumps(
                {
                    "id": sbx.id,
                    "runtime": sbx.runtime.name,
                    "image": image.name,
                    "created_at": sbx.created_at,
                    "volumes": [dataclasses.asdict(m) for m in spec.volumes],
                }
            )
        )

    async def _attach_network(self, sbx: Sandbox, net_setup: asyncio.Future[SandboxNet] | None) -> str | None:
        """Wait for the sandbox's network; point its DNS at the gateway. None: no network."""
        if net_setup is None:
            return None
        sbx.net = await net_setup
        await afailpoint("node.network.before_record", sbx.id)
        _save_network(sbx)
        self.watch_names(sbx.net.policy)
        resolv = self.network.resolv_conf(sbx.net)
        if resolv:
            etc = sbx.layer.rootfs / "etc"
            target = etc / "resolv.conf"
            if target.is_symlink():  # e.g. into /run/systemd: ours replaces it in the writable layer
                target.unlink()
            etc.mkdir(exist_ok=True)
            target.write_text(resolv)
        return str(sbx.net.netns_path)

    async def renew_network(self, sbx: Sandbox) -> None:
        """The namespace as `setup` left it, for a runtime that starts again: runsc takes the
        interface's address into its own netstack when it starts, so a namespace serves one start
        only. Put back in place (`NetworkManager.reset`), or else made afresh."""
        if sbx.net is None or not sbx.runtime.netns_single_use:
            return
        if await self.network.reset(sbx.net):  # in place: 3 tool calls, not a dozen
            return
        old, sbx.net = sbx.net, None
        problems = await self.network.teardown(old)
        if problems:
            raise errors.InternalError(f"removing the old network of sandbox {sbx.id} failed: " + "; ".join(problems))
        await self._attach_network(sbx, asyncio.ensure_future(self.network.setup(sbx.id, old.policy)))

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy | str | dict[str, Any]) -> NetworkPolicy:
        """Change a running sandbox's network policy; it applies at once, no restart.

        A sandbox created with mode `none` has no interface to give a policy to.
        """
        sbx = self.get(sandbox_id)
        new = NetworkPolicy.parse(policy)
        # Under the kill lock: a policy applied after a teardown would leave its table behind.
        async with sbx._kill_lock:
            if sbx.killed:
                raise errors.SandboxStateError(f"cannot change the network of sandbox {sandbox_id}: it is killed")
            if sbx.net is None:
                if not new.connected:
                    return new
                raise errors.SandboxStateError(
                    f"sandbox {sandbox_id} was created with network 'none' and has no interface; create it with "
                    "mode 'egress' (an empty allow list reaches nothing) to change its policy while it runs"
                )
            await self.network.apply(sbx.net, new)
            sbx.spec.network = new
            _save_network(sbx)
        self._changed(sandbox_id)
        self.watch_names(new)
        return new

    def watch_names(self, policy: NetworkPolicy) -> None:
        if policy.names and (self._name_refresher is None or self._name_refresher.done()):
            self._name_refresher = self._spawn(self._refresh_names_forever())

    async def _refresh_names_forever(self) -> None:
        """Keep the addresses behind policy host names current (a task, while any policy names hosts)."""
        while True:
            await asyncio.sleep(NAME_REFRESH_INTERVAL)
            nets = [s for s in list(self._sandboxes.values()) if s.net is not None and s.net.policy.names]
            if not nets:
                return
            for sbx in nets:
                assert sbx.net is not None
                try:
                    async with sbx._kill_lock:
                        if not sbx.killed and await self.network.refresh(sbx.net):
                            _save_network(sbx)
                            self._changed(sbx.id)
                except errors.SandlotError as exc:
                    log.error("refreshing the host names of sandbox %s: %s", sbx.id, exc)

    async def wait_agent(self, sbx: Sandbox, exited: asyncio.Task[None]) -> None:
        waiter = asyncio.ensure_future(sbx.conn.wait_connected(sbx.runtime.agent_connect_timeout))
        await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            tail = _tail(sbx.dir / "runtime.log")
            raise errors.InternalError(f"sandbox {sbx.id} exited before its agent connected: {tail}")
        waiter.result()

    # ------------------------------------------------------------ death and kill

    async def _on_exit(self, sbx: Sandbox, exited: asyncio.Task[None], generation: int | None = None) -> None:
        """When the sandbox's main host process exits on its own, clean up after it."""
        generation = sbx.generation if generation is None else generation
        if not sbx.killed and sbx.generation == generation:
            self.limit_monitor.watch(sbx)
            self.metrics.ensure_running()
        try:
            await exited
        finally:
            self.limit_monitor.forget(sbx.id, generation)
        if sbx.killed or sbx.generation != generation:  # killed, or restarted on purpose (restore)
            return
        reason = (
            "out of memory"
            if _oom_happened(sbx.id)
            else "its agent (the sandbox's init) exited or was killed, and every process in it ended"
        )
        log.warning("sandbox %s died (%s); its runtime log ends: %s", sbx.id, reason, _tail(sbx.dir / "runtime.log"))
        async with sbx._kill_lock:
            if not sbx.killed:
                problems = await self.destroy(sbx, reason)
                self._forget(sbx)
                if problems:
                    log.error("cleanup of dead sandbox %s: %s", sbx.id, "; ".join(problems))
                for listener in self._exit_listeners:
                    listener(sbx.id, reason)

    async def pause(self, sandbox_id: str, memory: bool = False) -> None:
        """Freeze every process of a running sandbox; `resume` continues them.

        With `memory`, the processes and their memory are written to disk and
        the sandbox's processes exit (its memory and CPU are released); its
        filesystem stays mounted. `resume` restores them where they stopped.
        """
        sbx = self.get(sandbox_id)
        await sbx._kill_lock.acquire()
        release: Coroutine[Any, Any, None] | None = None
        try:
            if sbx.state is not State.RUNNING:
                raise errors.SandboxStateError(f"cannot pause sandbox {sandbox_id} in state {sbx.state.value}")
            if memory:
                release = await memory_pause.save_then_release(self, sbx)
            else:
                await sbx.runtime.pause(sandbox_id)
            sbx.transition(State.PAUSED)
        except BaseException:
            if release is not None:
                await release
                release = None
            raise
        finally:
            if release is None:
                sbx._kill_lock.release()
        if release is not None:
            # The pause is done once the memory is on disk; the killed processes' exit and the
            # runtime's cleanup go on behind it, holding the sandbox's lock: whatever comes next
            # (a resume, a kill) waits for them.
            self._spawn(_then_unlock(release, sbx._kill_lock), cleanup=True)

    async def resume(self, sandbox_id: str) -> None:
        sbx = self.get(sandbox_id)
        async with sbx._kill_lock:
            if sbx.state is not State.PAUSED:
                raise errors.SandboxStateError(f"cannot resume sandbox {sandbox_id} in state {sbx.state.value}")
            if memory_pause.saved(sbx):
                await memory_pause.load(self, sbx)
            else:
                await sbx.runtime.resume(sandbox_id)
            sbx.transition(State.RUNNING)

    async def hibernate(self, sandbox_id: str, memory: bool = True) -> None:
        """Release a running sandbox's compute and memory, keeping its filesystem (see hibernation.py).

        With `memory` its processes are saved where the runtime can and come back on `wake`;
        without, they are stopped and `wake` boots the sandbox afresh on its filesystem.
        """
        sbx = self.get(sandbox_id)
        async with sbx._kill_lock:
            if sbx.state is not State.RUNNING:
                raise errors.SandboxStateError(f"cannot hibernate sandbox {sandbox_id} in state {sbx.state.value}")
            await hibernation.hibernate(self, sbx, memory=memory)
            sbx.transition(State.PAUSED)
            sbx.transition(State.HIBERNATED)

    async def wake(self, sandbox_id: str) -> None:
        sbx = self.get(sandbox_id)
        async with sbx._kill_lock:
            if sbx.state is not State.HIBERNATED:
                raise errors.SandboxStateError(f"cannot wake sandbox {sandbox_id} in state {sbx.state.value}")
            await hibernation.wake(self, sbx)
            sbx.transition(State.RUNNING)

    def watch(self, sbx: Sandbox, pid: int) -> asyncio.Task[None]:
        """Watch the sandbox's main host process `pid` (and its gofer) from now on; returns the exit waiter."""
        exited = self._spawn(reaper.wait_exit(pid))
        self._spawn(self._reap_helpers(sbx, pid))
        self._spawn(self._on_exit(sbx, exited, sbx.generation))
        return exited

    # ------------------------------------------------------------ file metadata on the host

    def _backing(self, sbx: Sandbox, path: str) -> tuple[Path, str]:
        volumes = {m.path: self.volumes.get(m.volume_id).data for m in sbx.spec.volumes}
        return file_metadata.backing(path, sbx.layer.rootfs, volumes)

    async def host_file_metadata(self, sandbox_id: str, paths: list[str]) -> dict[str, dict[str, str] | None]:
        """E2B metadata of files the sandbox itself cannot hold it for (FileEntry.metadata_unsupported),
        read from the host's copy of each file (file_metadata.py), by sandbox path."""
        sbx = self.get(sandbox_id)

        def read() -> dict[str, dict[str, str] | None]:
            return {path: file_metadata.read(*self._backing(sbx, path)) for path in paths}

        return await asyncio.to_thread(read)

    async def set_host_file_metadata(self, sandbox_id: str, path: str, metadata: dict[str, str]) -> None:
        """Make `metadata` the whole E2B metadata of a file the sandbox cannot hold it for."""
        sbx = self.get(sandbox_id)
        await asyncio.to_thread(file_metadata.replace, *self._backing(sbx, path), metadata)

    # ------------------------------------------------------------ volumes

    def delete_volume(self, volume_id: str) -> None:
        """Delete a volume and its files; refused while a sandbox of this node mounts it."""
        users = [s.id for s in self._sandboxes.values() if any(m.volume_id == volume_id for m in s.spec.volumes)]
        if users:
            raise errors.ConflictError(
                f"volume {volume_id} is mounted by sandbox(es) {', '.join(sorted(users))}; kill them first"
            )
        self.volumes.delete(volume_id)

    # ------------------------------------------------------------ checkpoints

    async def checkpoint(self, sandbox_id: str, name: str, memory: bool = False) -> Checkpoint:
        """Checkpoint the filesystem of a running or paused sandbox (frozen while it is copied).

        With `memory` (a running sandbox, a runtime that saves memory), the
        processes and their memory are saved too, and `restore` brings them back.
        """
        sbx = self.get(sandbox_id)
        async with sbx._kill_lock:
            if sbx.state not in (State.RUNNING, State.PAUSED):
                raise errors.SandboxStateError(f"cannot checkpoint sandbox {sandbox_id} in state {sbx.state.value}")
            was_running = sbx.state is State.RUNNING
            await asyncio.to_thread(self.disks.check_room, f"checkpoint sandbox {sandbox_id}")
            if memory:
                sbx.runtime.check_saves_memory()
                if not was_running:
                    raise errors.SandboxStateError(
                        f"cannot checkpoint the memory of sandbox {sandbox_id} in state {sbx.state.value}; resume it"
                    )

                async def with_memory(dest: Path) -> None:
                    await memory_pause.save(self, sbx, dest.parent / "memory")
                    try:
                        await afailpoint("node.checkpoint.memory_saved", sandbox_id)
                        await asyncio.to_thread(sbx.layer.snapshot, dest)
                    finally:
                        await memory_pause.load(self, sbx, dest.parent / "memory")
                        intent.end(sbx.dir)

                return await self.checkpoints.take(sandbox_id, name, sbx.spec, with_memory, memory=True)

            async def snapshot(dest: Path) -> None:
                await sbx.runtime.snapshot_disk(sandbox_id, sbx.layer, dest, running=was_running)

            return await self.checkpoints.take(sandbox_id, name, sbx.spec, snapshot)

    async def restore(self, sandbox_id: str, checkpoint_id: str) -> None:
        """Roll the sandbox's filesystem back to one of its checkpoints; its processes start afresh.

        The checkpoint's disk is cloned before anything stops, so a failure
        there (a full disk store) leaves the sandbox as it was.
        """
        sbx = self.get(sandbox_id)
        ck = self.checkpoints.get(checkpoint_id)
        if ck.sandbox_id != sandbox_id:
            raise errors.InvalidArgumentError(
                f"checkpoint {checkpoint_id} is of sandbox {ck.sandbox_id}, not {sandbox_id}; "
                "fork it to start a sandbox from it",
                field="checkpoint_id",
            )
        async with sbx._kill_lock:
            if sbx.state not in (State.RUNNING, State.PAUSED):
                raise errors.SandboxStateError(f"cannot restore sandbox {sandbox_id} in state {sbx.state.value}")
            await asyncio.to_thread(self.disks.check_room, f"restore sandbox {sandbox_id}")
            staged = await asyncio.to_thread(sbx.layer.stage, ck.disk)
            # From the halt on, the sandbox runs nothing: a node killed now finishes the restore (recovery.py).
            intent.begin(sbx.dir, restore=ck.id, staged=str(staged))
            try:

                async def swap() -> None:
                    await afailpoint("node.restore.after_halt", sandbox_id)
                    # Independent steps, side by side: the disk, and the fresh network namespace
                    # the next start needs (runsc's netstack took the old one's address).
                    done = await asyncio.gather(
                        asyncio.to_thread(sbx.layer.swap, staged), self.renew_network(sbx), return_exceptions=True
                    )
                    for result in done:
                        if isinstance(result, BaseException):
                            raise result
                    await afailpoint("node.restore.after_swap", sandbox_id)

                await self.halt(sbx, meanwhile=swap)
                await self.finish_restore(sbx, ck, network_ready=True)
            except BaseException as exc:
                staged.unlink(missing_ok=True)
                problems = await self.destroy(sbx, f"failed to restore checkpoint {checkpoint_id}: {exc}")
                self._forget(sbx)
                if problems:
                    log.error("cleanup after a failed restore of %s: %s", sandbox_id, "; ".join(problems))
                raise
            intent.end(sbx.dir)
            if sbx.state is State.PAUSED:
                sbx.transition(State.RUNNING)

    async def finish_restore(self, sbx: Sandbox, ck: Checkpoint, *, network_ready: bool = False) -> None:
        """Start a halted sandbox whose disk is now the checkpoint's: its saved processes, or a fresh boot.

        `network_ready`: its network was already renewed since the halt (`renew_network`)."""
        if ck.memory:  # the processes come back too, as they were at the checkpoint
            await memory_pause.load(self, sbx, ck.memory_image, network_ready=network_ready)
        else:
            await self.reboot(sbx, network_ready=network_ready)

    async def halt(self, sbx: Sandbox, meanwhile: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop a sandbox's runtime and every host process, keeping its disk and bundle (for a reboot).

        Every host process gets SIGKILL at once; once they are gone nothing
        uses the sandbox's files, and `meanwhile` (a restore's disk swap) runs
        beside the runtime's own cleanup (`runsc delete`) instead of after it.
        """
        sbx.generation += 1
        self.limit_monitor.forget(sbx.id)
        await sbx.conn.close()
        memory_pause.forget(sbx)  # a restored filesystem does not match the saved memory
        if sbx.state is State.PAUSED:  # a frozen sandbox cannot act on its kill signals
            with contextlib.suppress(errors.SandlotError):
                await sbx.runtime.resume(sbx.id)
        problems = await _wait_gone(sbx.runtime.terminate(sbx.id))
        if problems:
            raise errors.InternalError(f"stopping sandbox {sbx.id} failed: " + "; ".join(problems))
        # `meanwhile` first, a turn of the loop ahead: the threads it starts (a restore's disk swap,
        # ~10 ms) are queued before the cleanup's own work, which holds the event loop for as long.
        beside = None
        if meanwhile is not None:
            beside = asyncio.ensure_future(meanwhile())
            await asyncio.sleep(0)
        cleanup = asyncio.ensure_future(sbx.runtime.destroy(sbx.id))
        try:
            if beside is not None:
                await beside
        finally:
            problems = await cleanup
        if problems:
            raise errors.InternalError(f"stopping sandbox {sbx.id} failed: " + "; ".join(problems))

    async def reboot(self, sbx: Sandbox, *, network_ready: bool = False) -> None:
        """Boot a halted sandbox again on its own filesystem: a fresh network (unless `network_ready`:
        renewed since the halt), agent and exit watcher."""
        if not network_ready:
            await self.renew_network(sbx)
        await sbx.reconnect()
        exited = await self.boot(sbx)
        self._spawn(self._on_exit(sbx, exited, sbx.generation))

    async def fork(self, checkpoint_id: str, count: int = 1) -> list[Sandbox]:
        """Start `count` new sandboxes from a checkpoint, each on its own copy of its filesystem.

        A memory checkpoint's processes are not forked: each new sandbox boots afresh on the files.
        """
        if not isinstance(count, int) or not 1 <= count <= MAX_FORK:
            raise errors.InvalidArgumentError(f"count must be between 1 and {MAX_FORK}, got {count!r}", field="count")
        ck = self.checkpoints.get(checkpoint_id)
        spec = spec_from_dict(ck.spec).validate()
        await asyncio.to_thread(self.disks.check_room, f"fork checkpoint {checkpoint_id}")
        results = await asyncio.gather(*(self._start(spec, ck.disk) for _ in range(count)), return_exceptions=True)
        made = [r for r in results if isinstance(r, Sandbox)]
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            for sbx in made:
                with contextlib.suppress(errors.SandlotError):
                    await self.kill(sbx.id)
            raise failed[0]
        return made

    async def kill(self, sandbox_id: str) -> None:
        """Stop every process at once and free everything the sandbox holds. Idempotent.

        Kills never queue behind starts. The sandbox's host processes get
        SIGKILL first, so its CPU is free at once; then its runtime state,
        network and files are cleaned up, and a step that fails (a runtime
        command that timed out on an overloaded host) is retried in the
        background until it is done. Returns once the cleanup is done, or after
        KILL_WAIT_S with the cleanup still going on: the sandbox is dead either way.
        """
        sbx = self._sandboxes.get(sandbox_id)
        if sbx is None:
            raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found")
        async with sbx._kill_lock:
            if sbx.killed:
                return
            cleaned = await self._stop(sbx, "killed")
            self._forget(sbx)
        done, _ = await asyncio.wait({cleaned}, timeout=KILL_WAIT_S)
        if done and cleaned.result():
            log.warning(
                "sandbox %s was killed, but its cleanup failed (retrying in the background): %s",
                sandbox_id,
                "; ".join(cleaned.result()),
            )

    async def destroy(self, sbx: Sandbox, reason: str) -> list[str]:
        """Stop the sandbox and clean up in order, keeping going after failures; return them all.

        Failed steps are retried in the background until done. For sandboxes
        this node does not track (found again after a restart and not wanted)
        and ones that died; tracked ones are killed with `kill`.
        """
        return await (await self._stop(sbx, reason))

    async def _stop(self, sbx: Sandbox, reason: str) -> asyncio.Future[list[str]]:
        """SIGKILL every host process of the sandbox now, then start its cleanup.

        Returns a future of the first cleanup pass's problems; the cleanup
        task retries what failed until done (`_cleanups` holds it meanwhile).
        """
        was_paused = sbx.state is State.PAUSED
        if not sbx.killed:
            sbx.transition(State.KILLED)
        sbx.exit_reason = reason
        self.limit_monitor.forget(sbx.id)
        if was_paused:  # a frozen sandbox cannot act on its kill signals
            with contextlib.suppress(errors.SandlotError):
                await sbx.runtime.resume(sbx.id)
        pids = sbx.runtime.terminate(sbx.id)
        with contextlib.suppress(Exception):
            await sbx.conn.close()
        first: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._spawn(self._clean_up(sbx, pids, first), cleanup=True)
        return first

    async def _clean_up(self, sbx: Sandbox, pids: list[int], first: asyncio.Future[list[str]]) -> None:
        """Reap the stopped sandbox's processes, then remove its runtime state, network and files;
        each step that fails is retried until done."""

        async def runtime() -> list[str]:
            problems = await sbx.runtime.destroy(sbx.id)
            await afailpoint("node.destroy.after_runtime", sbx.id)
            return problems

        async def processes() -> list[str]:
            return await _wait_gone(pids)

        async def network() -> list[str]:
            if sbx.net is None:
                return []
            problems = await self.network.teardown(sbx.net)
            await afailpoint("node.destroy.after_network", sbx.id)
            return problems

        async def files() -> list[str]:
            return await asyncio.to_thread(sbx.layer.remove)

        async def volumes() -> list[str]:
            return await self._release_volumes(sbx)

        steps = [processes, runtime, network, files, volumes]
        delay = 1.0
        try:
            while True:
                problems: list[str] = []
                failed = []
                async with self._cleanup_slots:
                    for step in steps:
                        try:
                            got = await step()
                        except Exception as exc:  # keep cleaning: the mounts and files must still go
                            got = [f"{step.__name__}: {exc}"]
                        if got:
                            problems += got
                            failed.append(step)
                if not first.done():
                    first.set_result(problems)
                if not failed:
                    return
                log.warning("cleanup of sandbox %s: %s; retrying in %.0fs", sbx.id, "; ".join(problems), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, CLEANUP_RETRY_MAX_S)
                steps = failed
        finally:
            if not first.done():
                first.set_result(["the cleanup was interrupted"])

    async def _release_volumes(self, gone: Sandbox) -> list[str]:
        """Unmount the volumes of `gone` that no other live sandbox of this node mounts."""
        problems: list[str] = []
        for m in gone.spec.volumes:
            if not any(
                s is not gone and not s.killed and any(o.volume_id == m.volume_id for o in s.spec.volumes)
                for s in self._sandboxes.values()
            ):
                problems += await asyncio.to_thread(self.volumes.unmount, m.volume_id)
        return problems

    async def settle(self) -> None:
        """Let the cleanups still running (retries, releases after a pause with memory) finish their
        work, for a while; what is left then is swept at the next start."""
        if self._cleanups:
            _, pending = await asyncio.wait(set(self._cleanups), timeout=CLOSE_CLEANUP_WAIT_S)
            for task in pending:
                task.cancel()

    async def close(self) -> None:
        """Kill every sandbox (the library's shutdown; `sandlot serve` keeps them)."""
        await self.pool.close()
        # All at once: one by one, a loaded host takes longer than a service manager waits.
        await asyncio.gather(*(self.kill(sbx.id) for sbx in list(self._sandboxes.values())), return_exceptions=True)
        await self.settle()
        for task in list(self._watchers):
            task.cancel()
        await self.limit_monitor.close()
        await self.metrics.close()

        await self.release_disks()

    async def release_disks(self) -> None:
        """Unmount the spare disks, then the disk store when no sandbox disk is left in it."""
        if self._refilling is not None:  # a thread: let it finish its spare
            with contextlib.suppress(Exception):
                await self._refilling
        for problem in await asyncio.to_thread(self.spares.unmount_all):
            log.error("%s", problem)
        for problem in await asyncio.to_thread(self.disks.release):
            log.error("unmounting the disk store: %s", problem)


async def _then_unlock(work: Coroutine[Any, Any, None], lock: asyncio.Lock) -> None:
    try:
        await work
    except Exception:  # (no caller to raise it to)
        log.exception("releasing a sandbox whose memory was saved")
    finally:
        lock.release()


async def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[str]:
    """Wait for a destroyed sandbox's host processes to exit, reaping those re-parented to us."""
    waits = [asyncio.ensure_future(reaper.wait_exit(pid)) for pid in pids]
    if waits:
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for w in pending:
            w.cancel()
    reaper.sweep()
    left = [pid for pid in pids if reaper.is_live(pid)]
    return [f"host processes still running: {left}"] if left else []


def _raise_nofile_limit() -> None:
    """Each sandbox holds a few of the node's descriptors (agent socket, pidfds, eventfds):
    the default soft limit (1024) would cap a node at a few hundred sandboxes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _agent_config(sbx: Sandbox) -> p.AgentConfig:
    """What the agent reads at its start (`run/config.json`): the sandbox's defaults and limits."""
    spec, iconf, limits = sbx.spec, sbx.image.config, sbx.spec.limits
    return p.AgentConfig(
        sandbox_id=sbx.id,
        env={**iconf.env, **spec.env},
        cwd=spec.cwd or iconf.cwd,
        user=spec.user or iconf.user,
        hostname=spec.hostname,
        memory_limit_bytes=limits.memory_mb << 20,
        pids_limit=limits.pids,
        dev_bytes=DEV_TMPFS_BYTES,
        shm_bytes=shm_bytes(limits.memory_mb),
        reserve_threads=sbx.runtime.agent_threads,
    )


def _save_network(sbx: Sandbox) -> None:
    """Beside the sandbox, so a restarted node finds (and can tear down) its network."""
    assert sbx.net is not None
    (sbx.dir / "network.json").write_text(sbx.net.to_json())


def _add_preload(root: Path, lib: str) -> None:
    """Make glibc programs load `lib` (see bundle.STATX_FIX_C), keeping the image's own list.

    The sandbox's /etc is its own: a symlink there is never followed on the host (safepath).
    """
    target = safepath.no_symlink_parents(root, "etc/ld.so.preload")
    if target is None:  # /etc is a link (or missing): leave it be; only `ls -l` and `stat` miss the fix
        return
    existing = safepath.read_file(target)
    if lib not in existing.split():
        safepath.write_file(target, existing + ("" if existing.endswith("\n") or not existing else "\n") + lib + "\n")


def _oom_happened(sandbox_id: str) -> bool:
    for h in cgroups.paths(sandbox_id):
        f = h / "memory.oom_control"
        if f.exists():
            with contextlib.suppress(OSError, ValueError):
                fields = dict(line.split() for line in f.read_text().splitlines())
                return int(fields.get("oom_kill", "0")) > 0 or fields.get("under_oom") == "1"
    return False


def _out_of_space(exc: BaseException) -> bool:
    """An ENOSPC from the host's side (our own writes, or a runtime's), not already a clear NoSpaceError."""
    if isinstance(exc, errors.NoSpaceError):
        return False
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return isinstance(exc, errors.InternalError) and "no space left on device" in str(exc).lower()


def _tail(path: Path, n: int = 6000) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace").strip() or "(no output)"
    except OSError:
        return "(no log)"
