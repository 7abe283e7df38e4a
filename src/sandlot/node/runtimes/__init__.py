"""Isolation backends, one `Runtime` interface: gvisor (default), container and microvm."""

from __future__ import annotations

from pathlib import Path

from sandlot import errors
from sandlot.node.runtimes.base import Runtime
from sandlot.node.runtimes.container import ContainerRuntime
from sandlot.node.runtimes.gvisor import GVisorRuntime
from sandlot.node.runtimes.microvm import MicroVMRuntime

__all__ = ["RUNTIMES", "ContainerRuntime", "GVisorRuntime", "MicroVMRuntime", "Runtime", "make_runtime"]

RUNTIMES: dict[str, type[Runtime]] = {r.name: r for r in (GVisorRuntime, ContainerRuntime, MicroVMRuntime)}


def make_runtime(
    name: str, state_dir: Path, *, gvisor_platform: str = "ptrace", cache_dir: Path | None = None
) -> Runtime:
    """`cache_dir`: where built artifacts shared across nodes go (microvm's kernel, initramfs, images)."""
    if name == GVisorRuntime.name:
        return GVisorRuntime(state_dir, platform=gvisor_platform)
    if name == ContainerRuntime.name:
        return ContainerRuntime(state_dir)
    if name == MicroVMRuntime.name:
        return MicroVMRuntime(state_dir, cache_dir)
    raise errors.InvalidArgumentError(
        f"unknown runtime {name!r} (choose one of: {', '.join(RUNTIMES)})", field="runtime"
    )
