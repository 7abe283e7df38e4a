"""Isolation backends, one `Runtime` interface: gvisor (default) and container."""

from __future__ import annotations

from pathlib import Path

from sandlot import errors
from sandlot.node.runtimes.base import Runtime
from sandlot.node.runtimes.container import ContainerRuntime
from sandlot.node.runtimes.gvisor import GVisorRuntime

__all__ = ["RUNTIMES", "ContainerRuntime", "GVisorRuntime", "Runtime", "make_runtime"]

RUNTIMES: dict[str, type[Runtime]] = {r.name: r for r in (GVisorRuntime, ContainerRuntime)}


def make_runtime(name: str, state_dir: Path, *, gvisor_platform: str = "ptrace") -> Runtime:
    if name == GVisorRuntime.name:
        return GVisorRuntime(state_dir, platform=gvisor_platform)
    if name == ContainerRuntime.name:
        return ContainerRuntime(state_dir)
    raise errors.InvalidArgumentError(
        f"unknown runtime {name!r} (choose one of: {', '.join(RUNTIMES)})", field="runtime"
    )
