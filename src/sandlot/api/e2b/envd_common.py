"""What every envd request needs: its sandbox, its user, and paths resolved as envd does.

A request for a sandbox that does not run (killed, past its timeout, or paused without
`auto_resume`) is answered as E2B's proxy answers it: HTTP 502 (Connect: `unavailable`)
with a message that says the sandbox "was not found", which the SDKs turn into their
not-running error (`is_running()` is then False). A paused sandbox with `auto_resume` is
resumed by the request instead (`SandboxService.for_request`).
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from dataclasses import dataclass

from fastapi import Request

from sandlot import errors
from sandlot.agent.handle import SandboxAgent
from sandlot.api.e2b.access import sandbox_principal
from sandlot.api.http_errors import status_of
from sandlot.api.service import SandboxService
from sandlot.node.client import NodeClient

__all__ = ["DEFAULT_USER", "Caller", "b64decode", "b64encode", "caller", "http_status"]

#: envd's default user in E2B templates (Sandlot's images have it too, uid 1000).
DEFAULT_USER = "user"


@dataclass(frozen=True)
class Caller:
    sandbox: SandboxAgent
    user: str
    node: NodeClient

    @property
    def home(self) -> str:
        return "/root" if self.user in ("root", "0") else f"/home/{self.user}"

    def path(self, path: str, field: str = "path") -> str:
        """An absolute path: envd resolves relative ones (and `~`) against the user's home."""
        if not isinstance(path, str) or "\0" in path:
            raise errors.InvalidArgumentError(f"{field} must be a string without NUL characters", field=field)
        if path == "~" or path.startswith("~/"):
            path = self.home + path[1:]
        if not path.startswith("/"):
            path = posixpath.join(self.home, path)
        return posixpath.normpath(path) if path != "/" else path


def _user_from(request: Request, explicit: str | None) -> str:
    if explicit:
        return explicit
    authz = request.headers.get("authorization", "")
    scheme, _, value = authz.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            user = base64.b64decode(value, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            raise errors.InvalidArgumentError("the Authorization header's Basic user is malformed") from None
        if user:
            return user
    return DEFAULT_USER


async def caller(request: Request, sandbox_id: str, user: str | None = None) -> Caller:
    """The sandbox (running: resumed first when it resumes on requests) and user of an envd request."""
    _, rec = await sandbox_principal(request, sandbox_id)
    svc: SandboxService = request.app.state.service
    return Caller(await svc.for_request(rec), _user_from(request, user), svc.node)


def http_status(exc: errors.SandlotError) -> int:
    """The HTTP status of an error of an in-sandbox request: a sandbox that does not run is E2B's 502."""
    return 502 if isinstance(exc, errors.SandboxStateError) else status_of(exc)


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64decode(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise errors.InvalidArgumentError(f"{field} must be base64 bytes", field=field)
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise errors.InvalidArgumentError(f"{field} is not valid base64", field=field) from None
