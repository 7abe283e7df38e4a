"""Sandlot's Python SDK: `Sandbox` (blocking) and `AsyncSandbox`.

    from sandlot import Sandbox

    with Sandbox.create() as sbx:
        print(sbx.commands.run("python3 -c 'print(6*7)'").stdout)

The API is found at $SANDLOT_API_URL (default http://127.0.0.1:7770) with the
key $SANDLOT_API_KEY (default: a local server's admin key, when readable).
"""

from __future__ import annotations

from sandlot.models import CheckpointInfo, FileEntry, ProcessInfo, SandboxInfo, TemplateInfo, WatchEventOut
from sandlot.sdk.code import CodeContext, Execution, ExecutionError, Result
from sandlot.sdk.commands import AsyncCommandHandle, CommandResult
from sandlot.sdk.files import AsyncWatchHandle
from sandlot.sdk.pty import AsyncPtyHandle, PtySize
from sandlot.sdk.sandbox import AsyncSandbox
from sandlot.sdk.sync import CommandHandle, PtyHandle, Sandbox, Teams, Templates, Volumes, WatchHandle
from sandlot.sdk.teams import AsyncTeams, TeamInfo
from sandlot.sdk.templates import AsyncTemplates
from sandlot.sdk.volumes import AsyncVolumes, VolumeInfo, VolumeMount

__all__ = [
    "AsyncCommandHandle",
    "AsyncPtyHandle",
    "AsyncSandbox",
    "AsyncTeams",
    "AsyncTemplates",
    "AsyncVolumes",
    "AsyncWatchHandle",
    "CheckpointInfo",
    "CodeContext",
    "CommandHandle",
    "CommandResult",
    "Execution",
    "ExecutionError",
    "FileEntry",
    "ProcessInfo",
    "PtyHandle",
    "PtySize",
    "Result",
    "Sandbox",
    "SandboxInfo",
    "TeamInfo",
    "Teams",
    "TemplateInfo",
    "Templates",
    "VolumeInfo",
    "VolumeMount",
    "Volumes",
    "WatchEventOut",
    "WatchHandle",
]
