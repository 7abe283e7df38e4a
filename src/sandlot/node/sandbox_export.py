"""Export a sandbox's filesystem as an OCI image layout: its template's layers plus what it changed.

The sandbox's overlay upper directory already is an OCI-style layer in
overlayfs form (whiteouts as 0/0 devices, opaque directories as xattrs), so it
is packed like any stored layer, leaving out what the node itself put there
(the agent's mount point and the statx preload). The sandbox is paused while
its files are read, so the export is one consistent moment of it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from sandlot import errors
from sandlot.node.bundle import MOUNT_POINT
from sandlot.node.node import Node
from sandlot.node.oci.export import export_layout
from sandlot.node.rootfs import umount
from sandlot.node.runtimes.base import run_or_raise
from sandlot.node.sandbox import Sandbox, State

__all__ = ["export_sandbox"]

#: paths the node writes into every sandbox's own layer (never the user's data)
NODE_PATHS = [MOUNT_POINT.lstrip("/"), "etc/ld.so.preload"]


async def export_sandbox(node: Node, sandbox_id: str, dest: Path, *, tag: str = "latest") -> str:
    """Write sandbox `sandbox_id`'s filesystem as image `tag` of the OCI layout `dest`; return its digest."""
    sbx = node.get(sandbox_id)
    if sbx.state not in (State.RUNNING, State.PAUSED):
        raise errors.SandboxStateError(f"cannot export sandbox {sandbox_id} in state {sbx.state.value}")
    if not sbx.runtime.mounts_rootfs_on_host:
        return await _export_guest_disk(node, sbx, Path(dest), tag)
    layers = [*sbx.image.layers, sbx.layer.upper]
    was_running = sbx.state is State.RUNNING
    if was_running:
        await node.pause(sandbox_id)
    try:
        return await asyncio.to_thread(
            export_layout,
            layers,
            sbx.image.config.to_oci(),
            Path(dest),
            tag=tag,
            skip={len(layers) - 1: NODE_PATHS},
            progress=lambda line: None,
        )
    finally:
        if was_running:
            await node.resume(sandbox_id)


async def _export_guest_disk(node: Node, sbx: Sandbox, dest: Path, tag: str) -> str:
    """A microVM's disk is its guest's: export a consistent clone of it, mounted read-only here."""
    clone = sbx.layer.image_file.with_name(sbx.layer.image_file.name + ".export")
    mnt = Path(tempfile.mkdtemp(prefix="export-", dir=sbx.dir))
    await sbx.runtime.snapshot_disk(sbx.id, sbx.layer, clone, running=sbx.state is State.RUNNING)
    try:
        what = "mounting a clone of the sandbox's disk"
        await run_or_raise(what, "mount", "-o", "loop,ro,noload", str(clone), str(mnt))
        try:
            layers = [*sbx.image.layers, mnt / "upper"]
            return await asyncio.to_thread(
                export_layout, layers, sbx.image.config.to_oci(), dest, tag=tag,
                skip={len(layers) - 1: NODE_PATHS}, progress=lambda line: None,
            )  # fmt: skip
        finally:
            await asyncio.to_thread(umount, mnt)
    finally:
        clone.unlink(missing_ok=True)
        shutil.rmtree(mnt, ignore_errors=True)

