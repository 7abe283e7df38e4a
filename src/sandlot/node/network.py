"""Per-sandbox networks: a namespace, a veth pair, addresses, DNS and nftables rules.

A sandbox whose policy is not `none` gets (see `SandboxNet`):

- its own network namespace `sandlot-<id>` holding `eth0`, the peer of a host
  interface `sl<last 13 chars of id>`, with a /30 from the node's subnet
  (gateway on the host side, the sandbox's address inside, default route);
- one nftables table `inet sandlot_<id>` holding everything that concerns it:
  its egress policy (forward hook), a wall in front of the host (input hook:
  nothing from the sandbox reaches the node, the API or a loopback service),
  masquerading, and DNS: queries to the gateway are forwarded (DNAT) to the
  node's upstream resolvers, which are the only servers the node asks when it
  resolves the host names of the policy.

Replacing the table is one nft transaction, so a policy change applies at once
to the running sandbox (existing connections to destinations no longer allowed
stop passing). Tearing down is deleting the table, the namespace and the host
interface, then the lease.

Leases: a sandbox's /30 is the index of a file in `/run/sandlot/net/leases/`,
created with O_EXCL (host-wide, so several nodes share one subnet safely), and
holding the owner (the node's data dir) and sandbox id. The lease is taken
first and released last, so every namespace, interface and table the node made
is found again from the leases: `sweep` tears down the ones whose sandbox the
node no longer knows (after a crash or restart).

Ordering matters (MEASURED.md): the drop rules are loaded before the interface
is up and routed, so the sandbox never has an unfiltered moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from sandlot import errors
from sandlot.node import reaper
from sandlot.node.dns import resolve_names
from sandlot.node.netpolicy import ALWAYS_BLOCKED, NetworkPolicy, is_cidr

__all__ = ["LEASE_DIR", "Flow", "NetworkManager", "SandboxNet", "conntrack_flows", "render_rules"]

log = logging.getLogger("sandlot.node.network")

LEASE_DIR = Path("/run/sandlot/net/leases")
DEFAULT_SUBNET = "10.242.0.0/16"
NETNS_DIR = Path("/run/netns")


@functools.lru_cache(maxsize=4096)
def _address_in(subnet: str, index: int, offset: int) -> str:
    """Address `offset` of block `index` (4 addresses each) of `subnet`: asked for on every proxied request."""
    return str(ipaddress.ip_network(subnet).network_address + index * 4 + offset)


@dataclass
class SandboxNet:
    """The network one sandbox holds; saved beside the sandbox (`network.json`)."""

    sandbox_id: str
    index: int
    subnet: str
    policy: NetworkPolicy = field(default_factory=NetworkPolicy)
    #: host name -> addresses it had when the policy was last applied
    resolved: dict[str, list[str]] = field(default_factory=dict)

    @property
    def netns(self) -> str:
        return f"sandlot-{self.sandbox_id}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def host_if(self) -> str:
        return "sl" + self.sandbox_id[-13:]  # IFNAMSIZ: 15 characters

    @property
    def table(self) -> str:
        return "sandlot_" + self.sandbox_id.replace("-", "_")

    def _addr(self, offset: int) -> str:
        return _address_in(self.subnet, self.index, offset)

    @property
    def gateway(self) -> str:
        return self._addr(1)

    @property
    def address(self) -> str:
        return self._addr(2)

    def to_json(self) -> str:
        return json.dumps(
            {
                "sandbox_id": self.sandbox_id,
                "index": self.index,
                "subnet": self.subnet,
                "policy": self.policy.to_dict(),
                "resolved": self.resolved,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SandboxNet:
        d = json.loads(text)
        return cls(str(d["sandbox_id"]), int(d["index"]), str(d["subnet"]), NetworkPolicy.parse(d.get("policy")))


def _nft_set(name: str, elements: list[str]) -> str:
    body = "type ipv4_addr; flags interval; auto-merge;"
    if elements:
        body += " elements = { " + ", ".join(sorted(set(elements))) + " };"
    return f"  set {name} {{ {body} }}\n"


def render_rules(net: SandboxNet, policy: NetworkPolicy, resolved: dict[str, list[str]], dns: list[str]) -> str:
    """The nft script that (re)places the sandbox's table, atomically."""

    def addrs(entries: tuple[str, ...]) -> list[str]:
        out: list[str] = []
        for e in entries:
            out += [e] if is_cidr(e) else resolved.get(e, [])
        return out

    hif, t = net.host_if, net.table
    blocked = [*ALWAYS_BLOCKED, net.subnet]
    reject = "reject with icmpx type admin-prohibited"
    # Only its own address leaves (no spoofing from a raw socket), and no IPv6.
    egress = [f"    meta nfproto ipv6 {reject}", f"    ip saddr != {net.address} drop"]
    if policy.mode == "none":
        egress.append(f"    {reject}")
    else:
        if policy.egress_bytes_per_s:
            rate = policy.egress_bytes_per_s
            egress.append(f"    limit rate over {rate} bytes/second burst {max(rate // 4, 16384)} bytes drop")
        egress.append(f"    ip daddr @deny {reject}")
        egress.append(f"    ct state new ct count over {policy.max_connections} {reject}")
        if dns:  # only queries to the gateway, which prerouting sent to the upstream resolver
            egress.append(f"    ct original ip daddr {net.gateway} meta l4proto {{ tcp, udp }} th dport 53 accept")
        egress.append("    ip daddr @allow accept")
        egress.append(f"    ip daddr @blocked {reject}")
        egress.append("    accept" if policy.mode == "full" else f"    {reject}")
    pre = ""
    if dns and policy.mode != "none":
        upstream = dns[0]
        pre = (
            "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n"
            f'    iifname "{hif}" ip daddr {net.gateway} udp dport 53 dnat ip to {upstream}\n'
            f'    iifname "{hif}" ip daddr {net.gateway} tcp dport 53 dnat ip to {upstream}\n'
            "  }\n"
        )
    return (
        f"table inet {t} {{}}\ndelete table inet {t}\n"
        f"table inet {t} {{\n"
        + _nft_set("allow", addrs(policy.allow))
        + _nft_set("deny", addrs(policy.deny))
        + _nft_set("blocked", blocked)
        + pre
        + "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    ip saddr {net.address} oifname != "{hif}" masquerade\n  }}\n'
        "  chain input {\n    type filter hook input priority filter - 5; policy accept;\n"
        f'    iifname "{hif}" ct state established,related accept\n'
        f'    iifname "{hif}" {reject}\n  }}\n'
        "  chain forward {\n    type filter hook forward priority filter - 5; policy accept;\n"
        f'    iifname "{hif}" jump egress\n'
        f'    oifname "{hif}" ct state established,related accept\n'
        f'    oifname "{hif}" {reject}\n  }}\n'
        "  chain egress {\n" + "\n".join(egress) + "\n  }\n}\n"
    )


