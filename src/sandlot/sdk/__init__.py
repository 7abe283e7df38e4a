"""Sandlot's Python SDK: `Sandbox` (blocking) and `AsyncSandbox`.

    from sandlot import Sandbox

    with Sandbox.create() as sbx:
        print(sbx.commands.run("python3 -c 'print(6*7)'").stdout)

The API is found at $SANDLOT_API_URL (default http://127.0.0.1:7770) with the
key $SANDLOT_API_KEY (default: a local server's admin key, when readable).
"""

from __future__ import annotations

from sandlot.api.models import CheckpointInfo, FileEntry, ProcessInfo, SandboxInfo, WatchEventOut
from sandlot.sdk.commands import AsyncCommandHandle, CommandResult
from sandlot.sdk.files import AsyncWatchHandle
from sandlot.sdk.pty import AsyncPtyHandle, PtySize
from sandlot.sdk.sandbox import AsyncSandbox
from sandlot.sdk.sync import CommandHandle, PtyHandle, Sandbox, WatchHandle
from sandlot.sdk.volumes import AsyncVolumes, VolumeInfo, VolumeMount, Volumes

__all__ = [
    "AsyncCommandHandle",
    "AsyncPtyHandle",
    "AsyncSandbox",
    "AsyncVolumes",
    "AsyncWatchHandle",
    "CheckpointInfo",
    "CommandHandle",
    "CommandResult",
    "FileEntry",
    "ProcessInfo",
    "PtyHandle",
    "PtySize",
    "Sandbox",
    "SandboxInfo",
    "VolumeInfo",
    "VolumeMount",
    "Volumes",
    "WatchEventOut",
    "WatchHandle",
]
