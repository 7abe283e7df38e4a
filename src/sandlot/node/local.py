"""`LocalNode`: the API's seam (`NodeClient`, node/client.py) over a `Node` in this process.

What `sandlot serve` uses: the API and its node share one event loop, so every
call is a plain await on the node, and `agent` hands back the node's own
connection to the sandbox's agent (nothing is copied or relayed). A node
daemon will serve this same object over HTTP, so the conversions from the
node's objects to plain data live here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tarfile
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from sandlot import errors
from sandlot.agent.handle import SandboxAgent
from sandlot.node import sandbox_move
from sandlot.node.checkpoints import Checkpoint
from sandlot.node.client import NodeClient, TemplateEvents
from sandlot.node.dockerfile.builder import BuildOptions, build
from sandlot.node.images import Image
from sandlot.node.node import Node
from sandlot.node.oci.reference import Reference
from sandlot.node.oci.registry import RegistryConfig
from sandlot.node.oci.store import check_template_name
from sandlot.node.protocol import (
    LOCAL_NODE,
    CheckpointInfo,
    NetworkPolicy,
    NodeInfo,
    NodeVolume,
    PoolInfo,
    RecoveryReport,
    RegistryAuth,
    SandboxMetric,
    SandboxSpec,
    SandboxStatus,
    TemplateInfo,
    TemplateStart,
    VolumeInfo,
)
from sandlot.node.readiness import StartSpec
from sandlot.node.recovery import recover
from sandlot.node.sandbox import Sandbox
from sandlot.node.sandbox_export import export_sandbox
from sandlot.node.transfer import Progress, progress_events, receive, tar_stream, template_info, unpack_tar
from sandlot.node.volumes import Volume

__all__ = ["LocalNode"]

MAX_CONTEXT_BYTES = 4 << 30
MAX_IMPORT_BYTES = 32 << 30


def status_of(sbx: Sandbox, node: str) -> SandboxStatus:
    policy = sbx.net.policy if sbx.net is not None else sbx.spec.network
    return SandboxStatus(
        sandbox_id=sbx.id,
        node=node,
        state=sbx.state.value,
        exit_reason=sbx.exit_reason,
        runtime=sbx.runtime.name,
        template=sbx.image.name,
        saves_memory=sbx.runtime.saves_memory,
        network=policy.to_dict(),
        address=sbx.net.address if sbx.net is not None else None,
        resolved={k: list(v) for k, v in sbx.net.resolved.items()} if sbx.net is not None else {},
    )


def checkpoint_info(ck: Checkpoint) -> CheckpointInfo:
    return CheckpointInfo(
        checkpoint_id=ck.id,
        name=ck.name,
        sandbox_id=ck.sandbox_id,
        created_at=ck.created_at,
        size_bytes=ck.size_bytes,
        memory=ck.memory,
    )


def volume_info(v: Volume, node: str) -> VolumeInfo:
    return VolumeInfo(name=v.name, volume_id=v.id, created_at=v.created_at, size_mb=v.size_mb, node=node)


def usable_by(team: str | None) -> Callable[[Image], bool]:
    """Whether `team` (None: an admin) may start FROM a template: its own and shared ones."""
    return lambda image: team is None or image.owner is None or image.owner == team


def _memory() -> tuple[int, int]:
    """Total and available memory of the host, in bytes."""
    fields: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) * 1024
    return fields.get("MemTotal", 0), fields.get("MemAvailable", 0)


def _version() -> str:
    try:
        return metadata.version("sandlot")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class LocalNode(NodeClient):
    """The node of this process, behind the seam."""

    def __init__(self, node: Node, name: str = LOCAL_NODE) -> None:
        self.node = node
        self.name = name
        self.default_runtime = node.config.default_runtime
        # _exited: sandboxes that died on their own since `exited` was last called, with why.
        self._exited: dict[str, str] = {}
        #: a node daemon that joins a fleet has not yet found its sandboxes again (node/daemon.py):
        #: it cannot tell yet that it does not hold one
        self.recovering = False
        node.on_exit(self._on_exit)

    def _on_exit(self, sandbox_id: str, reason: str) -> None:
        self._exited[sandbox_id] = reason

    def _work_dir(self, prefix: str) -> Path:
        """A scratch directory beside the image store's layers (so that renames into it stay on one filesystem)."""
        return self.node.images.layers.scratch(prefix)

    # ------------------------------------------------------------ the node

    async def info(self) -> NodeInfo:
        node = self.node
        disk = await asyncio.to_thread(shutil.disk_usage, node.config.data_dir)
        total, available = _memory()
        templates = await asyncio.to_thread(node.images.list_templates)
        volumes = await asyncio.to_thread(node.volumes.list)
        return NodeInfo(
            name=self.name,
            version=_version(),
            default_runtime=self.default_runtime,
            runtimes=node.runtimes_ready(),
            accelerators=node.accelerators(),
            sandboxes=len(node.list_sandboxes()),
            cpus=os.cpu_count() or 1,
            memory_total_bytes=total,
            memory_available_bytes=available,
            disk_total_bytes=disk.total,
            disk_free_bytes=disk.free,
            load_1m=os.getloadavg()[0],
            templates=[i.name for i in templates],
            volumes=[
                NodeVolume(volume_id=v.id, team=v.owner, name=v.name, created_at=v.created_at, size_mb=v.size_mb)
                for v in volumes
            ],
        )

    async def runtimes(self) -> dict[str, dict[str, Any]]:
        return await self.node.runtime_report()

    async def prepare(self, template: str | None) -> None:
        await self.node.bundle()
        self.node.runtime(self.default_runtime)
        if template is not None:
            await asyncio.to_thread(self.node.images.ensure, template)

    async def recover(self, wanted: Mapping[str, SandboxSpec]) -> RecoveryReport:
        report = await recover(self.node, wanted)
        self.recovering = False
        return RecoveryReport(adopted=report.adopted, lost=report.lost, problems=report.problems)

    async def close(self, *, kill_sandboxes: bool) -> None:
        await self.node.pool.close()  # idle pool sandboxes serve nobody once we are gone
        if kill_sandboxes:
            await self.node.close()
        else:  # unmounted only when no sandbox disk is left in it
            await self.node.settle()
            await self.node.metrics.close()
            await self.node.release_disks()

    # ------------------------------------------------------------ sandboxes

    async def create(self, spec: SandboxSpec) -> SandboxStatus:
        return status_of(await self.node.create(spec), self.name)

    async def status(self, sandbox_id: str) -> SandboxStatus | None:
        try:
            sbx = self.node.get(sandbox_id)
        except errors.SandboxNotFoundError:
            return None
        return None if sbx.pooled else status_of(sbx, self.name)

    async def state(self, sandbox_id: str) -> tuple[str, str | None] | None:
        # (measured: building the status was ~9% of the API's CPU per proxied request)
        try:
            sbx = self.node.get(sandbox_id)
        except errors.SandboxNotFoundError:
            return None
        return None if sbx.pooled else (sbx.state.value, sbx.exit_reason)

    async def exit_reason(self, sandbox_id: str) -> str | None:
        return self.node.exit_reason(sandbox_id)

    async def kill(self, sandbox_id: str) -> None:
        await self.node.kill(sandbox_id)

    async def exited(self) -> dict[str, str]:
        taken, self._exited = self._exited, {}
        return taken

    async def pause(self, sandbox_id: str, *, memory: bool = False) -> None:
        await self.node.pause(sandbox_id, memory=memory)

    async def resume(self, sandbox_id: str) -> None:
        await self.node.resume(sandbox_id)

    async def hibernate(self, sandbox_id: str, *, memory: bool = True) -> None:
        await self.node.hibernate(sandbox_id, memory=memory)

    async def wake(self, sandbox_id: str) -> None:
        await self.node.wake(sandbox_id)

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxStatus:
        await self.node.set_network(sandbox_id, policy)
        return status_of(self.node.get(sandbox_id), self.name)

    async def agent(self, sandbox_id: str) -> SandboxAgent:
        return self.node.get(sandbox_id).handle

    async def metrics(
        self, sandbox_id: str, start: float | None = None, end: float | None = None
    ) -> list[SandboxMetric]:
        return self.node.metrics.samples(sandbox_id, start, end)

    async def file_metadata(self, sandbox_id: str, paths: list[str]) -> dict[str, dict[str, str] | None]:
        return await self.node.host_file_metadata(sandbox_id, paths)

    async def set_file_metadata(self, sandbox_id: str, path: str, metadata: dict[str, str]) -> None:
        await self.node.set_host_file_metadata(sandbox_id, path, metadata)

    async def export_sandbox(self, sandbox_id: str, tag: str) -> AsyncIterator[bytes]:
        work = self._work_dir("export-")
        try:
            await export_sandbox(self.node, sandbox_id, work / "layout", tag=tag)
            return await tar_stream(work / "layout", work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    async def export_disk(self, sandbox_id: str) -> AsyncIterator[bytes]:
        return await sandbox_move.export_disk(self.node, sandbox_id)

    async def import_disk(self, sandbox_id: str, disk: AsyncIterable[bytes]) -> SandboxStatus:
        return status_of(await sandbox_move.import_disk(self.node, sandbox_id, disk), self.name)

    # ------------------------------------------------------------ checkpoints

    async def checkpoint(self, sandbox_id: str, name: str, *, memory: bool = False) -> CheckpointInfo:
        return checkpoint_info(await self.node.checkpoint(sandbox_id, name, memory=memory))

    async def restore(self, sandbox_id: str, checkpoint_id: str) -> None:
        await self.node.restore(sandbox_id, checkpoint_id)

    async def fork(self, checkpoint_id: str, count: int) -> list[SandboxStatus]:
        return [status_of(s, self.name) for s in await self.node.fork(checkpoint_id, count)]

    async def get_checkpoint(self, checkpoint_id: str) -> CheckpointInfo:
        return checkpoint_info(self.node.checkpoints.get(checkpoint_id))

    async def list_checkpoints(self, sandbox_id: str | None = None) -> list[CheckpointInfo]:
        return [checkpoint_info(c) for c in await asyncio.to_thread(self.node.checkpoints.list, sandbox_id)]

    async def delete_checkpoint(self, checkpoint_id: str) -> None:
        await asyncio.to_thread(self.node.checkpoints.delete, checkpoint_id)

    # ------------------------------------------------------------ volumes

    async def create_volume(self, team: str, name: str, size_mb: int = 1024) -> VolumeInfo:
        return volume_info(await asyncio.to_thread(self.node.volumes.create, name, team, size_mb), self.name)

    async def find_volume(self, team: str, name: str) -> VolumeInfo:
        return volume_info(self.node.volumes.find(team, name), self.name)

    async def list_volumes(self, team: str) -> list[VolumeInfo]:
        return [volume_info(v, self.name) for v in await asyncio.to_thread(self.node.volumes.list, team)]

    async def delete_volume(self, team: str, name: str) -> None:
        vol = self.node.volumes.find(team, name)
        await asyncio.to_thread(self.node.delete_volume, vol.id)

    # ------------------------------------------------------------ templates

    async def get_template(self, name: str) -> TemplateInfo | None:
        image = await asyncio.to_thread(self.node.images.get, name)
        return template_info(image) if image is not None else None

    async def list_templates(self) -> list[TemplateInfo]:
        return [template_info(i) for i in await asyncio.to_thread(self.node.images.list_templates)]

    async def fetch_template(self, ref: str, auth: RegistryAuth, *, team: str | None = None) -> None:
        if self.node.images.get(ref) is None:
            config = RegistryConfig(auth.username, auth.password)
            await asyncio.to_thread(self.node.images.pull, ref, auth=config, team=team)

    async def pull_template(
        self,
        ref: str,
        *,
        name: str | None = None,
        platform: str | None = None,
        auth: RegistryAuth | None = None,
        team: str | None = None,
    ) -> TemplateEvents:
        Reference.parse(ref)  # a malformed reference is refused before the stream starts
        check_template_name(name or ref)
        images = self.node.images
        shared = (name or ref) == ref and auth is None
        images.check_write(name or ref, team, None if shared else team)  # a taken name too
        config = RegistryConfig(auth.username, auth.password) if auth else None

        async def work(progress: Progress) -> Image:
            return await asyncio.to_thread(
                images.pull, ref, name=name, platform=platform, auth=config, progress=progress, team=team
            )

        return progress_events(work)

    async def build_template(
        self,
        name: str,
        context: AsyncIterable[bytes],
        *,
        dockerfile: str = "Dockerfile",
        build_args: Mapping[str, str] | None = None,
        network: Literal["full", "none"] = "full",
        team: str | None = None,
    ) -> TemplateEvents:
        check_template_name(name)
        self.node.images.check_write(name, team, team)  # another team's name: refused before the upload
        work_dir = self._work_dir("context-")
        root = work_dir / "context"
        try:
            archive = work_dir / "context.tar"
            try:
                await receive(context, archive, MAX_CONTEXT_BYTES, "the build context")
                await unpack_tar(archive, root, "the build context")
            finally:
                archive.unlink(missing_ok=True)
            path = (root / dockerfile).resolve()
            if not path.is_relative_to(root.resolve()) or not path.is_file():
                raise errors.InvalidArgumentError(
                    f"no Dockerfile at {dockerfile!r} in the build context", field="dockerfile"
                )
            text = path.read_text(errors="replace")
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        opts = BuildOptions(
            name=name,
            context=root,
            dockerfile=text,
            build_args=dict(build_args or {}),
            network=network,
            team=team,
            may_use=usable_by(team),
        )

        async def work(progress: Progress) -> Image:
            try:
                return await build(self.node, opts, progress)
            finally:
                await asyncio.to_thread(shutil.rmtree, work_dir, True)

        return progress_events(work)

    async def import_template(
        self, name: str, archive: AsyncIterable[bytes], *, tag: str | None = None, team: str | None = None
    ) -> TemplateEvents:
        check_template_name(name)
        self.node.images.check_write(name, team, team)  # another team's name: refused before the upload
        work = self._work_dir("import-")
        tarball = work / "image.tar"
        try:
            await receive(archive, tarball, MAX_IMPORT_BYTES, "the image")
            if not tarfile.is_tarfile(tarball):
                raise errors.InvalidArgumentError("the body is not a tar archive (docker save, or an OCI layout)")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        images = self.node.images

        async def work_fn(progress: Progress) -> Image:
            try:
                return await asyncio.to_thread(
                    images.import_image, tarball, name, tag=tag, progress=progress, team=team
                )
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)

        return progress_events(work_fn)

    async def export_template(self, name: str, tag: str) -> AsyncIterator[bytes]:
        work = self._work_dir("export-")
        try:
            await asyncio.to_thread(self.node.images.export, name, work / "layout", tag=tag, progress=lambda line: None)
            return await tar_stream(work / "layout", work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    async def set_template_start(self, name: str, start: TemplateStart | None) -> TemplateInfo:
        spec = StartSpec(start.cmd, start.ready_cmd, start.ready_port, start.timeout) if start else None
        return template_info(await asyncio.to_thread(self.node.images.set_start, name, spec))

    async def delete_template(self, name: str) -> None:
        await self.node.delete_template(name)

    # ------------------------------------------------------------ warm pools

    async def list_pools(self) -> list[PoolInfo]:
        pool = self.node.pool
        return [
            PoolInfo(template=k.image, runtime=k.runtime, size=n, idle=pool.idle(k)) for k, n in pool.sizes().items()
        ]

    async def set_pool(self, template: str, runtime: str | None, size: int) -> PoolInfo:
        spec = SandboxSpec(image=template, runtime=runtime or self.default_runtime).validate()
        self.node.runtime(spec.runtime)  # an unknown or unavailable runtime is the caller's error
        await asyncio.to_thread(self.node.images.ensure, template)  # an unknown template too
        key = self.node.pool.set_size(spec, size)
        return PoolInfo(template=key.image, runtime=key.runtime, size=size, idle=self.node.pool.idle(key))
