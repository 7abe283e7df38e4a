"""Find a node's sandboxes again after the process that ran it died (SIGKILL, crash, upgrade).

Sandboxes outlive the node process: the runtime's processes run in their own
session, the writable layer stays mounted, and the agent keeps redialling
`<data dir>/sandboxes/<id>/run/agent.sock`. `recover` walks that directory and,
for each sandbox the caller still wants:

- running (its runtime alive): listen on its socket again, wait for the agent's
  hello, register it as running; whatever an interrupted operation was making
  for it (a staged restore, a memory image, a hibernation marker) is dropped;
- not running, but stopped by an operation of ours that the crash cut short:
  a restore (a write-ahead record, intent.py) is finished; a memory save whose
  image is whole is taken as done (paused with memory, or hibernated); a
  checkpoint with memory brings the processes back from the checkpoint's image;
- hibernated without memory (a marker): registered as hibernated;
- anything else (a sandbox nobody wants, one that died on its own while the
  node was down, one whose agent never calls back) is destroyed like a killed
  sandbox: runtime state, cgroups, network, mounts and files, every failure
  reported.

Then what interrupted steps left without a sandbox to own it is swept: networks
and runtime state of sandboxes that are gone, their disks in the disk store,
half-made or half-deleted checkpoints and volumes, spare disks being made, image
store scratch of processes that are gone. A disk left frozen by a checkpoint is
thawed first. One sandbox's failure never stops the others' recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sandlot import errors
from sandlot.agent.client import AgentConnection
from sandlot.node import hibernation, intent, memory_pause
from sandlot.node.images import Image, ImageConfig
from sandlot.node.network import SandboxNet
from sandlot.node.node import Node
from sandlot.node.rootfs import WritableLayer
from sandlot.node.sandbox import Sandbox
from sandlot.node.spec import SANDBOX_ID_RE, SandboxSpec
from sandlot.node.volumes import VolumeMount

__all__ = ["RecoveryReport", "recover"]

log = logging.getLogger("sandlot.node.recovery")

#: The agent redials every few tens of milliseconds; a live one calls back at once.
REDIAL_TIMEOUT = 10.0
_SANDBOX_ID_IN = re.compile(r"sb-[0-9a-z]{16}")


@dataclass
class RecoveryReport:
    adopted: list[str] = field(default_factory=list)
    #: sandbox id -> why it is gone (it was cleaned up)
    lost: dict[str, str] = field(default_factory=dict)
    #: cleanup failures, per sandbox id
    problems: dict[str, list[str]] = field(default_factory=dict)


async def recover(node: Node, wanted: Mapping[str, SandboxSpec]) -> RecoveryReport:
    """Re-adopt the live sandboxes in `wanted` and destroy every other one on disk.

    Args:
        node: a fresh node on the data directory the dead process used.
        wanted: the specs of the sandboxes the caller's records say are running.

    Returns:
        What was adopted, what was lost (and cleaned up) and why.
    """
    report = RecoveryReport()
    if node.disks.backing.exists():
        await asyncio.to_thread(node.disks.ensure)  # the sandboxes' disks and the checkpoints are files in it
    # Before any sandbox's disk is mounted again: a spare mount may hold one (the node stopped mid-take).
    swept = await asyncio.to_thread(node.spares.sweep) if node.disks.mounted else []
    found: dict[str, Path] = {}
    if node.sandboxes_dir.is_dir():
        for sdir in sorted(node.sandboxes_dir.iterdir()):
            if sdir.is_dir() and SANDBOX_ID_RE.match(sdir.name) and not node.knows(sdir.name):
                found[sdir.name] = sdir
    for sandbox_id in wanted:
        if sandbox_id not in found and not node.knows(sandbox_id):
            report.lost[sandbox_id] = "its files were gone when the node restarted"
    results = await asyncio.gather(*(_recover_one_safely(node, s, d, wanted.get(s)) for s, d in found.items()))
    for sid, (adopted, reason, problems) in zip(found, results, strict=True):
        if adopted:
            report.adopted.append(sid)
        else:
            report.lost[sid] = reason
        if problems:
            report.problems[sid] = problems
            log.error("cleanup of sandbox %s after a restart: %s", sid, "; ".join(problems))
    # Networks whose sandbox directory is gone (a crash mid-create or mid-kill).
    known = node.known_ids()
    for sid, problems in (await node.network.sweep(known)).items():
        if problems:
            report.problems.setdefault(sid, []).extend(problems)
            log.error("cleanup of the network of sandbox %s after a restart: %s", sid, "; ".join(problems))
    for sid, problems in (await _sweep_runtimes(node, known)).items():
        report.problems.setdefault(sid, []).extend(problems)
    swept += await asyncio.to_thread(_sweep_files, node, known)
    if swept:
        log.info("removed what interrupted steps left: %s", ", ".join(str(p) for p in swept))
    return report


async def _sweep_runtimes(node: Node, known: set[str]) -> dict[str, list[str]]:
    """Runtime state (runsc, crun) of sandboxes whose directory is gone: their runtime is destroyed."""
    problems: dict[str, list[str]] = {}
    if not node.state_dir.is_dir():
        return problems
    for root in node.state_dir.iterdir():
        runtime_name = {"runsc": "gvisor", "crun": "container"}.get(root.name)
        if runtime_name is None or not root.is_dir():
            continue
        ids = {m.group(0) for entry in root.iterdir() for m in [_SANDBOX_ID_IN.search(entry.name)] if m}
        for sid in sorted(ids - known):
            try:
                left = await node.runtime(runtime_name).destroy(sid)
            except errors.SandlotError as exc:
                left = [str(exc)]
            if left:
                problems[sid] = left
    return problems


def _sweep_files(node: Node, known: set[str]) -> list[Path]:
    """Debris of steps a killed node never finished: half-made or half-deleted checkpoints and
    volumes, disks of sandboxes that are gone, spare disks being made, image layers being unpacked."""
    swept: list[Path] = []
    if node.disks.mounted:
        swept += node.disks.sweep(known)
        swept += node.checkpoints.sweep()
    swept += node.volumes.sweep()
    swept += node.images.sweep()
    return swept


async def _recover_one_safely(
    node: Node, sandbox_id: str, sdir: Path, spec: SandboxSpec | None
) -> tuple[bool, str, list[str]]:
    """`_recover_one`, where a failure (a tool timing out on a loaded host) loses this sandbox, never the start."""
    started = time.monotonic()
    try:
        adopted, reason, problems = await _recover_one(node, sandbox_id, sdir, spec)
        log.info(
            "sandbox %s: %s after %.1f s",
            sandbox_id, "adopted" if adopted else f"lost ({reason})", time.monotonic() - started,
        )  # fmt: skip
        return adopted, reason, problems
    except Exception as exc:
        log.exception("recovering sandbox %s", sandbox_id)
        return False, f"recovering it after the restart failed: {exc}", [f"recovery: {exc!r}"]


async def _recover_one(
    node: Node, sandbox_id: str, sdir: Path, spec: SandboxSpec | None
) -> tuple[bool, str, list[str]]:
    try:
        saved = json.loads((sdir / "sandbox.json").read_text())
        runtime_name = str(saved.get("runtime") or (spec.runtime if spec else "gvisor"))
        image_name = str(saved.get("image") or "")
        created_at = float(saved.get("created_at") or 0.0)
        volumes = [VolumeMount(**v) for v in saved.get("volumes") or []]
    except (OSError, ValueError, TypeError):
        runtime_name, image_name, created_at = (spec.runtime if spec else "gvisor"), "", 0.0
        volumes = []
    if spec is not None:
        spec.volumes = volumes
    try:
        runtime = node.runtime(runtime_name)
    except errors.SandlotError as exc:
        return False, f"its runtime is unavailable: {exc}", [f"runtime {runtime_name}: {exc}"]
    image = node.images.get(image_name) if image_name else None
    wanted = spec is not None and image is not None
    spec = spec or SandboxSpec(image=image_name or "unknown", runtime=runtime_name)
    # Disks live in the node's disk store (sandboxes made before it: `disk.img` in their directory).
    disk = node.disks.disk_of(sandbox_id)
    disk_file = disk if disk.exists() or not (sdir / "disk.img").exists() else None
    layer = WritableLayer(sdir, image.lowerdir if image else "/nonexistent", spec.limits.disk_mb << 20, disk_file)
    conn = AgentConnection(str(sdir / "run" / "agent.sock"), sandbox_id, node.config.agent_timeout_s)
    sbx = Sandbox(sandbox_id, spec, image or Image(image_name, (), ImageConfig()), runtime, sdir, layer, conn)
    if created_at:
        sbx.created_at = created_at
    net_file = sdir / "network.json"
    if net_file.exists():  # its rules are still loaded: the kernel kept them
        try:
            sbx.net = SandboxNet.from_json(net_file.read_text())
            spec.network = sbx.net.policy
            node.watch_names(spec.network)
        except (OSError, ValueError, KeyError, errors.SandlotError) as exc:
            log.error("sandbox %s: unreadable network.json (%s); its network is swept", sandbox_id, exc)
    # A checkpoint killed while it had the disk frozen would leave every write in it hanging.
    if await asyncio.to_thread(layer.thaw):
        log.warning("sandbox %s: its disk was left frozen by an interrupted checkpoint; thawed", sandbox_id)

    reason = await _adopt(node, sbx, wanted=wanted)
    if reason is None:
        intent.end(sdir)
        return True, "", []
    problems = await node.destroy(sbx, reason)
    node._forget(sbx)
    return False, reason, problems


async def _adopt(node: Node, sbx: Sandbox, *, wanted: bool) -> str | None:
    """Make `sbx` a sandbox of `node` again; None on success, else why not (the caller destroys it)."""
    if not wanted:
        return "no record of it survived the restart"
    if await sbx.runtime.alive(sbx.id):
        return await _adopt_running(node, sbx)
    # Nothing runs: what its runtime kept of it (state, cgroups) goes first, whatever comes next.
    problems = await sbx.runtime.destroy(sbx.id)
    if problems:
        return "its stopped runtime could not be cleaned up: " + "; ".join(problems)
    record = intent.read(sbx.dir) or {}
    image = await asyncio.to_thread(_memory_image, sbx, record)
    if "restore" not in record and image is None and not hibernation.marked(sbx):
        if record:
            return "an operation the restart interrupted had stopped it, and left nothing to start it from"
        return "it stopped while the node was down"
    try:
        if sbx.runtime.mounts_rootfs_on_host and not sbx.layer.mounted:  # a host reboot, a restore killed mid-swap
            await asyncio.to_thread(sbx.layer.remount)
        if "restore" in record:
            return await _finish_restore(node, sbx, record)
        if image is not None and image != memory_pause.image_dir(sbx):
            # A checkpoint with memory was killed between saving the processes and taking them back.
            node.track(sbx)
            await memory_pause.load(node, sbx, image)
            node.adopt_started(sbx)
            return None
    except (OSError, errors.SandlotError) as exc:
        return f"it could not be started again after the restart: {exc}"
    node.adopt_saved(sbx)  # paused with its memory on disk, or hibernated: it waits for a resume
    return None


async def _adopt_running(node: Node, sbx: Sandbox) -> str | None:
    if sbx.runtime.mounts_rootfs_on_host and not sbx.layer.mounted:
        return "its root filesystem was unmounted while the node was down"
    # It runs, so whatever an interrupted operation was making is moot: a staged
    # restore, a memory image not taken back, the hibernation marker.
    sbx.layer.staged.unlink(missing_ok=True)
    shutil.rmtree(memory_pause.image_dir(sbx).with_name("memory.tmp"), ignore_errors=True)
    memory_pause.forget(sbx)
    hibernation.unmark(sbx)
    # A paused sandbox's agent is frozen and cannot call back: thaw it first
    # (resuming a running sandbox is a harmless error); the caller re-pauses it.
    with contextlib.suppress(errors.SandlotError):
        await sbx.runtime.resume(sbx.id)
    try:
        await sbx.conn.listen()
        await sbx.conn.wait_connected(REDIAL_TIMEOUT)
    except (OSError, errors.SandlotError) as exc:
        return f"its agent did not call back after the restart: {exc}"
    try:
        node.adopt(sbx)
    except errors.SandlotError as exc:
        return str(exc)
    return None


def _memory_image(sbx: Sandbox, record: dict[str, object]) -> Path | None:
    """A whole memory image of the sandbox's processes, if one exists: its own `memory/`, or the one
    an interrupted save names (completed by renaming it into place if runsc finished writing it)."""
    if memory_pause.saved(sbx):
        return memory_pause.image_dir(sbx)
    named = record.get("memory_image")
    if not isinstance(named, str):
        return None
    image = Path(named)
    tmp = image.with_name(image.name + ".tmp")
    if not (image / "checkpoint.img").exists() and (tmp / "checkpoint.img").exists():
        tmp.rename(image)
    return image if (image / "checkpoint.img").exists() else None


async def _finish_restore(node: Node, sbx: Sandbox, record: dict[str, object]) -> str | None:
    """A restore killed after it halted the sandbox: put the checkpoint's disk in place (if the swap had
    not happened yet) and start it, as the restore would have."""
    try:
        ck = node.checkpoints.get(str(record["restore"]))
    except errors.CheckpointNotFoundError:
        return f"restoring checkpoint {record['restore']} was interrupted, and the checkpoint is gone"
    staged = Path(str(record.get("staged") or sbx.layer.staged))
    if staged.exists():
        await asyncio.to_thread(sbx.layer.swap, staged)
    node.track(sbx)
    await node.finish_restore(sbx, ck)
    node.adopt_started(sbx)
    return None
