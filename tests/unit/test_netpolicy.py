"""Network policies as data, their nftables rendering, and host-name routing (no root needed)."""

from __future__ import annotations

import dataclasses

import pytest

from sandlot import errors
from sandlot.api.host_routing import HostRoutes
from sandlot.node.netpolicy import NetworkPolicy
from sandlot.node.network import SandboxNet, render_rules


def test_parse_normalises_entries() -> None:
    p = NetworkPolicy.parse({"mode": "egress", "allow": ["PyPI.org.", "10.1.2.3", "10.1.2.3/32"], "deny": []})
    assert p.allow == ("pypi.org", "10.1.2.3/32") and p.names == ("pypi.org",)
    assert NetworkPolicy.parse("full").connected and not NetworkPolicy.parse(None).connected
    assert NetworkPolicy.parse(p.to_dict()) == p
    capped = NetworkPolicy.parse({"mode": "full", "egress_bytes_per_s": 4096, "max_connections": 9})
    assert NetworkPolicy.parse(capped.to_dict()) == capped
    assert set(capped.to_dict()) == {f.name for f in dataclasses.fields(NetworkPolicy)}  # every field, by hand


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"mode": "open"}, "network.mode"),
        ({"mode": "egress", "allow": "pypi.org"}, "network.allow"),
        ({"mode": "egress", "allow": ["::1/128"]}, "network.allow"),
        ({"mode": "egress", "deny": ["*.evil.com"]}, "network.deny"),
        ({"mode": "egress", "deny": ["a b"]}, "network.deny"),
        ({"mode": "full", "egress_bytes_per_s": 10}, "network.egress_bytes_per_s"),
        ({"mode": "full", "max_connections": True}, "network.max_connections"),
        ({"mode": "none", "deny": ["1.2.3.4"]}, "network.mode"),
        ({"mode": "full", "colour": "red"}, "network"),
        (42, "network"),
    ],
)
def test_bad_policies_name_their_field(value: object, field: str) -> None:
    with pytest.raises(errors.InvalidArgumentError) as info:
        NetworkPolicy.parse(value)  # type: ignore[arg-type]
    assert info.value.field == field


def _net() -> SandboxNet:
    return SandboxNet("sb-0123456789abcdef", 3, "10.242.0.0/16")


def test_addresses_come_from_the_lease_index() -> None:
    net = _net()
    assert (net.gateway, net.address) == ("10.242.0.13", "10.242.0.14")
    assert len(net.host_if) <= 15 and net.netns == "sandlot-sb-0123456789abcdef"


def test_rules_put_deny_before_allow_and_blocked_before_the_mode() -> None:
    policy = NetworkPolicy.parse({"mode": "full", "allow": ["ok.test"], "deny": ["203.0.113.0/24"]})
    rules = render_rules(_net(), policy, {"ok.test": ["198.51.100.7"]}, ["192.0.2.53"])
    egress = rules[rules.index("chain egress") :]
    order = [egress.index(s) for s in ("@deny", "th dport 53 accept", "@allow accept", "@blocked", "    accept\n")]
    assert order == sorted(order)
    assert "198.51.100.7" in rules and "203.0.113.0/24" in rules and "169.254.0.0/16" in rules
    assert "dnat ip to 192.0.2.53" in rules
    assert rules.startswith("table inet sandlot_sb_0123456789abcdef {}\ndelete table")


def test_mode_none_and_no_dns_render_closed() -> None:
    rules = render_rules(_net(), NetworkPolicy.parse("none"), {}, [])
    egress = rules[rules.index("chain egress") :]
    assert "accept" not in egress and "dnat" not in rules
    assert "accept\n  }" not in rules.split("chain egress")[1]


def test_host_routes_match_only_their_domain() -> None:
    routes = HostRoutes("Sandbox.Example.", default=lambda *a: None)  # type: ignore[arg-type,return-value]
    sid = "sb-0123456789abcdef"
    assert routes.match(f"8000-{sid}.sandbox.example") == (sid, 8000)
    assert routes.match(f"8000-{sid}.sandbox.example:7770") == (sid, 8000)
    assert routes.match(f"8000-{sid}.other.example") is None
    assert routes.match(f"x-{sid}.sandbox.example") is None
    assert routes.match("sandbox.example") is None
    assert routes.host_for(sid, 80) == f"80-{sid}.sandbox.example"
