"""The initramfs format: "newc" cpio archives, written from memory.

The kernel unpacks several archives concatenated into one initramfs, so a
sandbox's own files are a small archive appended to the shared one.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

__all__ = ["Entry", "archive", "chardev", "directory", "file"]


@dataclass(frozen=True)
class Entry:
    """One member: a regular file (data), a directory, a symlink (data is the target) or a device."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _member(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> bytes:
    encoded = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
    header = b"070701" + b"".join(b"%08x" % f for f in fields)
    return header + encoded + _pad(len(header) + len(encoded)) + data + _pad(len(data))


def archive(entries: list[Entry]) -> bytes:
    """A complete archive (with its trailer) of `entries`, owned by root, in order."""
    out = [_member(i + 1, e.name.lstrip("/"), e.mode, e.data, e.rdev) for i, e in enumerate(entries)]
    out.append(_member(0, "TRAILER!!!", 0, b"", (0, 0)))
    return b"".join(out)


def directory(name: str) -> Entry:
    return Entry(name, stat.S_IFDIR | 0o755)


def file(name: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | perm, data)


def chardev(name: str, major: int, minor: int) -> Entry:
    return Entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))
