"""A hibernated sandbox's disk, streamed out of a node and into one (node/sandbox_move.py), on real gVisor.

What a fleet's drain ships between nodes, here out of and back into one node: the
stream carries the files and the spec, the sandbox made of it is hibernated and
wakes from its disk with its files; a stream cut short or corrupted is refused
and leaves nothing behind (no received disk, no sandbox, no directory).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandlot import errors
from sandlot.node.local import LocalNode
from sandlot.node.protocol import SandboxSpec

pytestmark = pytest.mark.integration


async def _chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_a_disk_moves_whole_or_not_at_all(node: Any, aio: Any, busybox_image: Any) -> None:
    """The disk and the sandbox's checkpoints (same ids and names; one taken with memory arrives
    as a filesystem checkpoint) move in one stream, whole or not at all."""
    local = LocalNode(node)
    sid = aio(local.create(SandboxSpec(image="busybox", env={"WHO": "moved"}))).sandbox_id
    try:
        assert aio(node.get(sid).run("mkdir -p /work && echo first > /work/f")).exit_code == 0
        first = aio(local.checkpoint(sid, "first"))
        assert aio(node.get(sid).run("echo second > /work/f")).exit_code == 0
        second = aio(local.checkpoint(sid, "second", memory=True))
        assert aio(node.get(sid).run("echo kept > /work/f")).exit_code == 0
        with pytest.raises(errors.SandboxStateError, match="only a hibernated one moves"):
            aio(local.export_disk(sid))
        aio(local.hibernate(sid, memory=False))

        async def take() -> bytes:
            return b"".join([c async for c in await local.export_disk(sid)])

        stream = aio(take())
        assert len(stream) < 64 << 20  # the extents of 1 GiB sparse disks, not the disks
        assert not list(node.disks.sandboxes.glob(".*")), "the export's clones are removed once sent"
        with pytest.raises(errors.ConflictError):
            aio(local.import_disk(sid, _chunks(stream)))
    finally:
        aio(local.kill(sid))  # the source's copy goes: the stream is all that is left of it
    for ck in (first, second):  # and its checkpoints (on another node, the fleet deletes them once moved)
        aio(local.delete_checkpoint(ck.checkpoint_id))
    corrupted = bytearray(stream)
    corrupted[-100] ^= 0xFF  # in the last checkpoint's data
    for bad, why in ((stream[: len(stream) // 2], "ended early"), (stream[:-200], "ended early"),
                     (bytes(corrupted), "digest"), (b"\x00\x00\x00\x02{}" + stream, "format"),
                     (stream + b"x", "follow")):  # fmt: skip
        with pytest.raises(errors.InvalidArgumentError, match=why):
            aio(local.import_disk(sid, _chunks(bad)))
        assert not node.knows(sid) and not (node.sandboxes_dir / sid).exists()
        assert not list(node.disks.sandboxes.glob(f"*{sid}*")), "nothing received is left"
        assert aio(local.list_checkpoints(sid)) == [], "no checkpoint is made of a bad stream"
    status = aio(local.import_disk(sid, _chunks(stream)))
    try:
        assert (status.sandbox_id, status.state) == (sid, "hibernated")
        got = {c.name: c for c in aio(local.list_checkpoints(sid))}
        assert {n: (c.checkpoint_id, c.memory) for n, c in got.items()} == {
            "first": (first.checkpoint_id, False),
            "second": (second.checkpoint_id, False),  # its memory image stayed behind
        }
        aio(local.wake(sid))
        assert aio(node.get(sid).run("cat /work/f; echo $WHO")).stdout == "kept\nmoved\n"
        aio(local.restore(sid, first.checkpoint_id))
        assert aio(node.get(sid).run("cat /work/f")).stdout == "first\n"
        aio(local.restore(sid, second.checkpoint_id))
        assert aio(node.get(sid).run("cat /work/f")).stdout == "second\n"
    finally:
        aio(local.kill(sid))
        for ck in aio(local.list_checkpoints(sid)):
            aio(local.delete_checkpoint(ck.checkpoint_id))
