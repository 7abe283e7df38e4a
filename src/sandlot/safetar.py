"""Extract a tar under one directory with nothing landing outside it, on every Python 3.11.

Debian 12 ships Python 3.11.2, older than tarfile's extraction filters (3.11.4):
there the same checks as the "data" filter are made by hand, member by member.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from sandlot import errors

__all__ = ["extract_all"]


def extract_all(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract every member under `dest`: no absolute paths, no escape through `..` or a link,
    no set-id bits; device nodes are refused (filter) or skipped (by hand).

    Raises:
        InvalidArgumentError: an entry would land outside `dest` (it names the entry).
    """
    dest.mkdir(parents=True, exist_ok=True)
    if hasattr(tarfile, "data_filter"):
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as exc:
            raise errors.InvalidArgumentError(f"tar entry escapes {dest}: {exc}") from None
        return
    root = dest.resolve()
    for member in tar:
        target = (dest / member.name).resolve()
        if member.name.startswith("/") or (target != root and root not in target.parents):
            raise errors.InvalidArgumentError(f"tar entry escapes {dest}: {member.name}", path=member.name)
        if member.issym() or member.islnk():
            link = (target.parent / member.linkname) if member.issym() else (dest / member.linkname)
            resolved = link.resolve()
            if member.linkname.startswith("/") or (resolved != root and root not in resolved.parents):
                raise errors.InvalidArgumentError(f"tar link escapes {dest}: {member.name}", path=member.name)
        if member.isdev():
            continue
        member.mode &= 0o755  # as the data filter: no set-id bits, no group/other write
        tar.extract(member, dest, set_attrs=not member.issym())
