"""Files inside the sandbox: read, write, list, stat, tar streams, watch."""

from __future__ import annotations

import io
import os
import resource
import tarfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandlot import errors

pytestmark = pytest.mark.integration


async def _read_all(agen: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in agen])


def test_write_read_text_and_bytes(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name)
    entry = aio(sbx.agent.write("/tmp/a/b/hello.txt", "héllo\n".encode()))
    assert entry.type == "file" and entry.size == len("héllo\n".encode()) and entry.path == "/tmp/a/b/hello.txt"
    assert aio(_read_all(sbx.agent.read("/tmp/a/b/hello.txt"))).decode() == "héllo\n"
    blob = bytes(range(256)) * 4096
    aio(sbx.agent.write("/tmp/blob.bin", blob, mode=0o600))
    assert aio(_read_all(sbx.agent.read("/tmp/blob.bin"))) == blob
    assert aio(_read_all(sbx.agent.read("/tmp/blob.bin", offset=256, length=10))) == bytes(range(10))
    assert aio(sbx.agent.stat("/tmp/blob.bin")).mode == 0o600
    # What the agent wrote is what a process in the sandbox sees.
    assert aio(sbx.run("cat /tmp/a/b/hello.txt")).stdout == "héllo\n"
    aio(sbx.agent.write("/tmp/a/b/hello.txt", b"more\n", append=True))
    assert aio(sbx.run("cat /tmp/a/b/hello.txt")).stdout == "héllo\nmore\n"


