"""Unpack one layer tarball into its own directory, ready to be an overlayfs lower.

Each layer stays a separate tree (the overlay stacks them), so OCI whiteouts
become overlayfs ones, exactly as the image spec maps them:

- `dir/.wh.name` (a whiteout) → a 0/0 character device `dir/name`, which hides
  `name` of the layers below;
- `dir/.wh..wh..opq` (an opaque directory) → the xattr `trusted.overlay.opaque=y`
  on `dir`, which hides everything the layers below have in it (this layer's
  own entries stay).

Safety: entry names are normalised and must stay inside the layer (`../x`
is rejected); no path is ever resolved through a symlink while unpacking (every
parent is checked with lstat), so a symlink in the layer cannot redirect a
later entry out of it; hard links must point inside the layer. Device nodes are
skipped (a sandbox gets its own /dev), ownership, modes, mtimes and xattrs are
kept, and xattrs of overlayfs itself (`trusted.overlay.*`) are never taken
from a tarball. Input can be gzip, zstd or plain tar (told by magic bytes).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import zstandard

from sandlot import errors

__all__ = ["LayerError", "UnpackStats", "unpack_layer"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_COPY = 1 << 20


class LayerError(errors.ImageCorruptError):
    """A layer that is malformed or tries to write outside itself."""


@dataclass
class UnpackStats:
    files: int = 0
    whiteouts: int = 0
    skipped_devices: int = 0
    diff_id: str = ""
    size: int = 0


class _Hashing(io.RawIOBase):
    """A read-only stream that hashes (and counts) what passes through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.h = hashlib.sha256()
        self.n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.h.update(data)
        self.n += n
        return n


def _decompressed(f: BinaryIO) -> Any:
    magic = f.read(4)
    f.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f, mode="rb")
    if magic == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    return f


def _clean(name: str, what: str) -> str:
    rel = posixpath.normpath(name.lstrip("/"))
    if rel == ".." or rel.startswith("../"):
        raise LayerError(f"layer {what} has an entry that escapes the image: {name!r}")
    if "\0" in name:
        raise LayerError(f"layer {what} has an entry with a NUL in its name")
    return "" if rel == "." else rel


class _Tree:
    """The layer's directory; every path below it is reached without following symlinks."""

    def __init__(self, root: Path, what: str) -> None:
        self.root = str(root)
        self.what = what
        self._dirs: set[str] = {""}  # relative dirs known to be real directories

    def abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def ensure_dir(self, rel: str) -> None:
        if rel in self._dirs:
            return
        parent = posixpath.dirname(rel)
        self.ensure_dir(parent)
        path = self.abs(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
        else:
            if stat.S_ISLNK(st.st_mode):
                raise LayerError(f"layer {self.what} writes through the symlink {rel!r}: rejected")
            if not stat.S_ISDIR(st.st_mode):
                raise LayerError(f"layer {self.what} uses the non-directory {rel!r} as a directory")
        self._dirs.add(rel)

    def clear(self, rel: str, keep_dir: bool = False) -> None:
        """Remove what is at `rel` in this layer (a dir too, unless `keep_dir` and it is one)."""
        path = self.abs(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(path)
            prefix = rel + "/"
            self._dirs = {d for d in self._dirs if d != rel and not d.startswith(prefix)}
        else:
            os.unlink(path)


def _set_xattrs(path: str, member: tarfile.TarInfo) -> None:
    for key, value in member.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        name = key[len("SCHILY.xattr.") :]
        if name.startswith("trusted.overlay."):
            continue  # only this unpacker says what is opaque or whited out
        try:
            os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
        except OSError:
            pass  # an xattr namespace this filesystem lacks: the file is still right


def _attrs(path: str, m: tarfile.TarInfo, is_link: bool) -> None:
    os.chown(path, m.uid, m.gid, follow_symlinks=False)
    if not is_link:
        os.chmod(path, m.mode & 0o7777)  # after chown, which clears set-id bits
    _set_xattrs(path, m)
    try:
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
    except (OSError, OverflowError):
        pass


def _apply(
    tar: tarfile.TarFile, m: tarfile.TarInfo, tree: _Tree, stats: UnpackStats, dirs: list[tuple[str, tarfile.TarInfo]]
) -> None:
    rel = _clean(m.name, tree.what)
    if not rel:  # the layer's root: its attributes are the image's "/"
        return
    parent, base = posixpath.split(rel)
    if base == OPAQUE:
        tree.ensure_dir(parent)
        os.setxattr(tree.abs(parent), "trusted.overlay.opaque", b"y", follow_symlinks=False)
        stats.whiteouts += 1
        return
    if base.startswith(WHITEOUT):
        hidden = posixpath.join(parent, base[len(WHITEOUT) :])
        tree.ensure_dir(parent)
        tree.clear(hidden)
        os.mknod(tree.abs(hidden), stat.S_IFCHR | 0o000, os.makedev(0, 0))
        stats.whiteouts += 1
        return
    tree.ensure_dir(parent)
    path = tree.abs(rel)
    if m.isdir():
        tree.clear(rel, keep_dir=True)
        if not os.path.isdir(path):
            os.mkdir(path, 0o700)
        tree._dirs.add(rel)
        dirs.append((path, m))
        return
    tree.clear(rel)
    if m.isreg():
        src = tar.extractfile(m)
        assert src is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, _COPY)
        stats.size += m.size
    elif m.issym():
        os.symlink(m.linkname, path)
    elif m.islnk():
        target = _clean(m.linkname, tree.what)
        tree.ensure_dir(posixpath.dirname(target))
        tpath = tree.abs(target)
        st = os.lstat(tpath) if os.path.lexists(tpath) else None
        if st is None or stat.S_ISDIR(st.st_mode):
            raise LayerError(f"layer {tree.what} hard-links {rel!r} to {m.linkname!r}, which it does not hold")
        os.link(tpath, path, follow_symlinks=False)
        stats.files += 1
        return  # a hard link shares its target's inode and attributes
    elif m.isfifo():
        os.mkfifo(path, 0o600)
    elif m.ischr() or m.isblk():
        stats.skipped_devices += 1
        return
    else:
        return  # other types (sparse files are regular in tarfile; nothing else is meaningful)
    stats.files += 1
    _attrs(path, m, m.issym())


def unpack_layer(blob: Path, dest: Path, what: str) -> UnpackStats:
    """Unpack the layer blob (gzip, zstd or plain tar) into the empty directory `dest`."""
    stats = UnpackStats()
    tree = _Tree(dest, what)
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    with open(blob, "rb") as raw:
        hashing = _Hashing(_decompressed(raw))
        stream = io.BufferedReader(hashing, _COPY)
        try:
            with tarfile.open(fileobj=stream, mode="r|", errorlevel=1) as tar:
                for m in tar:
                    _apply(tar, m, tree, stats, dirs)
            while stream.read(_COPY):  # tar's trailing padding belongs to the diff id
                pass
        except (tarfile.TarError, EOFError, ValueError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError) as exc:
            raise LayerError(f"layer {what} is not a valid tar archive: {exc}") from None
    for path, m in reversed(dirs):  # children first: their creation changed the parents' mtimes
        _attrs(path, m, False)
    stats.diff_id = "sha256:" + hashing.h.hexdigest()
    return stats
