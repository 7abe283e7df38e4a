"""Resolve the host names of network policies, against the node's configured resolvers only.

The node never asks the host's own resolver: the names on a sandbox's allow
or deny list are looked up on the same upstream servers the sandbox's DNS
queries are forwarded to, so both see the same answers (modulo round-robin).
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

from dnslib import QTYPE, DNSRecord  # type: ignore[import-untyped]

__all__ = ["resolve_names", "system_nameservers"]


def system_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The host's IPv4 resolvers that a sandbox can be forwarded to (loopback ones cannot)."""
    out: list[str] = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if addr.version == 4 and not addr.is_loopback:
                out.append(str(addr))
    return out


def _query(name: str, server: str, timeout: float) -> list[str]:
    host, _, port = server.partition(":")
    q = DNSRecord.question(name, "A")
    reply = DNSRecord.parse(q.send(host, int(port or 53), tcp=False, timeout=timeout))
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def _resolve(name: str, servers: list[str], timeout: float) -> list[str]:
    for server in servers:
        try:
            return _query(name, server, timeout)
        except (TimeoutError, OSError, ValueError):
            continue
    return []


async def resolve_names(names: tuple[str, ...], servers: list[str], timeout: float = 2.0) -> dict[str, list[str]]:
    """name -> IPv4 addresses (empty when no server answered or the name does not exist)."""
    if not names or not servers:
        return {n: [] for n in names}
    results = await asyncio.gather(*(asyncio.to_thread(_resolve, n, servers, timeout) for n in names))
    return dict(zip(names, results, strict=True))