def test_multi_frame_file_arrives_intact_both_ways(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    """Many file frames (and a short last one) each way: every byte where it belongs, as the sandbox sees it."""
    import hashlib

    sbx = make_sandbox("busybox", runtime_name)
    blob = os.urandom((24 << 20) + 12345)
    assert aio(sbx.agent.write("/root/multi.bin", blob), timeout=120).size == len(blob)
    digest = aio(sbx.run("sha256sum /root/multi.bin")).stdout.split()[0]
    assert digest == hashlib.sha256(blob).hexdigest()
    aio(sbx.run("head -c 3000000 /dev/urandom >> /root/multi.bin"))
    grown = aio(_read_all(sbx.agent.read("/root/multi.bin")), timeout=120)
    assert grown[: len(blob)] == blob and len(grown) == len(blob) + 3000000
    assert hashlib.sha256(grown).hexdigest() == aio(sbx.run("sha256sum /root/multi.bin")).stdout.split()[0]


def test_large_file_is_streamed(make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox(limits=__import__("sandlot.node", fromlist=["Limits"]).Limits(disk_mb=1024))
    size = 256 << 20
    chunk = os.urandom(1 << 20)

    async def gen() -> AsyncIterator[bytes]:
        for _ in range(size // len(chunk)):
            yield chunk

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    entry = aio(sbx.agent.write("/tmp/big", gen()), timeout=300)
    assert entry.size == size

    async def count() -> int:
        n = 0
        async for c in sbx.agent.read("/tmp/big"):
            n += len(c)
        return n

    assert aio(count(), timeout=300) == size
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 128, f"the client grew by {grown_mb:.0f} MB moving a {size >> 20} MB file"
    assert aio(sbx.run("wc -c < /tmp/big")).stdout.strip() == str(size)


def test_list_stat_exists_mkdir_rename_remove(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name)
    ag = sbx.agent
    assert aio(ag.mkdir("/work/x/y")) is True
    assert aio(ag.mkdir("/work/x/y")) is False
    aio(ag.write("/work/x/f.txt", b"1"))
    aio(ag.write("/work/x/y/g.txt", b"22"))
    aio(sbx.run("ln -s /work/x/f.txt /work/link"))
    names = {e.path for e in aio(ag.list("/work", depth=1))}
    assert names == {"/work/x", "/work/link"}
    deep = {e.path: e for e in aio(ag.list("/work", depth=3))}
    assert set(deep) == {"/work/x", "/work/link", "/work/x/f.txt", "/work/x/y", "/work/x/y/g.txt"}
    assert deep["/work/x/y/g.txt"].size == 2 and deep["/work/x"].type == "dir"
    link = aio(ag.stat("/work/link"))
    assert link.type == "symlink" and link.symlink_target == "/work/x/f.txt"
    assert aio(ag.exists("/work/x/f.txt")) and not aio(ag.exists("/work/nope"))
    moved = aio(ag.rename("/work/x/f.txt", "/work/f2.txt"))
    assert moved.path == "/work/f2.txt" and not aio(ag.exists("/work/x/f.txt"))
    with pytest.raises(errors.DirectoryNotEmptyError):
        aio(ag.remove("/work/x", recursive=False))
    aio(ag.remove("/work/x"))
    assert not aio(ag.exists("/work/x"))


def test_file_errors_name_the_path(make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox()
    ag = sbx.agent
    with pytest.raises(errors.SandboxFileNotFoundError, match="/no/such"):
        aio(_read_all(ag.read("/no/such")))
    with pytest.raises(FileNotFoundError):
        aio(ag.stat("/no/such"))
    with pytest.raises(errors.IsADirectoryError_, match="/tmp"):
        aio(_read_all(ag.read("/tmp")))
    with pytest.raises(errors.IsADirectoryError_):
        aio(ag.write("/tmp", b"x"))
    with pytest.raises(errors.NotADirectoryError_):
        aio(ag.list("/bin/busybox"))
    with pytest.raises(errors.SandboxFileNotFoundError):
        aio(ag.remove("/no/such"))


def test_paths_resolve_inside_the_sandbox(make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox()  # busybox: no /etc/shadow inside, while the host has one
    assert os.path.exists("/etc/shadow")
    for path in ("/../../../../etc/shadow", "../../../../../../etc/shadow", "/proc/1/root/etc/shadow"):
        with pytest.raises(errors.SandboxFileNotFoundError):
            aio(_read_all(sbx.agent.read(path)))
    aio(sbx.run("mkdir /w; ln -s / /w/up; ln -s ../../../../../etc /w/dots"))
    host_shadow = Path("/etc/shadow").read_bytes()
    for path in ("/w/up/etc/shadow", "/w/dots/shadow"):
        # gVisor 20221219 resolves "<symlink to />/etc" to "/" itself (a bug inside
        # the sandbox); either way the host's file is never what comes back.
        with pytest.raises((errors.SandboxFileNotFoundError, errors.IsADirectoryError_)):
            assert aio(_read_all(sbx.agent.read(path))) != host_shadow
    # Writes through a symlink land inside the sandbox, not on the host.
    aio(sbx.run("ln -s /etc /tmp/etclink"))
    aio(sbx.agent.write("/tmp/etclink/sandlot-probe", b"inside"))
    assert not os.path.exists("/etc/sandlot-probe")
    assert aio(sbx.run("cat /etc/sandlot-probe")).stdout == "inside"


def test_tar_upload_and_download_directory(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("a.txt", b"A"), ("sub/b.txt", b"BB"), ("sub/deeper/c.bin", os.urandom(300_000))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("sub/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "b.txt"
        tar.addfile(link)
    res = aio(sbx.agent.tar_write("/up", buf.getvalue()))
    assert res.entries >= 4
    assert aio(sbx.run("cat /up/sub/link; echo; stat -c %a /up/a.txt")).stdout.split() == ["BB", "640"]
    raw = aio(_read_all(sbx.agent.tar_read("/up")))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name.lstrip("./"): m for m in tar.getmembers()}
        assert {"a.txt", "sub/b.txt", "sub/deeper/c.bin", "sub/link"} <= set(members)
        assert members["sub/link"].issym() and members["sub/link"].linkname == "b.txt"
        f = tar.extractfile(members["sub/b.txt"])
        assert f is not None and f.read() == b"BB"


def test_tar_upload_rejects_escaping_entries(make_sandbox: Any, aio: Any) -> None:
    sbx = make_sandbox()
    for bad in ("../evil.txt", "/abs.txt", "ok/../../evil.txt"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(bad)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        with pytest.raises(errors.InvalidArgumentError, match=r"evil|abs"):
            aio(sbx.agent.tar_write("/dest", buf.getvalue()))
    assert not aio(sbx.agent.exists("/evil.txt")) and not aio(sbx.agent.exists("/abs.txt"))


def test_watch_directory_events(make_sandbox: Any, aio: Any, runtime_name: str) -> None:
    sbx = make_sandbox("busybox", runtime_name)
    aio(sbx.agent.mkdir("/watched/sub"))
    watch = aio(sbx.agent.watch("/watched", recursive=True))
    events: list[tuple[str, str]] = []
    done = threading.Event()

    async def consume() -> None:
        async for ev in watch.events():
            events.append((ev.op, ev.path))
            if ev.op == "remove" and ev.path.endswith("renamed.txt"):
                done.set()
                return

    fut = __import__("asyncio").run_coroutine_threadsafe(consume(), sbx.conn._server.get_loop())  # type: ignore[union-attr]
    time.sleep(0.3)
    aio(
        sbx.run(
            "echo 1 > /watched/new.txt; echo 2 >> /watched/new.txt; mv /watched/new.txt /watched/renamed.txt;"
            " echo 3 > /watched/sub/deep.txt; rm /watched/renamed.txt"
        )
    )
    assert done.wait(10), events
    fut.result(5)
    aio(watch.close())
    ops = {(op, os.path.basename(path)) for op, path in events}
    assert {
        ("create", "new.txt"),
        ("write", "new.txt"),
        ("rename", "new.txt"),
        ("rename", "renamed.txt"),
        ("create", "deep.txt"),
        ("remove", "renamed.txt"),
    } <= ops, events
