"""Which sandbox and port an E2B in-sandbox request is for.

The E2B SDKs reach a sandbox's daemons (envd on 49983, the code interpreter on
49999) in one of two ways, both handled here:

- with `E2B_SANDBOX_URL` set, every request goes to that one URL and names its
  target in the `E2b-Sandbox-Id` and `E2b-Sandbox-Port` headers;
- otherwise the host name is `{port}-{sandbox id}.{domain}` (E2B's own scheme,
  for a deployment with wildcard DNS and TLS for `*.{domain}`).

`sandbox_target(headers, host)` is the one entry point: it answers the target
or None (a request for Sandlot's own API). `E2BRoutingMiddleware` rewrites a
targeted request to the facade's internal path `/e2b-sandbox/{id}/{port}/...`;
ports other than the two reserved ones are left to the port proxy.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENVD_PORT",
    "INTERNAL_PREFIX",
    "JUPYTER_PORT",
    "RESERVED_PORTS",
    "E2BRoutingMiddleware",
    "SandboxTarget",
    "sandbox_target",
]

ENVD_PORT = 49983
JUPYTER_PORT = 49999
RESERVED_PORTS = frozenset({ENVD_PORT, JUPYTER_PORT})
INTERNAL_PREFIX = "/e2b-sandbox"

# `{port}-{sandbox id}.` at the start of a host name; ids are `sb-` + hex.
_HOST = re.compile(r"^(?P<port>\d{1,5})-(?P<id>sb-[0-9a-z]+)\.")
_ID = re.compile(r"^sb-[0-9a-z]{1,60}$")


@dataclass(frozen=True)
class SandboxTarget:
    sandbox_id: str
    port: int


def sandbox_target(headers: dict[str, str], host: str | None) -> SandboxTarget | None:
    """The sandbox and port a request is for, from E2B's headers or its host name.

    Args:
        headers: the request headers, names lower-cased.
        host: the Host header (may carry `:port`).
    """
    sid = headers.get("e2b-sandbox-id")
    if sid is not None:
        port_text = headers.get("e2b-sandbox-port", str(ENVD_PORT))
        port = int(port_text) if port_text.isdigit() else -1
        return SandboxTarget(sid, port)
    if host:
        m = _HOST.match(host.lower())
        if m is not None:
            return SandboxTarget(m.group("id"), int(m.group("port")))
    return None


def internal_path(target: SandboxTarget, path: str) -> str:
    return f"{INTERNAL_PREFIX}/{target.sandbox_id}/{target.port}{path}"


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class E2BRoutingMiddleware:
    """Send E2B in-sandbox requests to the facade's routes; pass everything else through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            target = sandbox_target(headers, headers.get("host"))
            if target is not None and not scope["path"].startswith(INTERNAL_PREFIX + "/"):
                if not _ID.match(target.sandbox_id):
                    target = SandboxTarget("invalid", target.port)
                scope = dict(scope)
                scope["path"] = internal_path(target, scope["path"])
                scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)
