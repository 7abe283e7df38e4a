"""The server SIGKILLed at every step of every operation, then restarted: nothing half done survives.

Each test arms a set of failpoints (sandlot/failpoints.py) at a server start,
brings one operation to each of them (every one stands still at its step), kills
the server once, as a crash at all those steps at the same moment, and restarts
it. Then every sandbox is either running as before (or as the interrupted
operation would have left it) or cleanly gone and reported so; no checkpoint is
half listed; and nothing is left behind (tests/leftovers.py): no mount, loop
device, cgroup, netns, nftables table, runtime state or disk file beyond what the
live sandboxes and checkpoints account for.

One server serves the module (its own data and image directories); each test
leaves it running.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandlot.node.rootfs import is_mountpoint
from tests.api.conftest import new_team_client
from tests.api.crash import Crashable, admin_client, ok, request, run
from tests.api.harness import Server
from tests.leftovers import assert_clean, leftovers

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

#: a process whose survival shows that a sandbox's memory came back (pause, hibernation, checkpoint);
#: one step a second (each `sleep` is a fork and exec: six sandboxes stepping faster load a CI host)
# Each count replaces the file whole (a rename): `echo > file` truncates it first, and a sandbox paused with its
# memory between the truncation and the write came back with an empty file (a CI dry run read '' there).
COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /root/count.new; mv /root/count.new /root/count; sleep 1; done"


@pytest.fixture(scope="module")
def crash() -> Iterator[Crashable]:
    base = Path(tempfile.mkdtemp(prefix="sandlot-faults-", dir="/var/tmp"))
    server = Server(base / "data", extra=("--images-dir", str(base / "images")))
    c = Crashable(server).start()
    try:
        yield c
    finally:
        c.crash()  # whatever state a failed test left: a restart cleans up, a stop kills the rest
        c.start()
        server.stop()
        c.close()
        problems = leftovers(server.data_dir)
        if not problems:  # else keep it: removing files under live mounts would only hide the leak
            shutil.rmtree(base, ignore_errors=True)
        assert problems == [], problems


def _create(c: httpx.Client, **body: Any) -> str:
    body.setdefault("timeout", 3600)  # a loaded host may take minutes over a test: no timeout mid-way
    return str(ok(c.post("/sandboxes", json=body), 201)["sandbox_id"])


def _background(c: httpx.Client, sid: str, cmd: str) -> int:
    return int(ok(c.post(f"/sandboxes/{sid}/commands", json={"cmd": cmd, "background": True}))["pid"])


def _live(c: httpx.Client) -> set[str]:
    return {s["sandbox_id"] for s in ok(c.get("/sandboxes"))["sandboxes"]}


def _until(c: httpx.Client, sid: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info = ok(c.get(f"/sandboxes/{sid}"))
        if info["state"] == state or time.monotonic() > deadline:
            assert info["state"] == state, info
            return dict(info)
        time.sleep(0.2)


def _alive(c: httpx.Client, sid: str, pid: int) -> None:
    """Process `pid` still runs in the sandbox and keeps counting: its memory came back."""
    code, before = run(c, sid, f"kill -0 {pid} && cat /root/count")
    assert code == 0, f"process {pid} of {sid} is gone"
    deadline = time.monotonic() + 30
    while int(run(c, sid, "cat /root/count")[1]) <= int(before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert int(run(c, sid, "cat /root/count")[1]) > int(before)


def _reset(crash: Crashable) -> None:
    """Start from no sandbox (a test that failed before its end may have left some)."""
    with admin_client(crash.server) as c:
        for sid in _live(c):
            assert c.delete(f"/sandboxes/{sid}").status_code == 204


def _clean(crash: Crashable, live: set[str], mentioned: set[str]) -> None:
    """Nothing left but the `live` sandboxes; then those are killed too (the next test starts empty)."""
    assert_clean(crash.server.data_dir, live=live, gone=mentioned - live)
    _reset(crash)
    assert_clean(crash.server.data_dir, gone=mentioned | live)


def test_crash_in_create_and_kill(crash: Crashable) -> None:
    srv = crash.server
    _reset(crash)
    with admin_client(srv) as c:
        bystander = _create(c)
        doomed = [_create(c), _create(c, network="egress"), _create(c, network="egress"), _create(c)]
        assert run(c, bystander, "echo kept > /root/f")[0] == 0
    crash.crash()
    points = [
        "node.create.after_mount",
        "node.network.before_record",
        "node.create.before_start",
        "node.boot.after_start",
        "api.kill.after_record",
        "node.destroy.after_runtime",
        "node.destroy.after_network",
        "node.destroy.after_unmount",
    ]
    crash.start(points)
    made = [
        crash.step("node.create.after_mount", request, srv, "POST", "/sandboxes", json={"network": "egress"}),
        crash.step("node.network.before_record", request, srv, "POST", "/sandboxes", json={"network": "egress"}),
        crash.step("node.create.before_start", request, srv, "POST", "/sandboxes", json={}),
        crash.step("node.boot.after_start", request, srv, "POST", "/sandboxes", json={}),
    ]
    for point, sid in zip(points[4:], doomed, strict=True):
        assert crash.step(point, request, srv, "DELETE", f"/sandboxes/{sid}") == sid
    mentioned = crash.crash() | set(made) | set(doomed)
    crash.start()
    with admin_client(srv) as c:
        for sid in doomed:  # the kill was recorded first: it is finished, not undone
            info = ok(c.get(f"/sandboxes/{sid}"))
            assert (info["state"], info["exit_reason"]) == ("killed", "killed by request"), info
        for sid in made:  # never handed out: no record, nothing left
            assert c.get(f"/sandboxes/{sid}").status_code == 404
        assert _live(c) == {bystander}
        assert run(c, bystander, "cat /root/f") == (0, "kept\n")
    _clean(crash, {bystander}, mentioned)


def test_a_recorded_create_no_longer_holds_room_beside_its_record(crash: Crashable) -> None:
    """A create's record and the release of its reservation commit together. With room for two
    sandboxes, a second create is admitted while the first stands just after its record (it was
    refused when the first's sandbox counted twice there: once live, once reserved).

    A team of its own: reservations of creates cut short by the other tests' crashes count for
    their team until they expire."""
    srv = crash.server
    crash.crash()
    crash.start({"api.create.after_record": "hang"})
    with admin_client(srv) as admin, new_team_client(srv, admin, "room-for-two") as c:
        ok(admin.patch("/teams/room-for-two/quota", json={"max_sandboxes": 2}))

        def create() -> httpx.Response:
            with httpx.Client(base_url=srv.url, headers=c.headers, timeout=600) as own:
                return own.post("/sandboxes", json={"timeout": 3600})

        first = crash.step("api.create.after_record", create)
        second = _create(c)  # (the failpoint has fired: this create passes it)
        assert _live(c) == {first, second}
        r = c.post("/sandboxes", json={})
        assert r.status_code == 429 and "may run 2" in r.json()["message"], r.text  # the limit still holds
        mentioned = crash.crash() | {first, second}  # (the first request is still parked: the crash ends it)
        key = c.headers["X-API-Key"]
    crash.start()
    with httpx.Client(base_url=srv.url, headers={"X-API-Key": key}, timeout=120) as c:  # (the restarted server's)
        for sid in (first, second):
            assert c.delete(f"/sandboxes/{sid}").status_code == 204
    assert_clean(srv.data_dir, gone=mentioned)


def test_crash_as_a_create_takes_a_mounted_spare_disk(crash: Crashable) -> None:
    """Killed between renaming a spare into a sandbox's disk and moving the spare's mount to it: the
    restart unmounts the spare first, then removes the half-made sandbox (no loop device is left on
    its deleted disk, and the disk is never mounted twice)."""
    srv = crash.server
    _reset(crash)
    crash.crash()
    crash.start(["node.spares.take.before_move"])
    spares = srv.data_dir / "disks" / "spares"
    with admin_client(srv) as c:
        first = _create(c)  # (a spare the restart unmounted, or a disk of its own: the step is not reached)
        assert run(c, first, "echo kept > /root/f")[0] == 0
    deadline = time.monotonic() + 60
    while not any(is_mountpoint(p.with_suffix(".mnt")) for p in spares.glob("*.img")):
        assert time.monotonic() < deadline, "no spare disk was mounted ahead"
        time.sleep(0.1)
    made = crash.step("node.spares.take.before_move", request, srv, "POST", "/sandboxes", json={})
    mentioned = crash.crash() | {first, made}
    crash.start()
    with admin_client(srv) as c:
        assert c.get(f"/sandboxes/{made}").status_code == 404
        assert _live(c) == {first}
        assert run(c, first, "cat /root/f") == (0, "kept\n")
        again = _create(c)
        assert run(c, again, "echo ok") == (0, "ok\n")
    _clean(crash, {first, again}, mentioned)


def test_crash_in_checkpoint_restore_and_fork(crash: Crashable) -> None:
    srv = crash.server
    _reset(crash)
    with admin_client(srv) as c:
        frozen, unrecorded, restored, swapped, parent = (_create(c) for _ in range(5))
        cks = {}
        for sid in (restored, swapped):
            run(c, sid, "echo before > /root/f")
            cks[sid] = ok(c.post(f"/sandboxes/{sid}/checkpoints", json={"name": "c"}), 201)["checkpoint_id"]
            run(c, sid, "echo after > /root/f")
        fork_ck = ok(c.post(f"/sandboxes/{parent}/checkpoints", json={"name": "base"}), 201)["checkpoint_id"]
    crash.crash()
    crash.start(
        {
            "node.checkpoint.frozen": "hang",
            "node.checkpoint.before_record": "hang",
            "node.restore.after_halt": "hang",
            "node.restore.after_swap": "hang",
            "api.fork.before_records": "hang",
            "api.create.before_record": "kill",  # the last step: the server kills itself there
        }
    )
    post = f"/sandboxes/{frozen}/checkpoints"
    assert crash.step("node.checkpoint.frozen", request, srv, "POST", post, json={"name": "x"}) == frozen
    post = f"/sandboxes/{unrecorded}/checkpoints"
    assert crash.step("node.checkpoint.before_record", request, srv, "POST", post, json={"name": "x"}) == unrecorded
    for point, sid in (("node.restore.after_halt", restored), ("node.restore.after_swap", swapped)):
        assert crash.step(point, request, srv, "POST", f"/sandboxes/{sid}/restore", json={"checkpoint_id": cks[sid]})
    crash.step("api.fork.before_records", request, srv, "POST", f"/checkpoints/{fork_ck}/fork", json={"count": 2})
    made = crash.step("api.create.before_record", request, srv, "POST", "/sandboxes", json={})
    srv.proc.wait(60)  # type: ignore[union-attr]
    mentioned = crash.crash() | {made}
    crash.start()
    live = {frozen, unrecorded, restored, swapped, parent}
    with admin_client(srv) as c:
        assert _live(c) == live  # no forked sandbox, no unrecorded create
        assert c.get(f"/sandboxes/{made}").status_code == 404
        for sid in (frozen, unrecorded):  # running, writable (a frozen disk would hang this), nothing half listed
            assert run(c, sid, "echo w > /root/w && cat /root/w", timeout=20) == (0, "w\n")
            assert ok(c.get(f"/sandboxes/{sid}/checkpoints"))["checkpoints"] == []
            ok(c.post(f"/sandboxes/{sid}/checkpoints", json={"name": "x"}), 201)  # the name was never taken
        for sid in (restored, swapped):  # the restore was finished: the checkpoint's files, running again
            assert ok(c.get(f"/sandboxes/{sid}"))["state"] == "running"
            assert run(c, sid, "cat /root/f") == (0, "before\n")
        assert [k["checkpoint_id"] for k in ok(c.get(f"/sandboxes/{parent}/checkpoints"))["checkpoints"]] == [fork_ck]
    _clean(crash, live, mentioned)


def test_crash_in_memory_pause_resume_and_hibernation(crash: Crashable) -> None:
    srv = crash.server
    _reset(crash)
    srv.extra = (*srv.extra, "--hibernate-after", "3")
    crash.crash()
    crash.start()
    with admin_client(srv) as c:
        paused, committed, resumed, ck_mem = (_create(c) for _ in range(4))
        woken = _create(c, persistent=True)
        pids = {sid: _background(c, sid, COUNTER) for sid in (paused, committed, resumed, ck_mem, woken)}
        assert ok(c.post(f"/sandboxes/{resumed}/pause", json={"memory": True}))["state"] == "paused"
        _until(c, woken, "hibernated")
    crash.crash()
    crash.start(
        [
            "node.memory.before_commit",
            "node.memory.after_commit",
            "node.memory.after_restore",
            "node.checkpoint.memory_saved",
            "node.hibernate.after_release",
            "node.wake.before_unmark",
        ]
    )
    pause = {"json": {"memory": True}}
    assert crash.step("node.memory.before_commit", request, srv, "POST", f"/sandboxes/{paused}/pause", **pause)
    assert crash.step("node.memory.after_commit", request, srv, "POST", f"/sandboxes/{committed}/pause", **pause)
    assert crash.step("node.memory.after_restore", request, srv, "POST", f"/sandboxes/{resumed}/resume") == resumed
    body = {"json": {"name": "m", "memory": True}}
    assert crash.step("node.checkpoint.memory_saved", request, srv, "POST", f"/sandboxes/{ck_mem}/checkpoints", **body)
    with admin_client(srv) as c:  # a persistent sandbox left idle: the reaper hibernates it
        slept = _create(c, persistent=True)
        pids[slept] = _background(c, slept, COUNTER)
    assert crash.reached("node.hibernate.after_release") == slept
    cmd = {"json": {"cmd": "true"}}
    assert crash.step("node.wake.before_unmark", request, srv, "POST", f"/sandboxes/{woken}/commands", **cmd) == woken
    mentioned = crash.crash()
    srv.extra = srv.extra[:-2]  # no idle hibernation while this test looks
    crash.start()
    with admin_client(srv) as c:
        # Brought to the state their records say, each with its processes and memory.
        expected = {paused: "running", committed: "running", resumed: "paused", ck_mem: "running",
                    slept: "hibernated", woken: "running"}  # fmt: skip
        assert {sid: ok(c.get(f"/sandboxes/{sid}"))["state"] for sid in expected} == expected
        assert ok(c.post(f"/sandboxes/{resumed}/resume"))["state"] == "running"
        for sid, pid in pids.items():
            _alive(c, sid, pid)
        assert ok(c.get(f"/sandboxes/{ck_mem}/checkpoints"))["checkpoints"] == []
    _clean(crash, set(expected), mentioned)


def _context_tar(dockerfile: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    return buf.getvalue()


def test_crash_in_pull_build_and_volume_delete(crash: Crashable) -> None:
    from tests.images.registry import Registry, make_layouts

    for tool in ("umoci", "skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (scripts/setup.sh --test)")
    _reset(crash)
    srv = crash.server
    work = srv.data_dir.parent / "registry"  # beside the data dir: gone with it
    registry = Registry(work / "registry").start()
    try:
        (work / "layouts").mkdir()
        layouts = make_layouts(work / "layouts")
        refs = {
            "multi": registry.push(layouts.layout, "multi", "t/multi:1", all_=True),
            "zstd": registry.push(layouts.layout, "app", "t/appz:1", zstd=True),
            "app": registry.push(layouts.layout, "app", "t/app:1"),
        }
        (srv.data_dir / "registries.json").write_text(json.dumps({registry.host: {"insecure": True}}))
        crash.crash()
        crash.start()
        with admin_client(srv) as c:
            volume = ok(c.post("/volumes", json={"name": "v"}), 201)["volume_id"]
            keeper = _create(c)
        crash.crash()
        crash.start(
            {
                "images.pull.before_unpack": "hang",
                "images.layer.before_publish": "hang",
                "images.template.before_publish": "hang",
                "build.step.after_sandbox": "hang",
                "volumes.delete.after_unlist": "kill",
            }
        )
        for point, ref in (
            ("images.pull.before_unpack", refs["multi"]),
            ("images.layer.before_publish", refs["zstd"]),
            ("images.template.before_publish", refs["app"]),
        ):
            crash.step(point, request, srv, "POST", "/images/pull", json={"ref": ref})
        dockerfile = "FROM busybox\nRUN echo built > /built\n"
        build = {"params": {"name": "built"}, "content": _context_tar(dockerfile)}
        crash.step("build.step.after_sandbox", request, srv, "POST", "/templates/build", **build)
        assert crash.step("volumes.delete.after_unlist", request, srv, "DELETE", "/volumes/v") == volume
        srv.proc.wait(60)  # type: ignore[union-attr]
        mentioned = crash.crash()
        crash.start()
        images = srv.data_dir.parent / "images"
        with admin_client(srv) as c:
            names = {t["name"] for t in ok(c.get("/templates"))["templates"]}
            assert not names & {*refs.values(), "built"}, names  # nothing half made is listed
            assert ok(c.get("/volumes"))["volumes"] == []
            assert sorted(p.name for p in (images / "tmp").iterdir()) == []  # the interrupted unpacks are gone
            # Everything can be done again, from where it stopped (downloads resume) or afresh.
            for ref in refs.values():
                assert '"template"' in ok_stream(c.post("/images/pull", json={"ref": ref}))
            assert '"template"' in ok_stream(c.post("/templates/build", **build))  # type: ignore[arg-type]
            sid = _create(c, template=refs["app"])
            assert run(c, sid, "cat /app/data.txt") == (0, "hello from the app layer\n")
            built = _create(c, template="built")
            assert run(c, built, "cat /built") == (0, "built\n")
            assert sorted(p.name for p in (images / "blobs").iterdir()) == []
            assert sorted(p.name for p in (images / "tmp").iterdir()) == []
            ok(c.post("/volumes", json={"name": "v"}), 201)
            for s in (sid, built):
                assert c.delete(f"/sandboxes/{s}").status_code == 204
        _clean(crash, {keeper}, mentioned)
    finally:
        registry.stop()


def ok_stream(r: httpx.Response) -> str:
    assert r.status_code == 200 and '"error"' not in r.text, r.text[-2000:]
    return r.text
