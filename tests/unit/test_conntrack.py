"""Reading the host's connection tracking (/proc/net/nf_conntrack) for a sandbox's address."""

from __future__ import annotations

from pathlib import Path

from sandlot.node.network import Flow, _has_flows, conntrack_flows

SANDBOX = "10.200.0.6"
TABLE = f"""\
ipv4     2 tcp      6 431999 ESTABLISHED src=10.200.0.5 dst={SANDBOX} sport=40100 dport=8080 src={SANDBOX} dst=10.200.0.5 sport=8080 dport=40100 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 110 TIME_WAIT src={SANDBOX} dst=93.184.216.34 sport=51000 dport=443 src=93.184.216.34 dst=192.168.1.9 sport=443 dport=51000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 udp      17 25 src={SANDBOX} dst=10.200.0.5 sport=41000 dport=53 src=10.200.0.5 dst={SANDBOX} sport=53 dport=41000 mark=0 zone=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=10.200.0.66 dst=10.200.0.65 sport=1 dport=2 src=10.200.0.65 dst=10.200.0.66 sport=2 dport=1 mark=0 zone=0 use=2
"""  # noqa: E501


def test_tcp_flows_of_the_address_either_way_in_their_original_direction(tmp_path: Path) -> None:
    table = tmp_path / "nf_conntrack"
    table.write_text(TABLE)
    assert conntrack_flows(SANDBOX, table) == [
        Flow("10.200.0.5", 40100, SANDBOX, 8080, "ESTABLISHED", 431999),  # the host reached the sandbox
        Flow(SANDBOX, 51000, "93.184.216.34", 443, "TIME_WAIT", 110),  # the sandbox reached out (NAT)
    ]
    assert str(conntrack_flows(SANDBOX, table)[0]) == f"10.200.0.5:40100 -> {SANDBOX}:8080 ESTABLISHED"
    assert conntrack_flows("10.200.0.6", tmp_path / "none") == []  # (no table: nothing it could tell)


def test_any_flow_of_the_address_counts_and_an_unreadable_table_is_not_taken_for_none(tmp_path: Path) -> None:
    table = tmp_path / "nf_conntrack"
    table.write_text(TABLE)
    assert _has_flows(SANDBOX, table)
    assert not _has_flows("10.200.0.2", table)  # (10.200.0.66 holds flows: no prefix matches)
    table.write_text(TABLE.splitlines(keepends=True)[2])
    assert _has_flows(SANDBOX, table), "a UDP flow is a flow too"
    assert _has_flows(SANDBOX, tmp_path / "none")
