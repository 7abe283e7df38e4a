"""A sandbox's network policy: what it may reach, as data (no side effects here).

Modes:

- `none`: no interface but loopback; nothing in or out.
- `egress`: only the destinations on `allow` (CIDRs or host names), minus `deny`.
- `full`: anything, minus `deny` and minus what is always blocked.

Always blocked unless a CIDR or name on `allow` covers it: the node itself and
its loopback services, other sandboxes, link-local and cloud metadata
(169.254.0.0/16), and the private and special ranges in `ALWAYS_BLOCKED`.
`deny` wins over `allow`. The node turns a policy into nftables rules
(`sandlot.node.network`); this module only validates and normalises it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from sandlot import errors

__all__ = ["ALWAYS_BLOCKED", "MODES", "NetworkPolicy", "is_cidr"]

MODES = ("none", "egress", "full")

#: Destinations no sandbox reaches unless its allow list names them: private
#: (RFC 1918), shared/CGNAT, loopback, "this network", link-local and cloud
#: metadata, IETF protocol assignments, multicast and reserved.
ALWAYS_BLOCKED = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "224.0.0.0/3",
)  # fmt: skip

_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
MAX_ENTRIES = 256


def is_cidr(entry: str) -> bool:
    return entry[:1].isdigit() or ":" in entry


def _entry(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise errors.InvalidArgumentError(
            f"{where}: each entry must be a CIDR or a host name, got {value!r}", field=where
        )
    text = value.strip().lower().rstrip(".")
    if is_cidr(text):
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise errors.InvalidArgumentError(f"{where}: {value!r} is not a valid IPv4 CIDR", field=where) from None
        if net.version != 4:
            raise errors.InvalidArgumentError(
                f"{where}: {value!r} is IPv6; sandboxes only have IPv4 (IPv6 is always blocked)", field=where
            )
        return str(net)
    if text.startswith("*."):
        raise errors.InvalidArgumentError(
            f"{where}: wildcard {value!r} is not supported; list each host name", field=where
        )
    if not _HOSTNAME.match(text):
        raise errors.InvalidArgumentError(f"{where}: {value!r} is neither a CIDR nor a host name", field=where)
    return text


@dataclass(frozen=True)
class NetworkPolicy:
    """What a sandbox may reach. Frozen: a change is a new policy, applied as a whole."""

    mode: str = "none"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    #: egress bandwidth cap (bytes per second over the sandbox's interface); None: no cap
    egress_bytes_per_s: int | None = None
    #: connections the sandbox may have open at once (new ones past it are refused)
    max_connections: int = 256

    @property
    def connected(self) -> bool:
        """Whether the sandbox gets an interface (and its own network namespace)."""
        return self.mode != "none"

    def validate(self) -> NetworkPolicy:
        """A normalised copy (lower-case names, canonical CIDRs); raises InvalidArgumentError."""
        if self.mode not in MODES:
            raise errors.InvalidArgumentError(
                f"network mode must be one of {', '.join(MODES)}, got {self.mode!r}", field="network.mode"
            )
        lists: dict[str, tuple[str, ...]] = {}
        for name in ("allow", "deny"):
            values = getattr(self, name)
            if isinstance(values, str) or not isinstance(values, (list, tuple)):
                raise errors.InvalidArgumentError(f"network.{name} must be a list", field=f"network.{name}")
            if len(values) > MAX_ENTRIES:
                raise errors.InvalidArgumentError(
                    f"network.{name} holds at most {MAX_ENTRIES} entries, got {len(values)}", field=f"network.{name}"
                )
            lists[name] = tuple(dict.fromkeys(_entry(v, f"network.{name}") for v in values))
        if self.mode == "none" and (lists["allow"] or lists["deny"]):
            raise errors.InvalidArgumentError(
                "network.allow and network.deny need mode 'egress' or 'full' (mode 'none' has no network)",
                field="network.mode",
            )
        rate = self.egress_bytes_per_s
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int) or not 1024 <= rate <= 1 << 40):
            raise errors.InvalidArgumentError(
                f"network.egress_bytes_per_s must be between 1024 and 2**40, got {rate!r}",
                field="network.egress_bytes_per_s",
            )
        conns = self.max_connections
        if isinstance(conns, bool) or not isinstance(conns, int) or not 1 <= conns <= 65536:
            raise errors.InvalidArgumentError(
                f"network.max_connections must be between 1 and 65536, got {conns!r}", field="network.max_connections"
            )
        return NetworkPolicy(self.mode, lists["allow"], lists["deny"], rate, conns)

    @property
    def names(self) -> tuple[str, ...]:
        """Host names on either list (the node resolves them)."""
        return tuple(e for e in (*self.allow, *self.deny) if not is_cidr(e))

    def to_dict(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict (a deep copy, ~50x slower): every API request reads it.
        return {
            "mode": self.mode,
            "allow": list(self.allow),
            "deny": list(self.deny),
            "egress_bytes_per_s": self.egress_bytes_per_s,
            "max_connections": self.max_connections,
        }

    @classmethod
    def parse(cls, value: NetworkPolicy | str | dict[str, Any] | None) -> NetworkPolicy:
        """From a mode name, a dict (the API's and SDK's shape) or a policy; validated."""
        if value is None:
            return cls()
        if isinstance(value, NetworkPolicy):
            return value.validate()
        if isinstance(value, str):
            return cls(mode=value).validate()
        if not isinstance(value, dict):
            raise errors.InvalidArgumentError(f"network must be a mode or an object, got {value!r}", field="network")
        unknown = set(value) - {"mode", "allow", "deny", "egress_bytes_per_s", "max_connections"}
        if unknown:
            raise errors.InvalidArgumentError(
                f"unknown network setting(s): {', '.join(sorted(unknown))}", field="network"
            )
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in value.items()}
        return cls(**kw).validate()
