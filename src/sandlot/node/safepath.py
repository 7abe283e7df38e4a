"""Host-side paths inside a sandbox's own files, never followed out of them.

The node writes a few files into a sandbox's root filesystem from the host
(the agent's mount point, the statx preload) and removes them from build
layers. Those trees are the sandbox's (or an image's) to shape: a symlink
there, followed on the host, would lead to the host's own files. Paths are
therefore walked component by component with lstat, and the last one is
opened with O_NOFOLLOW. A sandbox is never running while the node does this
(new sandboxes, forks and build layers), so nothing changes meanwhile.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["ensure_dir", "no_symlink_parents", "read_file", "remove", "write_file"]


def no_symlink_parents(root: Path, rel: str) -> Path | None:
    """`root/rel` when no component before the last is a symlink (or missing, or '..'); else None."""
    parts = [p for p in rel.split("/") if p and p != "."]
    if not parts or ".." in parts:
        return None
    cur = Path(root)
    for part in parts[:-1]:
        cur = cur / part
        if os.path.islink(cur) or not os.path.isdir(cur):
            return None
    return cur / parts[-1]


def ensure_dir(root: Path, rel: str, mode: int = 0o755) -> Path:
    """Make `root/rel` a real directory, replacing a symlink or file the sandbox put on the node's path."""
    cur = Path(root)
    for part in [p for p in rel.split("/") if p and p != "."]:
        if part == "..":
            raise ValueError(f"{rel!r} leaves {root}")
        cur = cur / part
        if os.path.islink(cur) or (os.path.lexists(cur) and not os.path.isdir(cur)):
            os.unlink(cur)
        if not os.path.lexists(cur):
            os.mkdir(cur, mode)
    return cur


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `path` (a symlink there is replaced, never followed)."""
    if os.path.islink(path):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def read_file(path: Path) -> str:
    """The text of `path`, or '' when it is missing or a symlink (never followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd) as f:
        return f.read()


def remove(root: Path, rel: str) -> None:
    """Remove `root/rel` (a file, link or tree) unless reaching it would follow a symlink."""
    path = no_symlink_parents(root, rel)
    if path is None or not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
