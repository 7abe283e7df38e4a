"""`sandlot shell SANDBOX_ID`: an interactive terminal in a sandbox.

The local terminal goes into raw mode (every key, Ctrl-C included, goes to the
remote shell), follows the window size (SIGWINCH), and is restored however the
session ends. We exit with the remote shell's status when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from typing import Any

import click

from sandlot import errors
from sandlot.cli._common import Api, connect, exit_status, pass_api, read_stdin, run_async
from sandlot.sdk import AsyncPtyHandle, PtySize

__all__ = ["command"]


def _size(fd: int) -> PtySize:
    try:
        cols, rows = os.get_terminal_size(fd)
    except OSError:
        return PtySize()
    return PtySize(rows=rows or 24, cols=cols or 80)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _forward_input(handle: AsyncPtyHandle) -> None:
    async for data in read_stdin():
        await handle.send_stdin(data)
    await handle.send_stdin(b"\x04")  # our stdin ended: Ctrl-D, as a terminal would send


async def _session(handle: AsyncPtyHandle, fd_in: int, fd_out: int, interactive: bool) -> int:
    loop = asyncio.get_running_loop()
    resizes: set[asyncio.Future[Any]] = set()

    def on_winch() -> None:
        task = asyncio.ensure_future(handle.resize(_size(fd_out)))
        resizes.add(task)
        task.add_done_callback(resizes.discard)

    saved = termios.tcgetattr(fd_in) if interactive else None
    pump: asyncio.Future[None] | None = None
    try:
        if interactive:
            tty.setraw(fd_in)
            loop.add_signal_handler(signal.SIGWINCH, on_winch)
        pump = asyncio.ensure_future(_forward_input(handle))
        result = await handle.wait()
    finally:
        if interactive:
            loop.remove_signal_handler(signal.SIGWINCH)
        if saved is not None:
            termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        for task in [pump, *resizes]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
    return exit_status(result.exit_code, result.signal)


async def _shell(api: Api, sandbox_id: str, cmd: str | None, cwd: str | None, user: str | None) -> int:
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    interactive = os.isatty(fd_in)
    sys.stdout.flush()
    async with connect(api, sandbox_id) as sbx:
        handle = await sbx.pty.create(
            _size(fd_out if os.isatty(fd_out) else fd_in),
            on_data=lambda data: _write_all(fd_out, data),
            cmd=cmd,
            cwd=cwd,
            user=user,
        )
        try:
            return await _session(handle, fd_in, fd_out, interactive)
        except asyncio.CancelledError:  # interrupted while not in raw mode: end the remote shell too
            with contextlib.suppress(errors.SandlotError):
                await asyncio.shield(handle.kill())
            raise
        finally:
            await handle.disconnect()


@click.command("shell")
@click.argument("sandbox_id")
@click.option("--cmd", "-c", default=None, help="run this shell command on the terminal (default: bash, or sh)")
@click.option("--cwd", "-w", default=None, help="working directory")
@click.option("--user", "-u", default=None, help="user name or uid")
@pass_api
def command(api: Api, sandbox_id: str, cmd: str | None, cwd: str | None, user: str | None) -> int:
    """An interactive terminal in a sandbox; exits when its shell does."""
    return run_async(_shell(api, sandbox_id, cmd, cwd, user))
