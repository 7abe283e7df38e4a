"""Bytes and progress across the node's seam: streamed uploads to files, files to streams,
and progress reported from worker threads as async events (see node/client.py)."""

from __future__ import annotations

import asyncio
import shutil
import tarfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path

from sandlot import errors
from sandlot.models import ProgressEvent, TemplateEvent, TemplateInfo, TemplateStart
from sandlot.node.images import Image
from sandlot.safetar import extract_all

__all__ = ["Progress", "progress_events", "receive", "tar_stream", "template_info", "unpack_tar"]

Progress = Callable[[str], None]


def template_info(image: Image) -> TemplateInfo:
    c = image.config
    return TemplateInfo(
        name=image.name,
        source=image.source,
        digest=image.digest,
        layers=len(image.layers),
        size=image.size,
        created_at=image.created_at,
        env=c.env,
        cwd=c.cwd,
        user=c.user,
        entrypoint=c.entrypoint,
        cmd=c.cmd,
        start=TemplateStart(**image.start.to_dict()) if image.start else None,
        owner=image.owner,
    )


async def progress_events(
    work: Callable[[Progress], Awaitable[Image]],
) -> AsyncIterator[ProgressEvent | TemplateEvent]:
    """`progress` lines while `work(progress)` runs (it may call progress from any thread), then the template."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def progress(line: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, line)

    task = asyncio.ensure_future(work(progress))
    try:
        while not task.done() or not queue.empty():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield ProgressEvent(message=getter.result())
            else:
                getter.cancel()
        yield TemplateEvent(template=template_info(task.result()))
    finally:
        if not task.done():  # the client left: the work still finishes (a thread cannot be stopped)
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


async def receive(chunks: AsyncIterable[bytes], dest: Path, limit: int, what: str) -> None:
    """Write a streamed body to `dest`, refusing one over `limit` bytes."""
    n = 0
    with open(dest, "wb") as f:
        async for chunk in chunks:
            n += len(chunk)
            if n > limit:
                raise errors.InvalidArgumentError(f"{what} is larger than {limit} bytes")
            f.write(chunk)


async def unpack_tar(archive: Path, dest: Path, what: str) -> None:
    """Unpack `archive` into `dest` (nothing may land outside it); a bad archive is the caller's error."""

    def unpack() -> None:
        try:
            with tarfile.open(archive) as tar:
                extract_all(tar, dest)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise errors.InvalidArgumentError(f"{what} is not a valid tar archive: {exc}") from None

    await asyncio.to_thread(unpack)


async def tar_stream(layout: Path, work: Path) -> AsyncIterator[bytes]:
    """The directory `layout` as a tar, packed to a file in `work` first (so that a failure is
    raised here, before any byte is answered); `work` is removed once the stream ends."""
    archive = work / "layout.tar"

    def pack() -> None:
        with tarfile.open(archive, "w") as tar:
            for child in sorted(layout.iterdir()):
                tar.add(child, arcname=child.name)

    await asyncio.to_thread(pack)

    async def body() -> AsyncIterator[bytes]:
        try:
            with open(archive, "rb") as f:
                while chunk := await asyncio.to_thread(f.read, 1 << 20):
                    yield chunk
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    return body()
