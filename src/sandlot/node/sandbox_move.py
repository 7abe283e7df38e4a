"""Move a hibernated sandbox to another node: its disk, streamed out of one node and into another.

A fleet's drain (api/fleet/moves.py) hibernates a sandbox, streams its disk
from the node being emptied (`export_disk`) through the replica into the node
placement chose (`import_disk`), switches the record, then kills the source's
copy. Until the record is switched the source's copy is the sandbox: an import
that fails (a broken stream, a node or replica killed midway, a bad stream)
leaves nothing on the destination, and the move can be tried again.

The stream ("sandlot-disk/2") carries the sandbox's disk and the disks of its
checkpoints, and only what each holds: a disk is a sparse ext4 file of the
sandbox's disk size (rootfs.py), so only its data extents (SEEK_DATA/SEEK_HOLE)
are sent:

    4 bytes   the header's length (big-endian)
    header    JSON {format, sandbox_id, spec, size, extents: [[offset, length], ...],
                    checkpoints: [{record, size, extents}, ...]}
    data      the sandbox disk's extents, in order; then each checkpoint's, in order
    32 bytes  SHA-256 of everything before it

("sandlot-disk/1", from a node before checkpoints moved, has no checkpoints.)

Memory does not move: the runtime's memory image names host paths and the
node's network (gVisor's netstack keeps its address, and each node has its own
subnet), so the sandbox wakes on the new node from its disk, its processes
started afresh; a checkpoint taken with memory arrives as a filesystem
checkpoint (same id and name). A moved checkpoint's disk no longer shares
blocks with the sandbox's. Both ends hold at most one chunk (1 MiB) in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandlot import errors
from sandlot.failpoints import afailpoint
from sandlot.node.checkpoints import CHECKPOINT_ID_RE, spec_from_dict, spec_to_dict, validate_name
from sandlot.node.fileclone import clone_file
from sandlot.node.sandbox import Sandbox
from sandlot.node.spec import SANDBOX_ID_RE, SandboxSpec

if TYPE_CHECKING:
    from sandlot.node.node import Node

__all__ = ["FORMAT", "FORMATS", "export_disk", "import_disk"]

FORMAT = "sandlot-disk/2"
#: the formats an import reads (/1: no checkpoints)
FORMATS = ("sandlot-disk/1", FORMAT)
CHUNK = 1 << 20
MAX_HEADER = 1 << 20
DIGEST = 32


def _extents(path: Path) -> list[tuple[int, int]]:
    """The (offset, length) of each run of data in a sparse file."""
    out: list[tuple[int, int]] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end - start))
            pos = end
    finally:
        os.close(fd)
    return out


async def export_disk(node: Node, sandbox_id: str) -> AsyncIterator[bytes]:
    """The disk of a hibernated sandbox as a "sandlot-disk/1" stream (checked and cloned before the
    first chunk: an error is raised here, not mid-stream). The sandbox stays as it is."""
    sbx = node.get(sandbox_id)
    clone = node.disks.sandboxes / f".{sandbox_id}.move"  # dot: swept by recovery if the node dies
    _check_movable(sbx)
    await node.clone_hibernated_disk(sbx, clone)
    clones = [clone]
    try:
        checkpoints = []
        for ck in node.checkpoints.list(sandbox_id):
            ck_clone = node.disks.sandboxes / f".{sandbox_id}.{ck.id}.move"
            await asyncio.to_thread(clone_file, ck.disk, ck_clone)
            clones.append(ck_clone)
            size, extents = ck_clone.stat().st_size, await asyncio.to_thread(_extents, ck_clone)
            checkpoints.append({"record": ck.record(), "size": size, "extents": extents})
        header = {
            "format": FORMAT,
            "sandbox_id": sandbox_id,
            "spec": spec_to_dict(sbx.spec),
            "size": clone.stat().st_size,
            "extents": await asyncio.to_thread(_extents, clone),
            "checkpoints": checkpoints,
        }
    except BaseException:
        for c in clones:
            c.unlink(missing_ok=True)
        raise
    return _send(clones, header)


def _check_movable(sbx: Sandbox) -> None:
    if sbx.spec.volumes:
        names = ", ".join(m.volume_id for m in sbx.spec.volumes)
        raise errors.SandboxStateError(
            f"sandbox {sbx.id} mounts volumes ({names}), which live on its node: it cannot move to another"
        )


async def _send(clones: list[Path], header: dict[str, Any]) -> AsyncIterator[bytes]:
    """The stream of `header` and the extents of `clones` (the sandbox's disk, then each checkpoint's)."""
    digest = hashlib.sha256()
    try:
        head = json.dumps(header).encode()
        for piece in (len(head).to_bytes(4, "big"), head):
            digest.update(piece)
            yield piece
        extents = [header["extents"], *(ck["extents"] for ck in header["checkpoints"])]
        for clone, runs in zip(clones, extents, strict=True):
            with open(clone, "rb") as f:
                for offset, length in runs:
                    f.seek(offset)
                    while length > 0:
                        chunk = await asyncio.to_thread(f.read, min(CHUNK, length))
                        if not chunk:
                            raise errors.InternalError(f"the disk copy {clone} ended early")
                        length -= len(chunk)
                        digest.update(chunk)
                        yield chunk
                        await afailpoint("node.move.sending", header["sandbox_id"])
        yield digest.digest()
    finally:
        for clone in clones:
            await asyncio.to_thread(clone.unlink, True)


class _Reader:
    """Exact reads from a stream of chunks of any size (holding at most one chunk)."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._it = aiter(chunks)
        self._buf = b""
        self.digest = hashlib.sha256()

    async def read(self, n: int, what: str, *, hashed: bool = True) -> AsyncIterator[bytes]:
        """`n` bytes, in pieces of at most CHUNK."""
        while n > 0:
            if not self._buf:
                try:
                    self._buf = await anext(self._it)
                except StopAsyncIteration:
                    raise errors.InvalidArgumentError(f"the disk stream ended early, in {what}") from None
                except errors.SandlotError:
                    raise
                except Exception as exc:  # the sender went away (a client disconnect, a reset)
                    raise errors.InvalidArgumentError(f"the disk stream broke in {what}: {exc!r}") from None
                continue
            piece, self._buf = self._buf[: min(n, CHUNK)], self._buf[min(n, CHUNK) :]
            n -= len(piece)
            if hashed:
                self.digest.update(piece)
            yield piece

    async def exactly(self, n: int, what: str, *, hashed: bool = True) -> bytes:
        return b"".join([p async for p in self.read(n, what, hashed=hashed)])

    async def at_end(self) -> bool:
        if self._buf:
            return False
        async for chunk in self._it:
            if chunk:
                return False
        return True


