"""The one interface every isolation backend implements.

A runtime starts an OCI bundle whose init is the Sandlot agent, and stops it.
It never talks to the agent: that is the agent protocol's job, the same for
every runtime. So a new isolation technology adds a `Runtime` and nothing else.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sandlot import errors
from sandlot.node import reaper

if TYPE_CHECKING:
    from sandlot.node.rootfs import WritableLayer

__all__ = ["Resources", "Runtime", "run_or_raise", "run_tool", "start_detached"]


@dataclass(frozen=True)
class Resources:
    """Limits as the host enforces them, after the runtime added its own overhead."""

    memory_bytes: int
    pids: int


async def run_tool(*argv: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run a runtime's CLI; returns (exit code, stderr+stdout). Never raises for a non-zero exit."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    reaper.protected.add(proc.pid)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):  # it may end just now
            proc.kill()
        await proc.wait()
        return -1, f"{argv[0]} {argv[1] if len(argv) > 1 else ''} timed out after {timeout:.0f}s"
    finally:
        reaper.protected.discard(proc.pid)
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def run_or_raise(what: str, *argv: str) -> None:
    rc, out = await run_tool(*argv)
    if rc != 0:
        raise errors.InternalError(f"{what}: {out}")


async def start_detached(cli: list[str], log: Path, pid_file: Path, what: str) -> int:
    """Run a runtime's `run --detach`; the sandbox inherits `log` as its stdio.

    The sandbox gets a session of its own: it must not die with the node's
    process group (a Ctrl-C to `sandlot serve` must not kill every sandbox).
    """
    with open(log, "ab") as out:
        before = out.tell()  # the log is the sandbox's across boots: an error tells of this one
        proc = await asyncio.create_subprocess_exec(
            *cli, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
        reaper.protected.add(proc.pid)
        try:
            rc = await proc.wait()
        finally:
            reaper.protected.discard(proc.pid)
    if rc != 0:
        tail = log.read_bytes()[before:][-2000:].decode(errors="replace").strip()
        raise errors.InternalError(f"{what}: {tail}")
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        raise errors.InternalError(f"{what}: the runtime wrote no pid file") from None


class Runtime(abc.ABC):
    """An isolation backend: gvisor (runsc), container (crun) or microvm (QEMU)."""

    name: ClassVar[str]
    binary: ClassVar[str]
    #: How long one CLI call of `destroy` may take before it is killed (the node retries it).
    cleanup_timeout_s: float = 30.0

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)

    def check(self) -> None:
        """Raise RuntimeUnavailableError, saying what to install, when this host cannot run it."""
        if shutil.which(self.binary) is None:
            raise errors.RuntimeUnavailableError(
                f"runtime {self.name!r} needs {self.binary}, which is not installed (Debian package {self.binary})"
            )

    @property
    def accelerator(self) -> str | None:
        """The hardware acceleration this runtime chose at its start, if it chooses one (microvm)."""
        return None

    async def describe(self) -> dict[str, str]:
        """What a health report says of this runtime beyond "available" (microvm: its accelerator)."""
        return {}

    def prune_cache(self) -> list[Path]:
        """Delete what this runtime built from template layers that are gone; return it (default: none)."""
        return []

    @abc.abstractmethod
    def resources(self, memory_bytes: int, pids: int) -> Resources:
        """Host-side limits for a sandbox whose processes may use `memory_bytes` and `pids`."""

    @abc.abstractmethod
    def adjust(self, config: dict[str, Any]) -> None:
        """Edit the shared OCI config for this runtime (in place)."""

    @abc.abstractmethod
    async def start(self, sandbox_id: str, bundle: Path, log: Path, *, connected: bool = False) -> int:
        """Create and start the sandbox; return the host pid whose exit means the sandbox died.

        `connected`: the bundle's config joins a network namespace the node made
        (node/network.py), whose interface the sandbox must use.
        """

    def start_failed_transiently(self, exc: BaseException) -> bool:
        """Whether `start` failed in a way its next try may not (the runtime's own race under load):
        the node then `destroy`s what the try left and starts again (`Node.boot`, a few times)."""
        return False

    @abc.abstractmethod
    async def destroy(self, sandbox_id: str) -> list[str]:
        """Kill every process and release the runtime's state. Idempotent; returns failures."""

    @abc.abstractmethod
    async def pause(self, sandbox_id: str) -> None:
        """Freeze every process of the sandbox (no CPU used); memory stays where it is."""

    @abc.abstractmethod
    async def resume(self, sandbox_id: str) -> None:
        """Undo `pause`: the processes continue exactly where they stopped."""

    #: Whether `save_memory` / `restore_memory` work with this runtime on this host.
    saves_memory: ClassVar[bool] = False
    #: Why not, for the error a caller gets (e.g. "CRIU does not work on this host").
    saves_memory_not_why: ClassVar[str] = "this runtime cannot save a sandbox's memory"

    def check_saves_memory(self) -> None:
        """Raise InvalidArgumentError naming the runtime unless it can pause with memory to disk."""
        if not self.saves_memory:
            raise errors.InvalidArgumentError(
                f"runtime {self.name!r} cannot pause a sandbox with its memory on this host "
                f"({self.saves_memory_not_why}); pause it without memory (a freeze) or use runtime 'gvisor'",
                field="memory",
            )

    async def save_memory(self, sandbox_id: str, image_dir: Path) -> None:
        """Write every process and its memory to `image_dir`; the sandbox's processes then exit."""
        self.check_saves_memory()

    async def restore_memory(
        self, sandbox_id: str, bundle: Path, image_dir: Path, log: Path, *, connected: bool = False
    ) -> int:
        """Start the sandbox again from `save_memory`'s image; returns the pid whose exit means it died."""
        self.check_saves_memory()
        raise AssertionError("unreachable")

    #: Whether the sandbox runs on the host's overlay of its layer (gvisor, crun); a guest
    #: kernel (microvm) mounts the layer's disk itself, and the host's view stays unmounted.
    mounts_rootfs_on_host: ClassVar[bool] = True
    #: Whether a memory image keeps the sandbox's open TCP connections (gVisor's cannot: memory_pause.py).
    saves_open_connections: ClassVar[bool] = False
    #: Whether a memory image may be taken while the agent's link to the node is open. gVisor's
    #: cannot: the link is a host Unix socket, which the image can hold only once the agent has
    #: closed it (a save that caught it closing failed with "encoding error at object
    #: transport.connectionedEndpoint"); a microVM's link is a device of the VM, saved with it.
    saves_agent_link: ClassVar[bool] = False
    #: The OS threads the agent takes at its start and keeps (AgentConfig.reserve_threads): a runtime
    #: whose host pids limit counts the agent's threads with the sandbox's processes sets it
    agent_threads: ClassVar[int] = 0
    #: How long a started sandbox's agent may take to dial in.
    agent_connect_timeout: ClassVar[float] = 30.0
    #: Whether the sandbox's network namespace serves one start only (runsc takes the address into its
    #: own netstack); the node then makes a fresh one before each start (`Node.renew_network`).
    netns_single_use: ClassVar[bool] = True

    async def prepare_disk(self, layer: WritableLayer) -> None:
        """Before each start: make the writable layer what this runtime boots from.

        gvisor and crun run on the host's overlay of the layer as it is; a runtime
        whose guest kernel mounts the disk itself unmounts the host's view first.
        """
        return None

    async def snapshot_disk(self, sandbox_id: str, layer: WritableLayer, dest: Path, *, running: bool) -> None:
        """Clone the sandbox's disk, consistent, to `dest` (a checkpoint); its processes are held meanwhile."""
        if running:
            await self.pause(sandbox_id)
        try:
            await asyncio.to_thread(layer.snapshot, dest)
        finally:
            if running:
                await self.resume(sandbox_id)

    @abc.abstractmethod
    async def alive(self, sandbox_id: str) -> bool:
        """Whether the sandbox's init still exists (running or paused)."""

    @abc.abstractmethod
    def host_pids(self, sandbox_id: str) -> list[int]:
        """Host pids of every process this sandbox adds to the host (for accounting and tests)."""

    def terminate(self, sandbox_id: str) -> list[int]:
        """SIGKILL every host process of the sandbox now, with no CLI to start first (on a loaded
        host its CPU is free at once); `destroy` then cleans up. Returns the pids it signalled."""
        pids = self.host_pids(sandbox_id)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def running(self, sandbox_id: str) -> bool:
        """Whether any host process of the sandbox is alive (not a zombie): `destroy` must kill it."""
        return any(reaper.is_live(pid) for pid in self.host_pids(sandbox_id))
