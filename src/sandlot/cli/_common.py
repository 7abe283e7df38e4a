"""What every command shares: the API to talk to, KEY=VALUE options, output helpers.

Commands raise `sandlot.errors.SandlotError` for anything the user can fix;
`sandlot.cli.main` prints it as `sandlot: <message>` and exits 2.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sandlot import errors
from sandlot.sdk import AsyncSandbox
from sandlot.sdk._transport import Transport

__all__ = [
    "Api",
    "OutputClosed",
    "call_api",
    "connect",
    "console",
    "err_console",
    "exit_status",
    "fmt_ago",
    "fmt_time",
    "json_option",
    "pairs",
    "pass_api",
    "print_json",
    "read_stdin",
    "require_extra",
    "run_async",
    "table",
    "writer",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Api:
    """Where the API is and which key to use; None lets the SDK pick its defaults."""

    url: str | None = None
    key: str | None = None


pass_api = click.make_pass_decorator(Api, ensure=True)

json_option = click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")


def console() -> Console:
    """stdout; wide when piped, so tables keep whole ids for `grep` and `awk`."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=max(shutil.get_terminal_size((200, 24)).columns, 200))


def table(headers: list[str], rows: list[list[str | Text]]) -> Table:
    """A plain table whose columns keep their width (ids stay whole to copy); the last one wraps.

    Cells are Text or plain strings, never markup: ids, labels and commands are data.
    """
    t = Table(box=None, header_style="bold", pad_edge=False)
    for i, name in enumerate(headers):
        if i == len(headers) - 1:
            t.add_column(name, overflow="fold")
        else:
            widest = max([len(name)] + [_width(r[i]) for r in rows])
            t.add_column(name, no_wrap=True, min_width=widest)
    for row in rows:
        t.add_row(*(Text(c) if isinstance(c, str) else c for c in row))
    return t


def _width(cell: str | Text) -> int:
    return (cell if isinstance(cell, Text) else Text(cell)).cell_len


def err_console() -> Console:
    return Console(stderr=True)


class OutputClosed(Exception):
    """Whoever read our stdout went away (`sandlot exec ... | head`)."""


#: what each extra adds: the modules whose absence means "not installed"
EXTRAS = {
    "server": (
        "fastapi",
        "uvicorn",
        "sqlalchemy",
        "psycopg",
        "dnslib",
        "zstandard",
        "multipart",
        "asyncssh",
        "mcp",
        "prometheus_client",
    ),
    "mcp": ("mcp",),
}


def require_extra(extra: str, command: str) -> None:
    """Fail clearly when `command` needs `sandlot[extra]` and this install is the client alone.

    Raises:
        RuntimeUnavailableError: naming the missing module and the pip line that adds it.
    """
    for module in EXTRAS[extra]:
        try:
            missing = importlib.util.find_spec(module) is None
        except ImportError:
            missing = True
        if missing:
            raise errors.RuntimeUnavailableError(
                f"`sandlot {command}` needs the {extra} part of Sandlot, which this install lacks "
                f"(no module {module!r}): pip install 'sandlot[{extra}]'"
            )


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except BrokenPipeError:  # not as an OSError: click would turn that into a bare exit 1
        raise OutputClosed from None


async def call_api(api: Api, fn: Callable[[Transport], Awaitable[T]]) -> T:
    """One call through the SDK's HTTP transport (for endpoints the SDK has no client for)."""
    transport = Transport(api.url, api.key, None)
    try:
        return await fn(transport)
    finally:
        await transport.close()


def pairs(items: Iterable[str], option: str) -> dict[str, str]:
    """`("K=V", ...)` of a repeated option as a dict."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise errors.InvalidArgumentError(f"{option} wants KEY=VALUE, got {item!r}", field=option.lstrip("-"))
        out[key] = value
    return out


def print_json(data: Any) -> None:
    """Models, lists of models and plain data, as indented JSON on stdout."""

    def plain(value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    click.echo(json.dumps(plain(data), indent=2))


def fmt_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def fmt_ago(ts: float) -> str:
    """`in 4m20s` or `2m10s ago`: short enough for a table (--json has the timestamps)."""
    left = int(ts - time.time())
    return f"in {_span(left)}" if left >= 0 else f"{_span(-left)} ago"


def _span(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@asynccontextmanager
async def connect(api: Api, sandbox_id: str) -> AsyncIterator[AsyncSandbox]:
    """A handle on a running sandbox, closed (not killed) afterwards."""
    sbx = await AsyncSandbox.connect(sandbox_id, api_url=api.url, api_key=api.key)
    try:
        yield sbx
    finally:
        await sbx.close()


def exit_status(exit_code: int | None, signal: int | None) -> int:
    """A command's status as a shell reports it: 128 + N for a death by signal N."""
    if signal is not None:
        return 128 + signal
    return exit_code if exit_code is not None else 1


def writer(stream: Any) -> Callable[[str], None]:
    """An output handler that writes text to `stream` as it arrives."""

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


async def read_stdin(chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """Our stdin, chunk by chunk as it comes, polled on the loop.

    Not a thread: one blocked in read() would keep `asyncio.run` from returning
    after the remote side is done while our stdin stays open.
    """
    fd = sys.stdin.fileno()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(fd, chunk_size)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
        queue.put_nowait(data)

    try:
        loop.add_reader(fd, readable)
    except OSError:  # a regular file cannot be polled; it never blocks either
        with open(fd, "rb", closefd=False) as f:
            while chunk := f.read(chunk_size):
                yield chunk
        return
    try:
        while chunk := await queue.get():
            yield chunk
    finally:
        loop.remove_reader(fd)
