"""E2B's file metadata where the sandbox cannot keep it: on the host's copy of the file.

E2B keeps user metadata of a file in its `user.e2b.*` extended attributes; so does the
agent, where the sandbox's kernel holds xattrs (crun, and gVisor's own tmpfs such as
/tmp). gVisor's 9p gofer, which serves the root filesystem and volumes, holds none
(this runsc answers EOPNOTSUPP), and the agent says so (`FileEntry.metadata_unsupported`).
Those files are the host's files, though: the sandbox's overlay root (`rootfs/`) or a
volume's directory. The node reads and writes the same attributes there, so they live
on the sandbox's disk like the file itself: renames keep them, checkpoints and forks
carry them, and nothing is stored beside.

Paths come from inside the sandbox: each is opened with openat2(RESOLVE_IN_ROOT) under
the directory that backs it, so no `..` or symlink leads outside, and the attributes
are read and written through that descriptor (never by path on the host).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import posixpath
from collections.abc import Iterator, Mapping
from pathlib import Path

from sandlot import errors

__all__ = ["PREFIX", "backing", "read", "replace"]

PREFIX = "user.e2b."

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_SYS_OPENAT2 = 437  # x86_64 and arm64
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def backing(path: str, rootfs: Path, volumes: Mapping[str, Path]) -> tuple[Path, str]:
    """The host directory that holds sandbox path `path` (absolute, normalized) and the path under it."""
    for mount in sorted(volumes, key=len, reverse=True):
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            return volumes[mount], posixpath.relpath(path, mount)
    return rootfs, path.lstrip("/") or "."


@contextlib.contextmanager
def _opened(root: Path, rel: str) -> Iterator[str]:
    """`root/rel` resolved inside `root`, as a /proc/self/fd path the xattr calls follow to that file."""
    dirfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        how = _OpenHow(os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
        fd = _libc.syscall(_SYS_OPENAT2, dirfd, rel.encode(), ctypes.byref(how), ctypes.sizeof(how))
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), rel)
    finally:
        os.close(dirfd)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def read(root: Path, rel: str) -> dict[str, str] | None:
    """The file's metadata (None: none, or the file is gone or is a symlink)."""
    try:
        with _opened(root, rel) as f:
            out = {}
            for name in os.listxattr(f):
                if name.startswith(PREFIX):
                    with contextlib.suppress(OSError):
                        out[name[len(PREFIX) :]] = os.getxattr(f, name).decode(errors="replace")
            return out or None
    except OSError:
        return None


def replace(root: Path, rel: str, metadata: Mapping[str, str]) -> None:
    """Make `metadata` the file's whole metadata ({} clears it)."""
    try:
        with _opened(root, rel) as f:
            for name in os.listxattr(f):
                if name.startswith(PREFIX) and name[len(PREFIX) :] not in metadata:
                    os.removexattr(f, name)
            for key, value in metadata.items():
                os.setxattr(f, PREFIX + key, value.encode())
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP):
            raise errors.SandboxFileNotFoundError(f"no such file: {rel}") from None
        if exc.errno in (errno.ENOSPC, errno.E2BIG, errno.ERANGE):
            raise errors.InvalidArgumentError("the file's metadata is too large for its filesystem") from None
        raise errors.InternalError(f"cannot write the metadata of {rel}: {exc.strerror}") from None
