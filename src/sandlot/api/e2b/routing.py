"""Which sandbox and port an E2B in-sandbox request is for.

The E2B SDKs reach a sandbox's daemons (envd on 49983, the code interpreter on
49999) in one of two ways, both handled here:

- with `E2B_SANDBOX_URL` set, every request goes to that one URL and names its
  target in the `E2b-Sandbox-Id` and `E2b-Sandbox-Port` headers;
- otherwise the host name is `{port}-{sandbox id}.{domain}` (E2B's own scheme,
  for a deployment with wildcard DNS and TLS for `*.{domain}`).

Both go through the API's one host router (`sandlot.api.host_routing`):
`install` adds E2B's header finder to it and mounts the two reserved ports on
the facade's internal routes `/e2b-sandbox/{id}/{port}/...`; other ports of a
sandbox are left to the port proxy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sandlot.api.host_routing import HostRoutes

__all__ = ["ENVD_PORT", "INTERNAL_PREFIX", "JUPYTER_PORT", "RESERVED_PORTS", "find_target", "install"]

ENVD_PORT = 49983
JUPYTER_PORT = 49999
RESERVED_PORTS = frozenset({ENVD_PORT, JUPYTER_PORT})
INTERNAL_PREFIX = "/e2b-sandbox"

_ID = re.compile(r"^sb-[0-9a-z]{1,60}$")


def find_target(headers: Mapping[str, str]) -> tuple[str, int] | None:
    """E2B's headers, sent when the SDK has one URL for every sandbox (`E2B_SANDBOX_URL`).

    A malformed id is kept as "invalid", so the request gets a clear not-found
    from the facade instead of falling through to Sandlot's own routes.
    """
    sid = headers.get("e2b-sandbox-id")
    if sid is None:
        return None
    port_text = headers.get("e2b-sandbox-port", str(ENVD_PORT))
    port = int(port_text) if port_text.isdigit() else -1
    return (sid if _ID.match(sid) else "invalid"), port


def install(routes: HostRoutes) -> None:
    """Route E2B's requests: its headers name a sandbox, its reserved ports are the facade's routes."""
    routes.add_finder(find_target)
    for port in RESERVED_PORTS:
        routes.mount(port, INTERNAL_PREFIX)
