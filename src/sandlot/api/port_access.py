"""Who may use a sandbox's exposed ports.

Ports are private by default. A request for port P of sandbox S passes when
P is public for S, or it carries S's access token (header
`X-Sandlot-Access-Token`, or `?sandlot_access_token=` for a browser's first
visit), or an API key of S's team. Each sandbox gets its own random token; the
token arrives by query, the answer sets it as a cookie (`sandlot_access_token`,
scoped to that port's path, or to the host name), so the page's own requests
pass too. The token and the public ports live beside the sandbox (`<sandbox dir>/ports.json`)
so a restarted server keeps them.

Invariant: `_cache[id]` mirrors that file for the sandbox object it was read
for; a new sandbox object with the same id (never, ids are random) re-reads it.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sandlot import errors
from sandlot.api.auth import _authenticate, _key_from
from sandlot.api.store import Store
from sandlot.node import Node, State
from sandlot.node import Sandbox as NodeSandbox

if TYPE_CHECKING:
    from sandlot.api.service import SandboxService

__all__ = ["TOKEN_HEADER", "TOKEN_QUERY", "PortAccess", "PortAccessRegistry"]

TOKEN_HEADER = "x-sandlot-access-token"
TOKEN_QUERY = "sandlot_access_token"
#: what E2B's SDK users send for a sandbox whose ports are not public (its `trafficAccessToken`)
E2B_TOKEN_HEADER = "e2b-traffic-access-token"


@dataclass
class PortAccess:
    token: str
    public: set[int] = field(default_factory=set)
    #: every port public (E2B's default: `allowPublicTraffic`)
    all_public: bool = False


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise errors.InvalidArgumentError(f"port must be between 1 and 65535, got {port}", field="port")
    return port


def _cookie(headers: object, name: str) -> str | None:
    assert hasattr(headers, "get")
    for part in str(headers.get("cookie") or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


class PortAccessRegistry:
    def __init__(self, node: Node, store: Store, service: SandboxService | None = None) -> None:
        self.node = node
        self.store = store
        #: wakes a sandbox that resumes on requests when one reaches its port
        self.service = service
        self._cache: dict[str, tuple[NodeSandbox, PortAccess]] = {}

    def _file(self, sbx: NodeSandbox) -> Path:
        return sbx.dir / "ports.json"

    def get(self, sbx: NodeSandbox) -> PortAccess:
        cached = self._cache.get(sbx.id)
        if cached is not None and cached[0] is sbx:
            return cached[1]
        for sid in [sid for sid, (s, _) in self._cache.items() if s.killed]:
            del self._cache[sid]
        try:
            saved = json.loads(self._file(sbx).read_text())
            access = PortAccess(
                str(saved["token"]), {int(p) for p in saved.get("public", [])}, bool(saved.get("all_public"))
            )
        except (OSError, ValueError, KeyError, TypeError):
            access = PortAccess(secrets.token_urlsafe(24))
            self._save(sbx, access)
        self._cache[sbx.id] = (sbx, access)
        return access

    def _save(self, sbx: NodeSandbox, access: PortAccess) -> None:
        path = self._file(sbx)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"token": access.token, "public": sorted(access.public), "all_public": access.all_public})
        )
        tmp.chmod(0o600)
        tmp.replace(path)

    def configure(self, sbx: NodeSandbox, *, token: str, all_public: bool) -> PortAccess:
        """Give a new sandbox's ports a token of the caller's choosing (E2B's traffic token), or open them all."""
        access = self.get(sbx)
        access.token, access.all_public = token, all_public
        self._save(sbx, access)
        return access

    def set_public(self, sbx: NodeSandbox, port: int, public: bool) -> PortAccess:
        access = self.get(sbx)
        (access.public.add if public else access.public.discard)(check_port(port))
        self._save(sbx, access)
        return access

    async def authorize(
        self, sandbox_id: str, port: int, headers: dict[str, str] | object, query: dict[str, str] | object
    ) -> NodeSandbox:
        """The running sandbox behind a port request, or the error that says why not."""
        assert hasattr(headers, "get") and hasattr(query, "get")
        check_port(port)
        try:
            sbx = self.node.get(sandbox_id)
        except errors.SandboxNotFoundError:
            sbx = None
        if sbx is None or sbx.pooled:
            raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found")
        access = self.get(sbx)
        if not (access.all_public or port in access.public):
            token = (
                headers.get(TOKEN_HEADER)
                or headers.get(E2B_TOKEN_HEADER)
                or query.get(TOKEN_QUERY)
                or _cookie(headers, TOKEN_QUERY)
            )
            if not (token and hmac.compare_digest(str(token).encode(), access.token.encode())):
                key = _key_from(headers, query.get("api_key"))
                if not key:
                    raise errors.AuthenticationError(
                        f"port {port} of sandbox {sandbox_id} is private: send the sandbox's access token as the "
                        f"X-Sandlot-Access-Token header (or ?{TOKEN_QUERY}=), an API key of its team, "
                        "or make the port public"
                    )
                who = await _authenticate(self.store, key)
                if await self.store.get_sandbox(sandbox_id, who.team) is None:
                    raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found")
        if sbx.state is not State.RUNNING:
            rec = await self.store.get_sandbox(sandbox_id)
            if rec is None or self.service is None:
                reason = f" ({sbx.exit_reason})" if sbx.exit_reason else ""
                raise errors.SandboxStateError(
                    f"sandbox {sandbox_id} is {sbx.state.value}{reason}: its ports answer only while it runs"
                )
            sbx = await self.service.for_request(rec)  # resumes one that resumes on requests (auto_resume)
        return sbx
