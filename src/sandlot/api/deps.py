"""FastAPI dependencies shared by the routers: the caller, the service, common parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from sandlot import errors
from sandlot.agent.handle import SandboxAgent
from sandlot.api.auth import Principal, principal, principal_and_sandbox
from sandlot.api.service import SandboxService

__all__ = ["FilePath", "Pid", "SandboxId", "Svc", "Who", "check_path", "get_service", "running"]


async def get_service(request: Request) -> SandboxService:
    """The app's service. A coroutine, as every dependency here must be: FastAPI runs a plain function
    in its thread pool, and that hop cost each request ~150 µs of CPU and two wake-ups for a lookup."""
    svc: SandboxService = request.app.state.service
    return svc


Who = Annotated[Principal, Depends(principal)]
Svc = Annotated[SandboxService, Depends(get_service)]
SandboxId = Annotated[str, Path(min_length=1, max_length=64, description="the sandbox's id (sb-...)")]
Pid = Annotated[int, Path(ge=1, le=(1 << 31) - 1, description="a process id inside the sandbox")]
FilePath = Annotated[str, Query(min_length=1, max_length=4096, description="a path inside the sandbox")]


def check_path(path: str, field: str = "path") -> str:
    if "\0" in path:
        raise errors.InvalidArgumentError(f"{field} must not contain NUL characters", field=field)
    return path


async def running(sandbox_id: SandboxId, request: Request, svc: Svc) -> SandboxAgent:
    """The caller's running sandbox (404 for another team's, 409 for a dead one); the caller's key and
    the sandbox's record come from one trip to the store."""
    _, rec = await principal_and_sandbox(request, sandbox_id)
    return await svc.agent_of(sandbox_id, rec)


Running = Annotated[SandboxAgent, Depends(running)]
