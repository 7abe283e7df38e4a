"""The dashboard's tar encoder (js/tar.js, a build's context), run by node and read back by Python's tarfile."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from sandlot.api.ui import STATIC

NODE = shutil.which("node")


def run_tar(tmp_path: Path, files: list[dict[str, str]]) -> subprocess.CompletedProcess[bytes]:
    """node builds the archive of `files` with tar.js and writes it on stdout."""
    if NODE is None:
        pytest.skip("needs node")
    module = tmp_path / "tar.mjs"  # .mjs: an ES module whatever node's default
    shutil.copy(STATIC / "js" / "tar.js", module)
    script = (
        f"import {{ tar }} from {json.dumps(module.as_uri())};\n"
        f"const blob = tar({json.dumps(files)});\n"
        "process.stdout.write(Buffer.from(await blob.arrayBuffer()));\n"
    )
    return subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, timeout=60)


def test_tarfile_reads_what_it_writes(tmp_path: Path) -> None:
    long = "d/" + "n" * 98  # 100 bytes: the most a name holds
    files = [
        {"name": "Dockerfile", "data": "FROM busybox\nRUN true\n"},
        {"name": "é.txt", "data": "ü" * 300},  # 600 bytes of UTF-8: a second block, padded
        {"name": "empty", "data": ""},
        {"name": long, "data": "x" * 512},  # exactly a block: no padding
    ]
    res = run_tar(tmp_path, files)
    assert res.returncode == 0, res.stderr.decode()
    raw = res.stdout
    assert len(raw) % 512 == 0 and raw[-1024:] == bytes(1024)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as t:
        members = t.getmembers()
        assert [m.name for m in members] == [f["name"] for f in files]
        for m, f in zip(members, files, strict=True):
            assert m.isreg() and m.mode == 0o644 and m.uid == 0
            got = t.extractfile(m)
            assert got is not None and got.read() == f["data"].encode()
        assert members[0].chksum == tarfile.calc_chksums(raw[:512])[0]
    assert raw[257:263] == b"ustar\0"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("n" * 101, "at most 100 bytes"),
        ("é" * 51, "at most 100 bytes"),  # 102 bytes of UTF-8
        ("/etc/passwd", "relative path"),
        ("a/../b", "relative path"),
        ("", "needs a name"),
    ],
)
def test_bad_names_refused(tmp_path: Path, name: str, says: str) -> None:
    res = run_tar(tmp_path, [{"name": name, "data": "x"}])
    assert res.returncode != 0 and says in res.stderr.decode()


def test_a_name_twice_refused(tmp_path: Path) -> None:
    res = run_tar(tmp_path, [{"name": "Dockerfile", "data": "a"}, {"name": "Dockerfile", "data": "b"}])
    assert res.returncode != 0 and "twice" in res.stderr.decode()