def _bad(message: str) -> errors.InvalidArgumentError:
    return errors.InvalidArgumentError(f"not a sandlot disk stream: {message}")


@dataclass
class _Disk:
    """One disk of a stream: its size and data extents, and (a checkpoint's) its record."""

    size: int
    extents: list[tuple[int, int]]
    record: dict[str, Any] | None = None

    @property
    def data(self) -> int:
        return sum(n for _, n in self.extents)


def _parse_disk(what: str, size: Any, raw_extents: Any) -> _Disk:
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise _bad(f"{what}'s size {size!r} is not a positive integer")
    if not isinstance(raw_extents, list):
        raise _bad(f"{what}'s extents are not a list")
    extents, pos = [], 0
    for e in raw_extents:
        if not (isinstance(e, list) and len(e) == 2 and all(isinstance(v, int) for v in e)):
            raise _bad(f"an extent {e!r} of {what} is not [offset, length]")
        offset, length = e
        if offset < pos or length <= 0 or offset + length > size:
            raise _bad(f"the extent {e!r} of {what} overlaps another or lies outside the {size}-byte disk")
        extents.append((offset, length))
        pos = offset + length
    return _Disk(size, extents)


def _parse_header(raw: bytes, sandbox_id: str) -> tuple[dict[str, Any], list[_Disk]]:
    """The header, and the disks the stream carries: the sandbox's first, then its checkpoints'."""
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise _bad(f"its header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") not in FORMATS:
        raise _bad(f"its header names no format {FORMAT!r}")
    if header.get("sandbox_id") != sandbox_id:
        raise _bad(f"it holds sandbox {header.get('sandbox_id')!r}, not {sandbox_id}")
    disks = [_parse_disk("the disk", header.get("size"), header.get("extents") or [])]
    checkpoints = header.get("checkpoints") or []
    if not isinstance(checkpoints, list):
        raise _bad("its checkpoints are not a list")
    for ck in checkpoints:
        record = ck.get("record") if isinstance(ck, dict) else None
        if not isinstance(record, dict) or record.get("sandbox_id") != sandbox_id:
            raise _bad(f"a checkpoint {str(ck)[:200]} is not one of sandbox {sandbox_id}")
        ck_id = record.get("id")
        if not isinstance(ck_id, str) or not CHECKPOINT_ID_RE.match(ck_id):
            raise _bad(f"{ck_id!r} is not a checkpoint id")
        try:
            validate_name(record["name"])
            float(record["created_at"])
            spec_from_dict(record["spec"])
        except (errors.InvalidArgumentError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise _bad(f"the record of checkpoint {ck_id} is invalid ({exc})") from None
        disk = _parse_disk(f"checkpoint {ck_id}", ck.get("size"), ck.get("extents"))
        disk.record = record
        disks.append(disk)
    if len({d.record["id"] for d in disks[1:] if d.record}) != len(disks) - 1:
        raise _bad("it names a checkpoint twice")
    return header, disks


async def import_disk(node: Node, sandbox_id: str, chunks: AsyncIterable[bytes]) -> Sandbox:
    """Make sandbox `sandbox_id` here, hibernated, on the disk a "sandlot-disk" stream carries, with
    the checkpoints it carries (same ids and names).

    The disks are received to files beside the live ones and checked whole (the
    digest) before a sandbox is made of them; any failure removes them (and a
    sandbox or checkpoints already made of them), so bad input or a broken
    stream leaves nothing here. `wake` boots the sandbox afresh.
    """
    if not SANDBOX_ID_RE.match(sandbox_id):
        raise errors.InvalidArgumentError(f"not a sandbox id: {sandbox_id!r}", field="sandbox_id")
    if node.knows(sandbox_id) or (node.sandboxes_dir / sandbox_id).exists():
        raise errors.ConflictError(f"node holds sandbox {sandbox_id} already")
    await asyncio.to_thread(node.disks.ensure)
    await asyncio.to_thread(node.disks.check_room, f"receive the disk of sandbox {sandbox_id}")
    received = node.disks.sandboxes / f".{sandbox_id}.import"  # dot: swept by recovery if the node dies
    files = [received]
    try:
        spec, checkpoints = await _receive(node, sandbox_id, _Reader(chunks), files)
        await afailpoint("node.move.received", sandbox_id)
        sbx = await node.start_hibernated(spec, sandbox_id, received)
        try:
            for record, disk in checkpoints:
                await asyncio.to_thread(node.checkpoints.adopt, record, disk)
        except BaseException:
            for record, _ in checkpoints:
                with contextlib.suppress(errors.CheckpointNotFoundError):
                    node.checkpoints.delete(record["id"])
            with contextlib.suppress(errors.SandlotError):
                await node.kill(sandbox_id)
            raise
        return sbx
    finally:
        for f in files:
            await asyncio.to_thread(f.unlink, True)


async def _receive(
    node: Node, sandbox_id: str, reader: _Reader, files: list[Path]
) -> tuple[SandboxSpec, list[tuple[dict[str, Any], Path]]]:
    """Receive the stream into `files[0]` (the sandbox's disk) and files beside it (its checkpoints',
    appended to `files`); the spec, and each checkpoint's record and received disk."""
    length = int.from_bytes(await reader.exactly(4, "the header's length"), "big")
    if not 0 < length <= MAX_HEADER:
        raise _bad(f"a header of {length} bytes")
    header, disks = _parse_header(await reader.exactly(length, "the header"), sandbox_id)
    try:
        spec = spec_from_dict(header.get("spec") or {}).validate()
    except (TypeError, ValueError, KeyError) as exc:
        raise _bad(f"its sandbox spec is invalid ({exc})") from None
    if spec.volumes:
        raise _bad("its sandbox mounts volumes, which cannot move")
    for d in disks:
        if d.size > spec.limits.disk_mb << 20:
            raise _bad(f"a {d.size}-byte disk for a sandbox of {spec.limits.disk_mb} MiB")
    data = sum(d.data for d in disks)
    free = await asyncio.to_thread(lambda: (st := os.statvfs(node.disks.root)).f_bavail * st.f_frsize)
    if data > free:
        raise errors.NoSpaceError(
            f"cannot receive sandbox {sandbox_id}: its disk and checkpoints hold {data >> 20} MiB and the node's "
            f"disk store has {free >> 20} MiB free"
        )
    checkpoints = []
    for i, d in enumerate(disks):
        if d.record is not None:
            files.append(files[0].with_name(f".{sandbox_id}.{d.record['id']}.import"))
            checkpoints.append((d.record, files[-1]))
        what = "the disk" if d.record is None else f"checkpoint {d.record['id']}"
        with open(files[i], "wb") as f:
            f.truncate(d.size)  # sparse: the holes stay holes
            for offset, n in d.extents:
                f.seek(offset)
                async for piece in reader.read(n, f"the extent at {offset} of {what}"):
                    await asyncio.to_thread(f.write, piece)
    expected = reader.digest.digest()
    if await reader.exactly(DIGEST, "the digest", hashed=False) != expected:
        raise _bad("its digest does not match what it carried (corrupted in transit)")
    if not await reader.at_end():
        raise _bad("bytes follow its digest")
    return spec, checkpoints
