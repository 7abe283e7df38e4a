"""Copy-on-write file clones (FICLONE) and filesystem freezes (FIFREEZE), the two
host primitives behind checkpoints (see diskstore.py for why they are cheap), and
the shutdown of a filesystem whose disk is thrown away (a restore's old disk)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from sandlot import errors
from sandlot.failpoints import failpoint

__all__ = ["clone_file", "discard_writes", "frozen_fs", "thaw"]

FICLONE = 0x40049409
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
#: EXT4_IOC_SHUTDOWN (_IOR('X', 125, __u32)) and its flag "write nothing more, not even the log"
EXT4_IOC_SHUTDOWN = 0x8004587D
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def clone_file(src: Path, dest: Path) -> None:
    """Make `dest` a copy of `src` that shares its blocks (copy-on-write)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    s = os.open(src, os.O_RDONLY)
    try:
        d = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.ioctl(d, FICLONE, s)
        except OSError as exc:
            os.close(d)
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise errors.NoSpaceError(
                    f"the node's disk store is full: cannot copy {src.name}; delete checkpoints or sandboxes"
                ) from None
            raise errors.InternalError(f"cloning {src} to {dest}: {exc.strerror}") from None
        os.close(d)
    finally:
        os.close(s)
    os.rename(tmp, dest)


@contextlib.contextmanager
def frozen_fs(mountpoint: Path) -> Iterator[None]:
    """Flush and freeze the filesystem mounted at `mountpoint` (FIFREEZE) for a consistent copy."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
        try:
            failpoint("node.checkpoint.frozen", mountpoint.parent.name)
            yield
        finally:
            fcntl.ioctl(fd, FITHAW, 0)
    finally:
        os.close(fd)


def thaw(mountpoint: Path) -> bool:
    """Undo a FIFREEZE that a process killed mid-copy never undid; True if the filesystem was frozen."""
    try:
        fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError:  # EINVAL: it was not frozen
        return False
    finally:
        os.close(fd)
    return True


def discard_writes(mountpoint: Path) -> None:
    """Shut down the ext4 filesystem at `mountpoint` so that its unmount writes nothing back.

    Only for a disk about to be deleted: what its users wrote and the kernel
    had not yet flushed is dropped, not written into a file nobody will read.
    Best effort: a filesystem that cannot be shut down is just unmounted as usual.
    """
    try:
        fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)
