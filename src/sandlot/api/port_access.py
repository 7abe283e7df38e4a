"""Who may use a sandbox's exposed ports.

Ports are private by default. A request for port P of sandbox S passes when
P is public for S, or it carries S's access token (header
`X-Sandlot-Access-Token`, or `?sandlot_access_token=` for a browser's first
visit), or an API key of S's team. Each sandbox gets its own random token; the
token arrives by query, the answer sets it as a cookie (`sandlot_access_token`,
scoped to that port's path, or to the host name), so the page's own requests
pass too. The token and the public ports live with the sandbox's record (the
store's `port_access` table), not on its node, so a restarted server keeps them.

Invariant: `_cache[id]` mirrors the store's row for sandbox `id` as this
process last wrote or read it (ids are never reused, so an entry never
describes another sandbox); it holds at most `CACHE_SIZE` sandboxes. Several
API replicas will need to see each other's changes (the fleet's step).
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.datastructures import QueryParams
from starlette.responses import Response

from sandlot import errors
from sandlot.agent.handle import SandboxAgent
from sandlot.api.auth import _authenticate, _key_from
from sandlot.api.store import PortAccessRecord, Store
from sandlot.node.client import NodeClient

if TYPE_CHECKING:
    from sandlot.api.service import SandboxService

__all__ = ["TOKEN_HEADER", "TOKEN_QUERY", "PortAccess", "PortAccessRegistry", "first_visit_cookie", "port_registry"]

TOKEN_HEADER = "x-sandlot-access-token"
TOKEN_QUERY = "sandlot_access_token"
#: what E2B's SDK users send for a sandbox whose ports are not public (its `trafficAccessToken`)
E2B_TOKEN_HEADER = "e2b-traffic-access-token"


PortAccess = PortAccessRecord
#: sandboxes whose port access this process keeps in memory
CACHE_SIZE = 4096


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
    def __init__(self, node: NodeClient, store: Store, service: SandboxService | None = None) -> None:
        self.node = node
        self.store = store
        #: wakes a sandbox that resumes on requests when one reaches its port
        self.service = service
        self._cache: OrderedDict[str, PortAccess] = OrderedDict()

    async def get(self, sandbox_id: str) -> PortAccess:
        access = self._cache.get(sandbox_id)
        if access is None:
            access = await self.store.port_access(sandbox_id, secrets.token_urlsafe(24))
            self._cache[sandbox_id] = access
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(sandbox_id)
        return access

    async def _save(self, sandbox_id: str, access: PortAccess) -> None:
        await self.store.set_port_access(sandbox_id, access)
        self._cache[sandbox_id] = access

    async def configure(self, sandbox_id: str, *, token: str, all_public: bool) -> PortAccess:
        """Give a new sandbox's ports a token of the caller's choosing (E2B's traffic token), or open them all."""
        access = await self.get(sandbox_id)
        access.token, access.all_public = token, all_public
        await self._save(sandbox_id, access)
        return access

    async def set_public(self, sandbox_id: str, port: int, public: bool) -> PortAccess:
        access = await self.get(sandbox_id)
        (access.public.add if public else access.public.discard)(check_port(port))
        await self._save(sandbox_id, access)
        return access

    async def authorize(
        self, sandbox_id: str, port: int, headers: dict[str, str] | object, query: dict[str, str] | object
    ) -> SandboxAgent:
        """The running sandbox behind a port request, or the error that says why not."""
        assert hasattr(headers, "get") and hasattr(query, "get")
        check_port(port)
        found = await self.node.state(sandbox_id)
        if found is None:
            raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found")
        state, exit_reason = found
        access = await self.get(sandbox_id)
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
        if state != "running":
            rec = await self.store.get_sandbox(sandbox_id)
            if rec is None or self.service is None:
                reason = f" ({exit_reason})" if exit_reason else ""
                raise errors.SandboxStateError(
                    f"sandbox {sandbox_id} is {state}{reason}: its ports answer only while it runs"
                )
            return await self.service.for_request(rec)  # resumes one that resumes on requests (auto_resume)
        return await self.node.agent(sandbox_id)


def port_registry(app: FastAPI) -> PortAccessRegistry:
    """The API app's registry (made on first use)."""
    reg = getattr(app.state, "port_access", None)
    if reg is None:
        svc = app.state.service
        reg = app.state.port_access = PortAccessRegistry(svc.node, app.state.store, svc)
    assert isinstance(reg, PortAccessRegistry)
    return reg


async def first_visit_cookie(
    registry: PortAccessRegistry, sandbox_id: str, query: QueryParams, path: str
) -> list[tuple[bytes, bytes]]:
    """The Set-Cookie header that keeps the access token a browser brought in the query (its first visit)."""
    if TOKEN_QUERY not in query:
        return []
    token = (await registry.get(sandbox_id)).token
    if query.get(TOKEN_QUERY) != token:
        return []
    cookie = Response()
    cookie.set_cookie(TOKEN_QUERY, token, path=path, httponly=True, samesite="lax")
    return [(k, v) for k, v in cookie.raw_headers if k == b"set-cookie"]
