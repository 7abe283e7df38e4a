"""E2B's file metadata: what an upload's `X-Metadata-*` headers set, and where entries get it.

envd keeps a file's user metadata in its `user.e2b.*` extended attributes. Every upload
replaces the whole set (an upload without metadata clears it: overwriting a file keeps
its xattrs, so stale metadata would leak otherwise); `Stat`, `ListDir`, `Move` and
watch events with entries report it. The agent reads and writes the attributes where the
sandbox's kernel holds them; for files on gVisor's 9p (which holds none) the node does,
on the host's copy of the file (`sandlot.node.file_metadata`).

Validation is envd's: keys non-empty, at most 246 bytes (255 with the prefix); keys and
values printable US-ASCII; all of it at most 4096 bytes. Header names arrive lowercased,
and envd lowercases the keys too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.node.client import NodeClient

__all__ = ["HEADER_PREFIX", "complete", "from_headers", "store"]

HEADER_PREFIX = "x-metadata-"
XATTR_PREFIX = "user.e2b."
MAX_KEY = 255 - len(XATTR_PREFIX)
MAX_TOTAL = 4096


def _printable(label: str, text: str) -> None:
    bad = next((c for c in text if not " " <= c <= "~"), None)
    if bad is not None:
        raise errors.InvalidArgumentError(f"metadata {label} contains a character that is not printable ASCII: {bad!r}")


def from_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The metadata an upload sets ({} when it sends none: the file's metadata is then cleared)."""
    metadata: dict[str, str] = {}
    for name, value in headers:
        if name.lower().startswith(HEADER_PREFIX):
            metadata[name[len(HEADER_PREFIX) :].lower()] = value
    total = 0
    for key, value in metadata.items():
        if not key:
            raise errors.InvalidArgumentError("a metadata key must not be empty", field="metadata")
        if len(key.encode()) > MAX_KEY:
            raise errors.InvalidArgumentError(f"metadata key {key!r} is longer than {MAX_KEY} bytes", field="metadata")
        _printable("key", key)
        _printable(f"value of {key!r}", value)
        total += len(XATTR_PREFIX) + len(key) + len(value)
    if total > MAX_TOTAL:
        raise errors.InvalidArgumentError(f"the metadata takes {total} bytes, more than {MAX_TOTAL}", field="metadata")
    return metadata


async def complete(node: NodeClient, sandbox_id: str, entries: list[p.FileEntry]) -> list[p.FileEntry]:
    """Fill in the metadata of entries whose filesystem in the sandbox holds none (from the host)."""
    missing = [e.path for e in entries if e.metadata_unsupported]
    if missing:
        found = await node.file_metadata(sandbox_id, missing)
        for e in entries:
            if e.metadata_unsupported:
                e.metadata = found.get(e.path)
    return entries


async def store(node: NodeClient, sandbox_id: str, entry: p.FileEntry, metadata: Mapping[str, str]) -> p.FileEntry:
    """After an upload: make `metadata` the file's whole metadata where the agent could not."""
    if entry.metadata_unsupported:
        await node.set_file_metadata(sandbox_id, entry.path, dict(metadata))
        entry.metadata = dict(metadata) or None
    return entry
