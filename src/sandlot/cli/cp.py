"""`sandlot cp SRC DST`: copy files and directories into or out of a sandbox.

One side is `SANDBOX_ID:/path` (a colon before any slash marks it; write
`./a:b` for a local name with a colon), the other a local path, or `-` for
stdin/stdout (single files). As with `cp -r` and `docker cp`: copying onto an
existing directory (or a path ending in `/`) puts the source inside it, under
its own name; otherwise the copy gets the destination's name. Directories travel
as one tar stream (the SDK's upload_dir/download_dir); anything long shows a
progress bar on a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from sandlot import errors
from sandlot.cli._common import Api, connect, err_console, pass_api, run_async
from sandlot.sdk import AsyncSandbox

__all__ = ["command"]

CHUNK = 256 * 1024
#: files smaller than this copy without a progress bar
PROGRESS_MIN_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Remote:
    sandbox_id: str
    path: str

    def __str__(self) -> str:
        return f"{self.sandbox_id}:{self.path}"


def parse(arg: str) -> Remote | str:
    head, sep, tail = arg.partition(":")
    if sep and head and "/" not in head:
        if not tail:
            raise errors.InvalidArgumentError(f"{arg!r}: give a path after the colon (SANDBOX_ID:/path)", field="path")
        return Remote(head, tail)
    return arg


@contextlib.contextmanager
def progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A transient progress bar on stderr (a spinner when the size is unknown); yields `advance(n)`."""
    con = err_console()
    if not con.is_terminal or (total is not None and total < PROGRESS_MIN_BYTES):
        yield lambda n: None
        return
    columns: list[ProgressColumn | str]
    if total is None:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    else:
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        ]
    with Progress(*columns, console=con, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


async def _remote_dir(sbx: AsyncSandbox, path: str) -> bool:
    try:
        return (await sbx.files.stat(path)).type == "dir"
    except errors.NotFoundError:
        return False


async def _chunks(f: IO[bytes], advance: Callable[[int], None]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(f.read, CHUNK):
        advance(len(chunk))
        yield chunk


async def upload(sbx: AsyncSandbox, src: str, dst: str) -> None:
    if src == "-":
        with progress(f"stdin → {dst}", None) as advance:
            await sbx.files.write(dst, _chunks(sys.stdin.buffer, advance))
        return
    local = Path(src)
    into = dst.endswith("/") or await _remote_dir(sbx, dst)
    target = posixpath.join(dst, local.resolve().name) if into else dst
    if local.is_dir():
        with progress(f"{src} → {target}", None):
            await sbx.files.upload_dir(local, target)
        return
    with open(local, "rb") as f:
        size = local.stat().st_size
        with progress(f"{local.name} → {target}", size) as advance:
            await sbx.files.write(target, _chunks(f, advance), mode=local.stat().st_mode & 0o777)


async def download(sbx: AsyncSandbox, src: str, dst: str) -> None:
    entry = await sbx.files.stat(src)
    name = posixpath.basename(src.rstrip("/")) or "root"
    if entry.type == "dir":
        if dst == "-":
            raise errors.IsADirectoryError_(f"{src} is a directory: copy it to a local directory, not to -", path=src)
        target = Path(dst) / name if Path(dst).is_dir() else Path(dst)
        with progress(f"{src} → {target}", None):
            await sbx.files.download_dir(src, target)
        return
    if dst == "-":
        async for chunk in sbx.files.read_stream(src):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    target = Path(dst) / name if Path(dst).is_dir() or dst.endswith("/") else Path(dst)
    part = target.with_name(target.name + ".sandlot-part")  # no half-written file under the real name
    try:
        with open(part, "wb") as f, progress(f"{src} → {target}", entry.size) as advance:
            async for chunk in sbx.files.read_stream(src):
                await asyncio.to_thread(f.write, chunk)
                advance(len(chunk))
        part.chmod(entry.mode & 0o777)
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)


async def _copy(api: Api, src: Remote | str, dst: Remote | str) -> None:
    if isinstance(src, Remote) and isinstance(dst, str):
        async with connect(api, src.sandbox_id) as sbx:
            await download(sbx, src.path, dst)
    elif isinstance(dst, Remote) and isinstance(src, str):
        async with connect(api, dst.sandbox_id) as sbx:
            await upload(sbx, src, dst.path)
    else:
        raise errors.InvalidArgumentError("one side of cp must be SANDBOX_ID:/path and the other a local path")


@click.command("cp")
@click.argument("src")
@click.argument("dst")
@pass_api
def command(api: Api, src: str, dst: str) -> None:
    """Copy a file or directory into or out of a sandbox (one side SANDBOX_ID:/path).

    \b
      sandlot cp ./data sb-abc:/work        upload (into /work/data when /work exists)
      sandlot cp sb-abc:/work/out.csv .     download
      sandlot cp sb-abc:/etc/hostname -     to stdout
    """
    run_async(_copy(api, parse(src), parse(dst)))
