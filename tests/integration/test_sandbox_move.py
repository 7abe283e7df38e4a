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
    local = LocalNode(node)
    sid = aio(local.create(SandboxSpec(image="busybox", env={"WHO": "moved"}))).sandbox_id
    try:
        assert aio(node.get(sid).run("mkdir -p /work && echo kept > /work/f")).exit_code == 0
        with pytest.raises(errors.SandboxStateError, match="only a hibernated one moves"):
            aio(local.export_disk(sid))
        aio(local.hibernate(sid, memory=False))

        async def take() -> bytes:
            return b"".join([c async for c in await local.export_disk(sid)])

        stream = aio(take())
        assert len(stream) < 64 << 20  # the extents of a 1 GiB sparse disk, not the disk
        assert not list(node.disks.sandboxes.glob(".*")), "the export's clone is removed once sent"
        with pytest.raises(errors.ConflictError):
            aio(local.import_disk(sid, _chunks(stream)))
    finally:
        aio(local.kill(sid))  # the source's copy goes: the stream is all that is left of it
    corrupted = bytearray(stream)
    corrupted[len(stream) // 2] ^= 0xFF
    for bad, why in ((stream[: len(stream) // 2], "ended early"), (bytes(corrupted), "digest"),
                     (b"\x00\x00\x00\x02{}" + stream, "format"), (stream + b"x", "follow")):  # fmt: skip
        with pytest.raises(errors.InvalidArgumentError, match=why):
            aio(local.import_disk(sid, _chunks(bad)))
        assert not node.knows(sid) and not (node.sandboxes_dir / sid).exists()
        assert not list(node.disks.sandboxes.glob(f"*{sid}*")), "nothing received is left"
    status = aio(local.import_disk(sid, _chunks(stream)))
    try:
        assert (status.sandbox_id, status.state) == (sid, "hibernated")
        aio(local.wake(sid))
        assert aio(node.get(sid).run("cat /work/f; echo $WHO")).stdout == "kept\nmoved\n"
    finally:
        aio(local.kill(sid))
