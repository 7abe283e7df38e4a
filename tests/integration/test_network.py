"""Network policy on real gVisor and crun, against the tests' own "internet" (tests/netlab.py).

Every destination here is either inside a namespace these tests made or on the
host itself (which sandboxes must not reach): no packet leaves the machine.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandlot import errors
from sandlot.node.network import conntrack_flows
from tests.conftest import IMAGE_CACHE, LoopThread
from tests.netlab import Internet, host_http_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PROBE = r"""
import json, socket, sys, time, urllib.request
out = []
for url in sys.argv[1:]:
    try:
        out.append(urllib.request.urlopen(url, timeout=4).read().decode())
    except Exception as e:
        out.append("ERR " + type(e).__name__)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def net_node(loop: LoopThread, internet: Internet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A node whose sandboxes' DNS goes to the lab's server (never a real resolver)."""
    from sandlot.node import Node, NodeConfig

    data = Path(tmp_path_factory.mktemp("netnode", numbered=True))
    n = Node(NodeConfig(data_dir=data, images_dir=IMAGE_CACHE, dns_servers=[internet.dns]))
    loop.run(n.bundle(), timeout=300)
    yield n
    loop.run(n.close(), timeout=120)


@pytest.fixture
def make(net_node: Any, aio: Any) -> Iterator[Any]:
    from sandlot.node import SandboxSpec

    made: list[Any] = []

    def make(network: Any, runtime: str = "gvisor", image: str = "debian") -> Any:
        sbx = aio(net_node.create(SandboxSpec(image=image, runtime=runtime, network=network)))
        made.append(sbx)
        return sbx

    yield make
    for sbx in made:
        try:
            aio(net_node.kill(sbx.id))
        except errors.SandlotError:
            pass


def fetch(aio: Any, sbx: Any, *urls: str) -> list[str]:
    res = aio(sbx.run(["python3", "-c", PROBE, *urls], timeout=60))
    assert res.exit_code == 0, res.stderr
    out: list[str] = json.loads(res.stdout)
    return out


def host_address() -> str:
    """The host's own address on its default route's interface (not loopback)."""
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    for link in json.loads(out):
        for a in link.get("addr_info", []):
            if not a["local"].startswith(("127.", "198.18.", "10.242.")):
                return str(a["local"])
    pytest.skip("the host has no non-loopback address to test against")


@pytest.mark.parametrize("runtime", ["gvisor", "container"])
def test_egress_allows_listed_destinations_and_deny_wins(make: Any, aio: Any, internet: Internet, runtime: str) -> None:
    sbx = make({"mode": "egress", "allow": ["allowed.test", internet.subnet], "deny": ["denied.test"]}, runtime)
    got = fetch(aio, sbx, f"http://{internet.web}/", f"http://{internet.other}/", "http://allowed.test/",
                "http://denied.test/")  # fmt: skip
    assert got[0] == f"hello from {internet.web}"
    assert got[1].startswith("ERR"), "other is denied by name (denied.test): deny wins over the allowed /24"
    assert got[2] == f"hello from {internet.web}", "names resolve through the sandbox's DNS"
    assert got[3].startswith("ERR")


def test_egress_reaches_nothing_unlisted(make: Any, aio: Any, internet: Internet) -> None:
    sbx = make({"mode": "egress", "allow": ["allowed.test"]})
    assert fetch(aio, sbx, f"http://{internet.web}/", f"http://{internet.other}/") == [
        f"hello from {internet.web}",
        "ERR URLError",
    ]


def test_host_metadata_and_private_ranges_are_unreachable_even_in_full_mode(
    make: Any, aio: Any, internet: Internet
) -> None:
    server, port = host_http_server()
    server.close()
    # A real service on every host address: the sandbox must reach none of them.
    svc = subprocess.Popen(
        ["python3", "-m", "http.server", str(port), "--bind", "0.0.0.0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        host = host_address()
        _wait_port("127.0.0.1", port)
        sbx = make("full")
        assert sbx.net is not None
        urls = [
            f"http://{internet.web}/",
            f"http://{sbx.net.gateway}:{port}/",
            f"http://{host}:{port}/",
            "http://169.254.169.254/latest/meta-data/",
            f"http://10.0.0.1:{port}/",
        ]
        got = fetch(aio, sbx, *urls)
        assert got[0] == f"hello from {internet.web}"
        assert all(g.startswith("ERR") for g in got[1:]), got
        # The same service answers the host itself: the test can fail.
        with socket.create_connection((host, port), timeout=2):
            pass
    finally:
        svc.kill()
        svc.wait()


def test_one_sandbox_cannot_reach_another(make: Any, aio: Any) -> None:
    a = make("full")
    b = make("full")
    b_server = aio(b.start(["python3", "-m", "http.server", "8000"]))
    assert b_server.pid
    for _ in range(100):
        res = aio(b.run(["python3", "-c", PROBE, "http://127.0.0.1:8000/"]))
        if "ERR" not in res.stdout:
            break
        time.sleep(0.1)
    assert "Directory listing" in res.stdout, "b's server answers inside b"
    assert fetch(aio, a, f"http://{b.net.address}:8000/") == ["ERR URLError"]


def test_host_names_are_resolved_again_when_their_answer_changes(
    make: Any, aio: Any, net_node: Any, internet: Internet
) -> None:
    sbx = make({"mode": "egress", "allow": ["moving.test"]})
    web, other = f"http://{internet.web}/", f"http://{internet.other}/"
    try:
        assert fetch(aio, sbx, web, other) == [f"hello from {internet.web}", "ERR URLError"]
        internet.set_name("moving.test", internet.other)
        assert aio(net_node.network.refresh(sbx.net)) is True
        assert fetch(aio, sbx, web, other) == ["ERR URLError", f"hello from {internet.other}"]
        assert aio(net_node.network.refresh(sbx.net)) is False, "nothing changed since"
    finally:
        internet.set_name("moving.test", internet.web)


def test_policy_changes_apply_to_a_running_sandbox(make: Any, aio: Any, net_node: Any, internet: Internet) -> None:
    sbx = make({"mode": "egress"})
    url = f"http://{internet.web}/"
    assert fetch(aio, sbx, url) == ["ERR URLError"]
    aio(net_node.set_network(sbx.id, "full"))
    assert fetch(aio, sbx, url) == [f"hello from {internet.web}"]
    aio(net_node.set_network(sbx.id, {"mode": "full", "deny": [internet.web]}))
    assert fetch(aio, sbx, url) == ["ERR URLError"]
    aio(net_node.set_network(sbx.id, "none"))
    assert fetch(aio, sbx, f"http://{internet.other}/") == ["ERR URLError"]


def test_a_sandbox_without_network_cannot_be_given_one_live(make: Any, aio: Any, net_node: Any) -> None:
    sbx = make("none", image="busybox")
    with pytest.raises(errors.SandboxStateError, match="created with network 'none'"):
        aio(net_node.set_network(sbx.id, "full"))


def test_bad_policies_name_the_field(net_node: Any, aio: Any) -> None:
    from sandlot.node import SandboxSpec

    for bad, field in [
        ({"mode": "open"}, "network.mode"),
        ({"mode": "egress", "allow": ["300.1.1.1/8"]}, "network.allow"),
        ({"mode": "egress", "deny": ["*.example.com"]}, "network.deny"),
        ({"mode": "full", "max_connections": 0}, "network.max_connections"),
        ({"mode": "none", "allow": ["1.2.3.4"]}, "network.mode"),
    ]:
        with pytest.raises(errors.InvalidArgumentError) as info:
            aio(net_node.create(SandboxSpec(image="busybox", network=bad)))
        assert info.value.field == field, bad


def test_open_connections_are_bounded(make: Any, aio: Any, internet: Internet) -> None:
    sbx = make({"mode": "full", "max_connections": 3})
    script = (
        "import socket\nheld=[]\nfor i in range(5):\n"
        f"    try:\n        held.append(socket.create_connection(('{internet.web}', 80), timeout=3))\n"
        "    except OSError as e:\n        print('refused', i)\n"
    )
    res = aio(sbx.run(["python3", "-c", script], timeout=60))
    assert res.stdout.split("\n")[:2] == ["refused 3", "refused 4"], res.stdout + res.stderr


SEND = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 9000), timeout=30)
t = time.monotonic()
s.sendall(b"x" * int(sys.argv[2]))
s.shutdown(socket.SHUT_WR)
got = s.recv(100).decode()
print(got, round(time.monotonic() - t, 2))
"""


def test_egress_bandwidth_cap(make: Any, aio: Any, net_node: Any, internet: Internet) -> None:
    size = 256 * 1024
    sbx = make({"mode": "full", "egress_bytes_per_s": 64 * 1024})

    def send() -> float:
        res = aio(sbx.run(["python3", "-c", SEND, internet.web, str(size)], timeout=60))
        got, secs = res.stdout.split()
        assert int(got) == size, res.stdout + res.stderr
        return float(secs)

    capped = send()
    assert capped >= 2.0, f"256 KiB at 64 KiB/s took {capped}s"
    aio(net_node.set_network(sbx.id, "full"))
    assert send() < capped / 2


def test_a_warm_pool_hands_out_sandboxes_with_the_requested_policy(net_node: Any, aio: Any, internet: Internet) -> None:
    from sandlot.node import SandboxSpec

    pool_spec = SandboxSpec(image="debian", network={"mode": "egress"})

    async def set_size(n: int) -> Any:  # on the node's loop: it starts tasks
        return net_node.pool.set_size(pool_spec, n)

    key = aio(set_size(1))
    try:
        deadline = time.monotonic() + 60
        while net_node.pool.idle(key) < 1:
            assert time.monotonic() < deadline, "the pool never filled"
            time.sleep(0.2)
        hits = net_node.pool.hits
        sbx = aio(net_node.create(SandboxSpec(image="debian", network={"mode": "egress", "allow": [internet.web]})))
        try:
            assert net_node.pool.hits == hits + 1, "served from the pool"
            assert sbx.net.policy.allow == (f"{internet.web}/32",)
            assert fetch(aio, sbx, f"http://{internet.web}/", f"http://{internet.other}/") == [
                f"hello from {internet.web}",
                "ERR URLError",
            ]
        finally:
            aio(net_node.kill(sbx.id))
    finally:
        aio(set_size(0))
        aio(net_node.pool.close())


def test_kill_removes_namespace_interface_rules_and_lease(make: Any, aio: Any, net_node: Any) -> None:
    sbx = make({"mode": "egress"})
    net = sbx.net
    assert net.netns_path.exists() and _iface(net.host_if) and _table(net.table)
    lease = net_node.network.lease_dir / str(net.index)
    assert lease.exists()
    aio(net_node.kill(sbx.id))
    assert not net.netns_path.exists()
    assert not _iface(net.host_if)
    assert not _table(net.table)
    assert not lease.exists()


def test_a_restarted_node_sweeps_networks_it_no_longer_knows(net_node: Any, aio: Any) -> None:
    from sandlot.node import Node
    from sandlot.node.netpolicy import NetworkPolicy
    from sandlot.node.recovery import recover

    # What a crash between "network made" and "sandbox recorded" leaves behind.
    orphan = aio(net_node.network.setup("sb-orphan0000000000", NetworkPolicy.parse("full")))
    assert orphan.netns_path.exists() and _table(orphan.table)
    assert not net_node.list_sandboxes()  # every earlier test's sandbox is killed
    aio(recover(Node(net_node.config), {}))
    assert not orphan.netns_path.exists()
    assert not _iface(orphan.host_if)
    assert not _table(orphan.table)


def _iface(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _table(name: str) -> bool:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return f"inet {name}" in out.split("\n") or f"table inet {name}" in out


def _wait_port(host: str, port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)


def test_restore_and_fork_keep_the_network(make: Any, aio: Any, net_node: Any, internet: Internet) -> None:
    """A restore restarts the runtime in the same namespace; a fork gets a namespace of its own."""
    sbx = make({"mode": "egress", "allow": ["allowed.test"]})
    ck = aio(net_node.checkpoint(sbx.id, "net"))
    aio(net_node.restore(sbx.id, ck.id))
    assert fetch(aio, sbx, "http://allowed.test/", f"http://{internet.other}/") == [
        f"hello from {internet.web}",
        "ERR URLError",
    ]
    (child,) = aio(net_node.fork(ck.id, 1))
    try:
        assert child.net is not None and child.net.netns != sbx.net.netns
        assert fetch(aio, child, "http://allowed.test/") == [f"hello from {internet.web}"]
    finally:
        aio(net_node.kill(child.id))


def test_pause_with_memory_keeps_the_network(make: Any, aio: Any, net_node: Any, internet: Internet) -> None:
    sbx = make({"mode": "egress", "allow": ["allowed.test"]})
    aio(net_node.pause(sbx.id, memory=True))
    aio(net_node.resume(sbx.id))
    assert fetch(aio, sbx, "http://allowed.test/", f"http://{internet.other}/") == [
        f"hello from {internet.web}",
        "ERR URLError",
    ]


def test_pause_with_memory_after_tcp_is_refused_clearly(make: Any, aio: Any, net_node: Any, internet: Internet) -> None:
    """gVisor cannot save a TCP endpoint, even one in TIME_WAIT: a clear error, and the sandbox runs on."""
    sbx = make({"mode": "egress", "allow": ["allowed.test"]})
    assert fetch(aio, sbx, "http://allowed.test/") == [f"hello from {internet.web}"]
    with pytest.raises(errors.SandboxStateError, match=r"cannot save its TCP connections \(10\.242\."):
        aio(net_node.pause(sbx.id, memory=True))
    assert sbx.state.value == "running", sbx.exit_reason
    assert fetch(aio, sbx, "http://allowed.test/") == [f"hello from {internet.web}"]
    address = sbx.net.address
    aio(net_node.kill(sbx.id))
    assert conntrack_flows(address) == [], "the next holder of the address inherits no tracked flows"


def test_flows_opened_to_a_sandbox_go_with_its_address(make: Any, aio: Any, net_node: Any) -> None:
    """The host reaching a server at a sandbox's address leaves tracked flows too; a released address
    takes them along (its next holder could not pause with memory while they linger)."""
    sbx = make("full")
    address = sbx.net.address
    aio(sbx.start("python3 -m http.server 8080 >/dev/null 2>&1"))
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection((address, 8080), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert s.recv(12).startswith(b"HTTP/1.0")
            break
        except OSError:
            assert time.monotonic() < deadline, "the server in the sandbox never answered"
            time.sleep(0.2)
    assert any(f"-> {address}:8080" in str(flow) for flow in conntrack_flows(address))
    aio(net_node.kill(sbx.id))
    assert conntrack_flows(address) == [], "the next holder of the address inherits no tracked flows"


def test_hibernating_after_tcp_stops_the_processes_and_wakes_connected(
    make: Any, aio: Any, net_node: Any, internet: Internet
) -> None:
    """No memory snapshot while TCP flows linger: the sandbox hibernates without it, files kept."""
    sbx = make({"mode": "egress", "allow": ["allowed.test"]})
    assert fetch(aio, sbx, "http://allowed.test/") == [f"hello from {internet.web}"]
    aio(sbx.run("echo kept > /root/f"))
    aio(net_node.hibernate(sbx.id))
    assert sbx.state.value == "hibernated"
    aio(net_node.wake(sbx.id))
    assert aio(sbx.run("cat /root/f")).stdout == "kept\n"
    assert fetch(aio, sbx, "http://allowed.test/") == [f"hello from {internet.web}"]


def test_dockerfile_run_steps_have_the_network_asked_for(
    net_node: Any, aio: Any, internet: Internet, tmp_path: Path
) -> None:
    """RUN steps reach the outside world by default (as `docker build`), and nothing with network none."""
    from sandlot.node.dockerfile.builder import BuildOptions, build

    fetch_step = (
        "FROM debian\n"
        f"RUN python3 -c \"import urllib.request; open('/fetched', 'w').write("
        f"urllib.request.urlopen('http://{internet.web}/', timeout=5).read().decode())\"\n"
    )
    name = f"net-build-{tmp_path.name}"
    try:
        image = aio(build(net_node, BuildOptions(name=name, context=tmp_path, dockerfile=fetch_step), print), 600)
        assert (Path(image.layers[-1]) / "fetched").read_text() == f"hello from {internet.web}"
        offline_steps = fetch_step.replace("FROM debian\n", "FROM debian\nENV OFFLINE=1\n")  # not from the cache
        offline = BuildOptions(name=name + "-off", context=tmp_path, dockerfile=offline_steps, network="none")
        with pytest.raises(errors.BuildError, match="URLError"):
            aio(build(net_node, offline, print), 600)
    finally:
        net_node.images.remove(name)
