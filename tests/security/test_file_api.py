"""The file API, tar streams, exports and builds, with traversal and symlinks: nothing reaches the host's files.

Every path the API is given is resolved inside the sandbox (by its agent);
the node's own host-side work on a sandbox's files (exports, forks, build
layers) never follows a link the sandbox made.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterator

import httpx
import pytest

from tests.security.conftest import Canary, create, sh


@pytest.fixture(scope="module")
def box(attacker: httpx.Client) -> Iterator[str]:
    s = create(attacker, template="debian")
    yield s["sandbox_id"]
    attacker.delete(f"/sandboxes/{s['sandbox_id']}")


def _tar(entries: list[tuple[str, bytes | str]]) -> bytes:
    """A tar of (name, content) entries; a str content makes a symlink to it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_reading_through_traversal_and_links_stays_inside(box: str, attacker: httpx.Client, canary: Canary) -> None:
    s = str(canary.secret)
    sh(attacker, box, f"ln -s {s} /tmp/to-host && ln -s / /tmp/root-link && ln -s /proc/1/root /tmp/init-root")
    files = f"/sandboxes/{box}/files"
    for path in (s, f"/../../../..{s}", f"/proc/1/root{s}", "/tmp/to-host", f"/tmp/root-link{s}",
                 f"/tmp/init-root{s}", f"/proc/self/root/..{s}"):  # fmt: skip
        r = attacker.get(files, params={"path": path})
        # Not found, or (gVisor 20221219 resolves a link to "/" followed by missing names to "/") a directory.
        assert r.status_code in (400, 404) and canary.token not in r.text, (path, r.status_code, r.text)
    r = attacker.get(f"{files}/tar", params={"path": "/tmp"})
    assert r.status_code == 200 and canary.token.encode() not in r.content
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        links = {m.name: m.linkname for m in tar if m.issym()}
    assert links.get("to-host") == s  # a link, never the host's file


def test_writing_through_traversal_and_links_stays_inside(box: str, attacker: httpx.Client, canary: Canary) -> None:
    d = str(canary.dir)
    files = f"/sandboxes/{box}/files"
    sh(attacker, box, f"ln -s {d} /tmp/to-host-dir")
    for path in (f"/../../..{d}/pwned-1", "/tmp/to-host-dir/pwned-2", f"/proc/1/root{d}/pwned-3"):
        attacker.put(files, params={"path": path}, content=b"pwned")
    attacker.post(f"{files}/mkdir", json={"path": f"/../..{d}/pwned-dir"})
    attacker.post(f"{files}/rename", json={"src": "/etc/hostname", "dst": "/tmp/to-host-dir/pwned-4"})
    evil = _tar([(f"../../../../..{d}/pwned-5", b"x"), (f"{d}/pwned-6", b"x"), ("link", d), ("link/pwned-7", b"x")])
    r = attacker.put(f"{files}/tar", params={"path": "/tmp/up"}, content=evil)
    assert r.status_code in (200, 400), r.text
    # Whatever was written landed in the sandbox; the canary fixture checks the host's directory.
    out, _, _ = sh(attacker, box, f"ls {d} 2>/dev/null; ls /tmp/to-host-dir/ 2>/dev/null")
    assert canary.token not in out


def test_export_gives_the_sandboxs_links_not_the_hosts_files(attacker: httpx.Client, canary: Canary) -> None:
    small = create(attacker, template="busybox")["sandbox_id"]  # its export is small
    sh(attacker, small, f"mkdir -p /root && ln -sf {canary.secret} /root/leak && ln -sfn {canary.dir} /root/leak-dir")
    r = attacker.get(f"/sandboxes/{small}/export", timeout=300)
    attacker.delete(f"/sandboxes/{small}")
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content)) as layout:
        for member in layout:
            blob = layout.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if blob[:2] == b"\x1f\x8b":
                blob = gzip.decompress(blob)
            assert canary.token.encode() not in blob, member.name


def test_a_fork_never_writes_through_the_sandboxs_links(attacker: httpx.Client, canary: Canary) -> None:
    # The node writes /etc/ld.so.preload into gVisor sandboxes of glibc images when they boot from a disk.
    s = create(attacker, template="debian", runtime="gvisor")["sandbox_id"]
    try:
        sh(attacker, s, f"rm -f /etc/ld.so.preload && ln -s {canary.dir}/ld.so.preload /etc/ld.so.preload")
        ck = attacker.post(f"/sandboxes/{s}/checkpoints", json={"name": "linked"}).json()["checkpoint_id"]
        kid = attacker.post(f"/checkpoints/{ck}/fork", json={"count": 1}).json()["sandboxes"][0]["sandbox_id"]
        out, err, code = sh(attacker, kid, "ls -l /etc/hostname && cat /etc/ld.so.preload")
        assert code == 0 and "statx-fix" in out, (out, err)  # the fork got the preload in a file of its own
        r = attacker.post(f"/sandboxes/{s}/restore", json={"checkpoint_id": ck})
        assert r.status_code == 200, r.text
    finally:
        attacker.delete(f"/sandboxes/{s}")


def test_build_steps_and_contexts_cannot_touch_the_hosts_files(
    attacker: httpx.Client, admin: httpx.Client, canary: Canary
) -> None:
    d = str(canary.dir)
    name = f"sec-build-{canary.token[:8]}"
    # A RUN step turns /etc into a link to the host's directory: saving its layer must not follow it.
    dockerfile = f"FROM busybox\nRUN rm -rf /etc && ln -s {d} /etc\n".encode()
    r = attacker.post("/templates/build", params={"name": name}, content=_tar([("Dockerfile", dockerfile)]))
    assert r.status_code == 200 and '"type":"template"' in r.text.replace(" ", ""), r.text
    admin.delete(f"/templates/{name}")
    # A context whose entries or links lead out of it is refused before any step runs.
    for context in (
        _tar([("Dockerfile", b"FROM busybox\nCOPY leak /leak\n"), ("leak", str(canary.secret))]),
        _tar([("Dockerfile", b"FROM busybox\n"), (f"../../..{d}/pwned-8", b"x")]),
    ):
        r = attacker.post("/templates/build", params={"name": name + "-2"}, content=context)
        assert r.status_code == 400 and canary.token not in r.text, r.text
    r = attacker.post(
        "/templates/build",
        params={"name": name + "-3", "dockerfile": f"../../../..{canary.secret}"},
        content=_tar([("Dockerfile", b"FROM busybox\n")]),
    )
    assert r.status_code == 400 and canary.token not in r.text, r.text
