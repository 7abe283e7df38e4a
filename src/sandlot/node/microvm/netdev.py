"""A microVM's network: its tap device, bridged to the sandbox's namespace.

The node gives every connected sandbox a namespace whose `eth0` (the peer of
a host veth) holds the sandbox's address and default route (node/network.py),
with the sandbox's nftables policy on the host side of that veth. A VM's own
kernel must hold that address instead: here the address moves from `eth0`
into the guest's configuration, and `eth0` and a tap (`tap0`, which QEMU
opens) join a bridge `br0`. The guest's packets leave through the same veth,
from the same address, so the same policy applies to them unchanged.

The address is kept in the bundle (`vmnet.json`): a VM started again in the
same namespace (a restore, a wake) finds `eth0` already without it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sandlot import errors
from sandlot.node.runtimes.base import run_tool

__all__ = ["TAP", "GuestNet", "attach"]

TAP = "tap0"


@dataclass(frozen=True)
class GuestNet:
    address: str
    prefix: int
    gateway: str


async def _ip(netns: str, *args: str) -> str:
    rc, out = await run_tool("ip", "-n", netns, *args)
    if rc != 0:
        raise errors.InternalError(f"configuring the VM's network in {netns} (ip {' '.join(args)}): {out}")
    return out


async def attach(netns_path: Path, saved: Path) -> GuestNet:
    """Bridge a tap into the namespace at `netns_path` (idempotent); returns the guest's addressing."""
    netns = netns_path.name  # named by `ip netns` under /run/netns
    addrs = json.loads(await _ip(netns, "-j", "-4", "addr", "show", "dev", "eth0") or "[]")
    inet = [a for link in addrs for a in link.get("addr_info", []) if a.get("family") == "inet"]
    if inet:
        routes = json.loads(await _ip(netns, "-j", "-4", "route", "show", "default") or "[]")
        gateway = next((r["gateway"] for r in routes if "gateway" in r), None)
        if gateway is None:
            raise errors.InternalError(f"the network namespace {netns} has no default route for the VM")
        net = GuestNet(inet[0]["local"], int(inet[0]["prefixlen"]), gateway)
        saved.write_text(json.dumps(asdict(net)))
        await _ip(netns, "addr", "flush", "dev", "eth0")
    else:
        try:
            net = GuestNet(**json.loads(saved.read_text()))
        except (OSError, ValueError, TypeError):
            raise errors.InternalError(f"the network namespace {netns} has no address for the VM") from None
    links = {link["ifname"] for link in json.loads(await _ip(netns, "-j", "link", "show") or "[]")}
    script = [] if "br0" in links else ["link add br0 type bridge"]
    if TAP not in links:
        script.append(f"tuntap add {TAP} mode tap")
    script += ["link set eth0 master br0", f"link set {TAP} master br0"]
    script += [f"link set {dev} up" for dev in ("br0", TAP, "eth0")]
    for line in script:
        await _ip(netns, *line.split())
    return net
