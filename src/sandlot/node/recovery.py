"""Find a node's sandboxes again after the process that ran it died (SIGKILL, crash, upgrade).

Sandboxes outlive the node process: the runtime's processes run in their own
session, the writable layer stays mounted, and the agent keeps redialling
`<data dir>/sandboxes/<id>/run/agent.sock`. `recover` walks that directory and,
for each sandbox the caller still wants, listens on its socket again, waits for
the agent's hello and registers it with the node as running. Everything else
found there (a sandbox nobody wants, one whose runtime died, one whose agent
never calls back) is destroyed like a killed sandbox: runtime state, cgroups,
mounts and files, every failure reported.

Re-adopted sandboxes are registered with `Node.adopt`, which watches their
main host process again; the rest go through `Node.destroy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sandlot import errors
from sandlot.agent.client import AgentConnection
from sandlot.node import hibernation, memory_pause
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
    if node.sandboxes_dir.is_dir() and any(node.sandboxes_dir.iterdir()):
        await asyncio.to_thread(node.disks.ensure)  # the sandboxes' disks are files in it
    found: dict[str, Path] = {}
    if node.sandboxes_dir.is_dir():
        for sdir in sorted(node.sandboxes_dir.iterdir()):
            if sdir.is_dir() and SANDBOX_ID_RE.match(sdir.name) and not node.knows(sdir.name):
                found[sdir.name] = sdir
    for sandbox_id in wanted:
        if sandbox_id not in found and not node.knows(sandbox_id):
            report.lost[sandbox_id] = "its files were gone when the node restarted"
    results = await asyncio.gather(*(_recover_one(node, sid, sdir, wanted.get(sid)) for sid, sdir in found.items()))
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
    return report


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
    conn = AgentConnection(str(sdir / "run" / "agent.sock"), sandbox_id)
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

    reason = await _adopt(node, sbx, wanted=wanted)
    if reason is None:
        return True, "", []
    problems = await node.destroy(sbx, reason)
    return False, reason, problems


async def _adopt(node: Node, sbx: Sandbox, *, wanted: bool) -> str | None:
    """Make `sbx` a running sandbox of `node`; None on success, else why not."""
    if not wanted:
        return "no record of it survived the restart"
    if memory_pause.saved(sbx) or hibernation.marked(sbx):  # nothing runs: its files wait for a resume
        if sbx.runtime.mounts_rootfs_on_host and not sbx.layer.mounted:
            return "its root filesystem was unmounted while the node was down"
        node.adopt_saved(sbx)
        return None
    if not await sbx.runtime.alive(sbx.id):
        return "it stopped while the node was down"
    if sbx.runtime.mounts_rootfs_on_host and not sbx.layer.mounted:
        return "its root filesystem was unmounted while the node was down"
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
