"""Untrusted code in a sandbox goes for the host and its neighbours first. Every attempt fails, in both runtimes.

One attacker sandbox (network `full`, the most open mode) and one victim
sandbox (network `egress`, a server listening on all its addresses, a secret
file and a process of its own) per runtime serve the whole module; the
exhaustion attacks get a small sandbox of their own.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.harness import Server
from tests.security.conftest import Canary, create, host_addresses, probe, sh

RUNTIMES = ["gvisor", "container"]
VICTIM_MARK = "victim-7c1e"


@pytest.fixture(scope="module", params=RUNTIMES)
def pair(request: pytest.FixtureRequest, attacker: httpx.Client, victim: httpx.Client) -> Iterator[dict[str, str]]:
    rt = request.param
    a = create(attacker, template="debian", runtime=rt, network="full")
    v = create(victim, template="debian", runtime=rt, network={"mode": "egress"})
    start = f"echo {VICTIM_MARK} > /tmp/{VICTIM_MARK} && exec python3 -m http.server 8000 --bind 0.0.0.0"
    for cmd in (start, f"python3 -c 'import time; time.sleep(3600)' {VICTIM_MARK}"):
        r = victim.post(f"/sandboxes/{v['sandbox_id']}/commands", json={"cmd": cmd, "background": True})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while sh(victim, v["sandbox_id"], "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8000))'")[2]:
        assert time.monotonic() < deadline, "the victim's server did not start"
        time.sleep(0.3)
    yield {
        "runtime": rt,
        "attacker": a["sandbox_id"],
        "victim": v["sandbox_id"],
        "victim_ip": v["network"]["address"],
    }
    attacker.delete(f"/sandboxes/{a['sandbox_id']}")
    victim.delete(f"/sandboxes/{v['sandbox_id']}")


def test_host_files_are_out_of_reach(pair: dict[str, str], attacker: httpx.Client, canary: Canary) -> None:
    s = canary.secret
    paths = [f"{s}", f"/proc/1/root{s}", f"/proc/self/root/../../..{s}", f"/.sandlot/../../..{s}",
             f"/.sandlot/run/../../../..{s}", f"/dev/../../..{s}", f"/proc/self/cwd/../../..{s}"]  # fmt: skip
    cmd = "; ".join(f"cat '{p}' 2>/dev/null" for p in paths)
    # The classic double-chroot escape: keep a handle on /, chroot into a subdirectory, walk up from it.
    chroot_escape = (
        "import os; os.makedirs('/tmp/c', exist_ok=True); fd = os.open('/', os.O_RDONLY); os.chroot('/tmp/c'); "
        "os.fchdir(fd); [os.chdir('..') for _ in range(64)]; os.chroot('.'); "
        f"print(open('{s}').read())"
    )
    out, err, _ = sh(attacker, pair["attacker"], f'{cmd}; python3 -c "{chroot_escape}"')
    assert canary.token not in out + err
    host = socket.gethostname()
    out, _, _ = sh(attacker, pair["attacker"], "hostname; cat /proc/1/cmdline | tr '\\0' ' '")
    assert out.split("\n")[0] != host and "sandlot-agent" in out


def test_mounts_devices_and_kernel_knobs_are_refused(pair: dict[str, str], attacker: httpx.Client) -> None:
    attempts = {
        "mount tmpfs": "mount -t tmpfs none /mnt",
        "mount proc": "mkdir -p /mnt/p && mount -t proc proc /mnt/p",
        "unmount the agent's socket": "umount /.sandlot/run",
        "a host block device": "mknod /tmp/sda b 8 0 && head -c 512 /tmp/sda > /dev/null",
        "the host's memory": "head -c 16 /proc/kcore > /dev/null",
        "sysrq": "echo h > /proc/sysrq-trigger",
        "a kernel parameter": "echo 1 > /proc/sys/kernel/sysrq",
        "the agent's config": "echo '{}' > /.sandlot/run/config.json",
        "the agent's binary": "echo x > /.sandlot/sandlot-agent",
    }
    for what, cmd in attempts.items():
        _, _, code = sh(attacker, pair["attacker"], cmd)
        assert code != 0, f"{what} ({pair['runtime']}): {cmd} worked"


def test_host_services_and_the_api_are_unreachable_from_inside(
    pair: dict[str, str], attacker: httpx.Client, victim: httpx.Client, api_server: Server, canary: Canary
) -> None:
    ports = [api_server.port, canary.port, 22, 5432]
    targets = [(addr, port) for addr in host_addresses() for port in ports]
    for client, sid in ((attacker, pair["attacker"]), (victim, pair["victim"])):
        got = probe(client, sid, targets)
        opened = [t for t, outcome in list(got.items())[1:] if outcome == "open"]
        assert opened == [], f"{pair['runtime']} sandbox reached the host at {opened}"


def test_cloud_metadata_is_unreachable(pair: dict[str, str], attacker: httpx.Client) -> None:
    got = probe(attacker, pair["attacker"], [("169.254.169.254", 80), ("169.254.169.254", 443), ("169.254.170.2", 80)])
    assert all(outcome != "open" for outcome in list(got.values())[1:]), got


def test_neighbours_ports_and_network_are_unreachable(pair: dict[str, str], attacker: httpx.Client) -> None:
    gateway = pair["victim_ip"].rsplit(".", 1)[0] + "." + str(int(pair["victim_ip"].rsplit(".", 1)[1]) - 1)
    got = probe(attacker, pair["attacker"], [(pair["victim_ip"], 8000), (gateway, 8000), ("127.0.0.1", 8000)])
    assert all(outcome != "open" for outcome in list(got.values())[1:]), got


def test_neighbours_files_and_processes_are_invisible(pair: dict[str, str], attacker: httpx.Client) -> None:
    head, tail = VICTIM_MARK[:4], VICTIM_MARK[4:]  # the attacker's own command line must not hold the mark
    look = f"M={head}; M=$M{tail}; cat /tmp/$M; cat /proc/*/cmdline | tr '\\0' ' '; ps -ef"
    out, _, _ = sh(attacker, pair["attacker"], look)
    assert VICTIM_MARK not in out and "http.server" not in out, out


@pytest.fixture(scope="module", params=RUNTIMES)
def hog(request: pytest.FixtureRequest, attacker: httpx.Client) -> Iterator[tuple[str, str]]:
    s = create(attacker, template="debian", runtime=request.param, memory_mb=128, disk_mb=64)
    yield request.param, s["sandbox_id"]
    attacker.delete(f"/sandboxes/{s['sandbox_id']}")


def _neighbours_fine(victim: httpx.Client) -> None:
    for s in victim.get("/sandboxes").json()["sandboxes"]:
        assert sh(victim, s["sandbox_id"], "echo fine")[0] == "fine\n"


def _exit(r: httpx.Response) -> dict:  # type: ignore[type-arg]
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.text.splitlines() if line]
    return next(e for e in events if e["type"] == "exit")  # type: ignore[no-any-return]


def test_memory_exhaustion_kills_the_hog_only(
    hog: tuple[str, str], attacker: httpx.Client, victim: httpx.Client
) -> None:
    rt, sid = hog
    hog_cmd = "python3 -c 'b=[]\nwhile True: b.append(bytearray(8<<20))'"
    end = _exit(attacker.post(f"/sandboxes/{sid}/commands", json={"cmd": hog_cmd, "timeout": 120}, timeout=180))
    assert end["oom_killed"], (rt, end)
    assert sh(attacker, sid, "echo alive")[0] == "alive\n"
    _neighbours_fine(victim)


def test_disk_exhaustion_ends_in_enospc(hog: tuple[str, str], attacker: httpx.Client) -> None:
    rt, sid = hog
    for path in ("/fill", "/tmp/fill", "/dev/shm/fill", "/dev/fill"):
        out, _, _ = sh(attacker, sid, f"dd if=/dev/zero of={path} bs=1M count=200 2>&1; rm -f {path}", timeout=120)
        assert "No space left on device" in out, (rt, path, out)
    assert sh(attacker, sid, "echo alive")[0] == "alive\n"


def test_fork_bomb_is_contained(hog: tuple[str, str], attacker: httpx.Client, victim: httpx.Client) -> None:
    rt, sid = hog
    bomb = "bomb() { bomb | bomb & }; bomb; sleep 3; echo survived"
    end = _exit(attacker.post(f"/sandboxes/{sid}/commands", json={"cmd": bomb, "timeout": 60}, timeout=120))
    assert not end["timed_out"], (rt, end)
    # What is left of it is in the command's process group.
    attacker.post(f"/sandboxes/{sid}/processes/{end['pid']}/signal", json={"signal": 9, "group": True})
    deadline = time.monotonic() + 30
    while True:  # the sandbox recovers once the bomb's last processes are gone
        r = attacker.post(f"/sandboxes/{sid}/commands", json={"cmd": "echo alive"})
        if r.status_code == 200 and '"alive\\n"' in r.text:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.5)
    _neighbours_fine(victim)
