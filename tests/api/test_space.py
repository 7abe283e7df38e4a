"""A full disk store, or a full filesystem under the data directory: clear errors, nothing half made.

The data directory lives on a small loop-mounted ext4 filesystem of the test's
own, with a disk store smaller than it. Filling either one (a file of the
test's, standing for other tenants' data) makes creates, checkpoints, forks,
restores and memory saves fail with a 507 that says which one is full, leaves
no sandbox, disk or checkpoint half made, and keeps running sandboxes running;
freeing the space makes everything work again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.crash import admin_client, ok, run
from tests.api.harness import Server
from tests.leftovers import assert_clean

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

FS_MB = 1024
STORE_MB = 320


@pytest.fixture(scope="module")
def small_fs() -> Iterator[Path]:
    """A 1 GiB ext4 filesystem (no blocks reserved for root) mounted for the data directory."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts)")
    base = Path(tempfile.mkdtemp(prefix="sandlot-space-", dir="/var/tmp"))
    image, mnt = base / "fs.img", base / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(FS_MB << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        with open("/proc/self/mountinfo") as f:
            still = any(str(mnt) in line for line in f)
        if not still:  # else keep it: removing files under a live mount would only hide the leak
            shutil.rmtree(base, ignore_errors=True)


def _fill(path: Path, leave: int) -> None:
    """Make `path` (a new file) take all the free space of its filesystem but `leave` bytes."""
    st = os.statvfs(path.parent)
    size = st.f_bavail * st.f_frsize - leave
    subprocess.run(["fallocate", "-l", str(max(size, 4096)), str(path)], check=True)


def _no_space(r: httpx.Response, which: str) -> None:
    assert r.status_code == 507, f"{r.status_code} {r.text}"
    body = r.json()
    assert body["code"] == "no_space" and which in body["message"], body


def test_full_disk_store_and_full_data_dir(small_fs: Path) -> None:
    server = Server(small_fs / "data", extra=("--disk-store-mb", str(STORE_MB)))
    server.start()
    try:
        with admin_client(server) as c:
            sid = ok(c.post("/sandboxes", json={"disk_mb": 256, "timeout": 3600}), 201)["sandbox_id"]
            assert run(c, sid, "echo kept > /root/f") == (0, "")
            ck = ok(c.post(f"/sandboxes/{sid}/checkpoints", json={"name": "c"}), 201)["checkpoint_id"]
            before = {p.name for p in (server.data_dir / "sandboxes").iterdir()}

            def refused_everywhere(which: str) -> None:
                _no_space(c.post("/sandboxes", json={}), which)
                _no_space(c.post(f"/sandboxes/{sid}/checkpoints", json={"name": "d"}), which)
                _no_space(c.post(f"/sandboxes/{sid}/checkpoints", json={"name": "d", "memory": True}), which)
                _no_space(c.post(f"/checkpoints/{ck}/fork", json={"count": 1}), which)
                _no_space(c.post(f"/sandboxes/{sid}/restore", json={"checkpoint_id": ck}), which)
                # Nothing half made, and the sandbox runs on as it was.
                assert {p.name for p in (server.data_dir / "sandboxes").iterdir()} == before
                assert [k["name"] for k in ok(c.get(f"/sandboxes/{sid}/checkpoints"))["checkpoints"]] == ["c"]
                assert ok(c.get(f"/sandboxes/{sid}"))["state"] == "running"
                assert run(c, sid, "cat /root/f") == (0, "kept\n")

            # The disk store full (its filesystem holds other data than our sandboxes').
            filler = server.data_dir / "disks" / "filler"
            _fill(filler, 8 << 20)
            refused_everywhere("disk store is full")
            # A pause with memory writes to the data directory, not the store: it still works.
            ok(c.post(f"/sandboxes/{sid}/pause", json={"memory": True}))
            ok(c.post(f"/sandboxes/{sid}/resume"))
            filler.unlink()
            os.sync()  # btrfs frees the blocks at its next commit
            # The filesystem under the data directory full: the store's backing file cannot grow,
            # and a memory image has nowhere to go.
            filler = small_fs / "filler"
            _fill(filler, 8 << 20)
            refused_everywhere(f"data directory {server.data_dir} is full")
            _no_space(c.post(f"/sandboxes/{sid}/pause", json={"memory": True}), str(server.data_dir))
            assert run(c, sid, "cat /root/f") == (0, "kept\n")
            filler.unlink()
            # Space again: everything works.
            other = ok(c.post("/sandboxes", json={}), 201)["sandbox_id"]
            ok(c.post(f"/sandboxes/{sid}/pause", json={"memory": True}))
            ok(c.post(f"/sandboxes/{sid}/resume"))
            ok(c.post(f"/sandboxes/{sid}/restore", json={"checkpoint_id": ck}))
            assert run(c, sid, "cat /root/f") == (0, "kept\n")
            assert_clean(server.data_dir, live={sid, other})
    finally:
        server.stop()
    assert_clean(server.data_dir)