async def _run(*argv: str, stdin: bytes | None = None, timeout: float = 30.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    reaper.protected.add(proc.pid)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):  # it may end just now
            proc.kill()
        await proc.wait()
        return -1, f"{argv[0]} timed out after {timeout:.0f}s"
    finally:
        reaper.protected.discard(proc.pid)
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def _must(what: str, *argv: str, stdin: bytes | None = None) -> None:
    rc, out = await _run(*argv, stdin=stdin)
    if rc != 0:
        raise errors.InternalError(f"{what}: {out}")


class NetworkManager:
    """Makes, changes and removes sandbox networks for one node (`owner`: its data dir)."""

    def __init__(
        self,
        owner: str,
        *,
        subnet: str = DEFAULT_SUBNET,
        dns_servers: list[str] | None = None,
        lease_dir: Path = LEASE_DIR,
    ) -> None:
        net = ipaddress.ip_network(subnet)
        if net.version != 4 or net.prefixlen > 29:
            raise errors.InvalidArgumentError(f"the sandbox subnet must be IPv4 and /29 or larger, got {subnet}")
        self.owner = owner
        self.subnet = str(net)
        self.slots = net.num_addresses // 4
        self.dns_servers = list(dns_servers or [])
        self.lease_dir = lease_dir

    # ------------------------------------------------------------ leases

    def _take_lease(self, sandbox_id: str) -> int:
        self.lease_dir.mkdir(parents=True, exist_ok=True)
        used = {int(p.name) for p in self.lease_dir.iterdir() if p.name.isdigit()}
        body = json.dumps({"owner": self.owner, "sandbox_id": sandbox_id, "subnet": self.subnet}).encode()
        # Index 0 would put the gateway on the subnet's network address; start at 1.
        for index in range(1, self.slots):
            if index in used:
                continue
            try:
                fd = os.open(self.lease_dir / str(index), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            return index
        raise errors.LimitReachedError(f"no free sandbox address left in {self.subnet}")

    def _holds(self, net: SandboxNet) -> bool:
        """Whether the lease of `net`'s address still names its sandbox (ids are never reused)."""
        try:
            return bool(json.loads((self.lease_dir / str(net.index)).read_text())["sandbox_id"] == net.sandbox_id)
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _release(self, index: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.lease_dir / str(index)).unlink()

    # ------------------------------------------------------------ setup / change / teardown

    async def setup(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxNet:
        """Namespace, interfaces, rules and routes for a new sandbox; on failure nothing is left."""
        _enable_forwarding()
        net = SandboxNet(sandbox_id, self._take_lease(sandbox_id), self.subnet)
        try:
            # At once: the rules name the host interface, so they load before it exists.
            steps = await asyncio.gather(
                _forget_flows(net.address),  # left by an earlier holder of the lease, after a crash
                _must(f"creating network namespace {net.netns}", "ip", "netns", "add", net.netns),
                self.apply(net, policy),  # rules first: nothing passes before they exist
                return_exceptions=True,
            )
            for step in steps:
                if isinstance(step, BaseException):
                    raise step
            await _must(
                f"creating the interfaces of sandbox {sandbox_id}",
                "ip", "-batch", "-",
                stdin=(
                    f"link add {net.host_if} type veth peer name eth0 netns {net.netns}\n"
                    f"addr add {net.gateway}/30 dev {net.host_if}\n"
                    f"link set {net.host_if} up\n"
                ).encode(),
            )  # fmt: skip
            await _must(
                f"configuring the network namespace of sandbox {sandbox_id}",
                "ip", "-n", net.netns, "-batch", "-", stdin=_inside(net),
            )  # fmt: skip
        except BaseException:
            problems = await self.teardown(net)
            if problems:
                log.error("cleanup after a failed network setup of %s: %s", sandbox_id, "; ".join(problems))
            raise
        return net

    async def untouched(self, net: SandboxNet) -> bool:
        """Whether the namespace's eth0 still holds its address and default route as `setup` left
        them (a runtime whose start failed may have taken them into its own netstack, or not)."""
        rc, out = await _run("ip", "-n", net.netns, "-4", "-o", "addr", "show", "dev", "eth0")
        if rc != 0 or f" {net.address}/30 " not in out:
            return False
        rc, out = await _run("ip", "-n", net.netns, "-4", "route", "show", "default")
        return rc == 0 and f"via {net.gateway} " in out + " "

    async def reset(self, net: SandboxNet) -> bool:
        """Make the namespace of a sandbox whose runtime has ended as `setup` left it, in place: eth0's
        address and default route back (runsc's netstack took them when it started), the flows of the
        ended boot forgotten. Its rules never left. False: not done (eth0 or the namespace is gone, or a
        step failed); the caller renews the namespace instead (`teardown`, `setup`)."""
        if not net.netns_path.exists() or not Path(f"/sys/class/net/{net.host_if}").exists():
            return False
        rc, _ = await _run("ip", "-n", net.netns, "-batch", "-", stdin=_inside(net))
        return rc == 0 and (not _has_flows(net.address) or not await _forget_flows(net.address))

    async def apply(self, net: SandboxNet, policy: NetworkPolicy) -> None:
        """Replace the sandbox's rules with `policy`'s (host names resolved now)."""
        resolved = await resolve_names(policy.names, self.dns_servers)
        script = render_rules(net, policy, resolved, self.dns_servers)
        await _must(f"applying the network policy of sandbox {net.sandbox_id}", "nft", "-f", "-", stdin=script.encode())
        net.policy, net.resolved = policy, resolved

    async def refresh(self, net: SandboxNet) -> bool:
        """Resolve the policy's host names again; re-apply it when an answer changed. True if it did."""
        if not net.policy.names:
            return False
        resolved = await resolve_names(net.policy.names, self.dns_servers)
        if {k: sorted(v) for k, v in resolved.items()} == {k: sorted(v) for k, v in net.resolved.items()}:
            return False
        await self.apply(net, net.policy)
        return True

    async def teardown(self, net: SandboxNet) -> list[str]:
        """Remove everything `setup` made. Idempotent; returns what could not be removed."""
        problems: list[str] = []
        rc, out = await _run("nft", "delete", "table", "inet", net.table)
        if rc != 0 and "No such file" not in out:
            problems.append(f"nft table {net.table}: {out}")
        if net.netns_path.exists():
            rc, out = await _run("ip", "netns", "delete", net.netns)
            if rc != 0:
                problems.append(f"network namespace {net.netns}: {out}")
        if Path(f"/sys/class/net/{net.host_if}").exists():
            rc, out = await _run("ip", "link", "delete", net.host_if)
            # (deleting the namespace deletes the pair too, a moment later: gone between the two is done)
            if rc != 0 and "Cannot find device" not in out and "No such device" not in out:
                problems.append(f"interface {net.host_if}: {out}")
        # Only while the lease is still this sandbox's: a teardown repeated after a crash must not
        # take the address (or its flows) from the sandbox that holds it now.
        if not problems and self._holds(net):
            # The next holder of this address must not inherit its flows: neither replies
            # still in flight nor TIME_WAIT entries that would stop a pause with memory.
            problems += await _forget_flows(net.address)
            if not problems:
                self._release(net.index)
        return problems

    async def sweep(self, known: set[str]) -> dict[str, list[str]]:
        """Tear down the networks this node (or a node whose data dir is gone) left behind.

        Returns sandbox id -> problems, for every network that was swept.
        """
        swept: dict[str, list[str]] = {}
        if not self.lease_dir.is_dir():
            return swept
        for lease in sorted(self.lease_dir.iterdir()):
            if not lease.name.isdigit():
                continue
            try:
                info = json.loads(lease.read_text())
                owner, sandbox_id, subnet = str(info["owner"]), str(info["sandbox_id"]), str(info["subnet"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            mine = owner == self.owner and sandbox_id not in known
            abandoned = owner != self.owner and not Path(owner).exists()
            if mine or abandoned:
                swept[sandbox_id] = await self.teardown(SandboxNet(sandbox_id, int(lease.name), subnet))
        return swept

    def resolv_conf(self, net: SandboxNet) -> str:
        return f"nameserver {net.gateway}\n" if self.dns_servers else ""

    async def abort_host_connections(self, net: SandboxNet) -> set[int]:
        """Abort every TCP connection of the host to the sandbox's address (a reset, so neither end
        lingers in TIME_WAIT); returns the host ports of the ones the host had closed first
        (in TIME_WAIT on the host's side, so closed on the sandbox's)."""
        rc, out = await _run("ss", "-tanH", "state", "time-wait", "dst", net.address)
        closed_here = set()
        for line in out.splitlines() if rc == 0 else []:
            local = line.split()[-2] if len(line.split()) >= 2 else ""
            host, _, port = local.rpartition(":")
            if host == net.gateway and port.isdigit():
                closed_here.add(int(port))
        rc, out = await _run("ss", "-tK", "dst", net.address)
        if rc != 0:
            raise errors.InternalError(f"closing the host's connections to sandbox {net.sandbox_id}: {out}")
        return closed_here

    async def forget_flows(self, net: SandboxNet) -> list[str]:
        """Delete the host's connection-tracking entries of the sandbox's address (see `_forget_flows`)."""
        return await _forget_flows(net.address)


async def _forget_flows(address: str) -> list[str]:
    """Delete the host's connection-tracking entries of an address, both the flows it opened and
    the ones opened to it (the host reaching a port at its address); conntrack exits 1 when there were none."""
    problems = []
    for rc, out in await asyncio.gather(*(_run("conntrack", "-D", d, address) for d in ("-s", "-d"))):
        if rc not in (0, 1) or (rc == 1 and "flow entries have been deleted" not in out):
            problems.append(f"connection tracking of {address}: {out.strip()}")
    return problems


def _inside(net: SandboxNet) -> bytes:
    """The `ip -batch` script of the namespace's side: eth0's address, links up, the default route."""
    return (
        f"addr replace {net.address}/30 dev eth0\nlink set eth0 up\nlink set lo up\n"
        f"route replace default via {net.gateway}\n"
    ).encode()


def _tracked(address: str, table: Path) -> list[str] | None:
    """The host's connection-tracking entries naming the address, either way (None: no table to read)."""
    try:
        text = table.read_text()
    except OSError:
        return None
    return [line for line in text.splitlines() if f"src={address} " in line or f"dst={address} " in line]


def _has_flows(address: str, table: Path = Path("/proc/net/nf_conntrack")) -> bool:
    """Whether the host's connection tracking holds any flow of the address (True when it cannot tell)."""
    lines = _tracked(address, table)
    return lines is None or bool(lines)


@dataclass(frozen=True)
class Flow:
    """One TCP flow in the host's connection tracking, in its original direction (who opened it)."""

    src: str
    sport: int
    dst: str
    dport: int
    state: str
    #: seconds until connection tracking forgets it
    expires_s: int

    def __str__(self) -> str:
        return f"{self.src}:{self.sport} -> {self.dst}:{self.dport} {self.state}"


def conntrack_flows(address: str, table: Path = Path("/proc/net/nf_conntrack")) -> list[Flow]:
    """The TCP flows the host's connection tracking holds for a sandbox address, open or closing
    (it keeps a closed flow in TIME_WAIT for `time_wait_s`)."""
    flows: list[Flow] = []
    for line in _tracked(address, table) or []:  # (no connection tracking here: nothing it could tell)
        fields = line.split()
        if len(fields) < 6 or fields[2] != "tcp":
            continue
        kv: dict[str, str] = {}
        for f in fields:  # the original direction comes first, then the reply's
            key, _, value = f.partition("=")
            kv.setdefault(key, value)
        with contextlib.suppress(KeyError, ValueError):
            flows.append(Flow(kv["src"], int(kv["sport"]), kv["dst"], int(kv["dport"]), fields[5], int(fields[4])))
    return flows


def time_wait_s() -> int:
    """How long the host's connection tracking keeps a closed TCP flow (TIME_WAIT)."""
    try:
        return int(Path("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait").read_text())
    except (OSError, ValueError):
        return 120


def _enable_forwarding() -> None:
    """Sandboxes' traffic is routed by the host; the per-sandbox tables decide what passes."""
    path = Path("/proc/sys/net/ipv4/ip_forward")
    if path.read_text().strip() != "1":
        path.write_text("1\n")
