"""Checkpoints in the SDK: what `AsyncSandbox.checkpoint`, `.restore`, `.fork` and friends send.

The methods live on `AsyncSandbox` (and so on the sync `Sandbox`); this module
holds their requests, so the sandbox module stays about the sandbox.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from sandlot.models import CheckpointInfo, CheckpointList, SandboxList
from sandlot.sdk._transport import Transport

if TYPE_CHECKING:
    from sandlot.sdk.sandbox import AsyncSandbox

__all__ = ["CheckpointRef", "checkpoint_id", "delete", "fork", "list_checkpoints", "restore", "take"]

#: A checkpoint, by its info or its id ("ck-...").
CheckpointRef = CheckpointInfo | str


def checkpoint_id(ref: CheckpointRef) -> str:
    return ref.checkpoint_id if isinstance(ref, CheckpointInfo) else ref


async def take(sbx: AsyncSandbox, name: str, memory: bool = False) -> CheckpointInfo:
    body = {"name": name, "memory": True} if memory else {"name": name}
    raw = await sbx._transport.json("POST", f"/sandboxes/{sbx.sandbox_id}/checkpoints", json=body)
    return CheckpointInfo.model_validate(raw)


async def list_checkpoints(sbx: AsyncSandbox) -> builtins.list[CheckpointInfo]:
    raw = await sbx._transport.json("GET", f"/sandboxes/{sbx.sandbox_id}/checkpoints")
    return CheckpointList.model_validate(raw).checkpoints


async def restore(sbx: AsyncSandbox, ref: CheckpointRef) -> None:
    body = {"checkpoint_id": checkpoint_id(ref)}
    await sbx._transport.json("POST", f"/sandboxes/{sbx.sandbox_id}/restore", json=body)


async def fork(
    cls: type[AsyncSandbox],
    ref: CheckpointRef,
    count: int,
    *,
    timeout: int,
    metadata: dict[str, str] | None,
    api_url: str | None,
    api_key: str | None,
    request_timeout: float | None,
) -> builtins.list[AsyncSandbox]:
    body = {"count": count, "timeout": timeout, "metadata": metadata or {}}
    transport = Transport(api_url, api_key, request_timeout)
    try:
        raw = await transport.json("POST", f"/checkpoints/{checkpoint_id(ref)}/fork", json=body)
    finally:
        await transport.close()
    infos = SandboxList.model_validate(raw).sandboxes
    return [cls(info, Transport(api_url, api_key, request_timeout)) for info in infos]


async def delete(ref: CheckpointRef, *, api_url: str | None, api_key: str | None) -> None:
    transport = Transport(api_url, api_key, None)
    try:
        await transport.request("DELETE", f"/checkpoints/{checkpoint_id(ref)}")
    finally:
        await transport.close()
