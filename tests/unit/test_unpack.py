"""Unpacking layer tarballs: escapes rejected, whiteouts and opaque dirs as overlayfs wants them."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from sandlot.node.oci.unpack import LayerError, unpack_layer


def _tar(path: Path, entries: list[tuple[str, str, str]]) -> Path:
    """entries: (name, type, data-or-linkname) with type f, d, s (symlink), h (hard link)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "d" else 0o644
            if kind == "d":
                info.type = tarfile.DIRTYPE
            elif kind == "s":
                info.type, info.linkname = tarfile.SYMTYPE, data
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, data
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data.encode()) if kind == "f" else None)
    return path


@pytest.mark.parametrize(
    "entries",
    [
        [("../evil", "f", "x")],
        [("a/../../evil", "f", "x")],
        [("etc", "s", "/etc"), ("etc/passwd", "f", "x")],  # through an absolute symlink
        [("up", "s", "../../.."), ("up/evil", "f", "x")],  # through a relative one
        [("link", "h", "../outside")],
    ],
)
def test_escaping_layers_are_rejected(tmp_path: Path, entries: list[tuple[str, str, str]]) -> None:
    dest = tmp_path / "fs"
    dest.mkdir()
    with pytest.raises(LayerError):
        unpack_layer(_tar(tmp_path / "l.tar.gz", entries), dest, "test")
    assert not (tmp_path / "evil").exists() and not Path("/etc/passwd").read_text().startswith("x")


def test_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("whiteouts are character devices and trusted xattrs: root only")
    dest = tmp_path / "fs"
    dest.mkdir()
    blob = _tar(tmp_path / "l.tar.gz", [("d/.wh.gone", "f", ""), ("o/.wh..wh..opq", "f", ""), ("o/mine", "f", "m")])
    stats = unpack_layer(blob, dest, "test")
    st = os.lstat(dest / "d/gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(dest / "o", "trusted.overlay.opaque") == b"y"
    assert (dest / "o/mine").read_text() == "m" and stats.whiteouts == 2
    assert stats.diff_id.startswith("sha256:")


def test_not_a_tar_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "fs").mkdir()
    (tmp_path / "blob").write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    with pytest.raises(LayerError, match="not a valid tar"):
        unpack_layer(tmp_path / "blob", tmp_path / "fs", "test")
