"""`sandlot logs SANDBOX_ID [PID]`: the output of a sandbox's processes.

Without PID: the processes started through the API (running ones and recent
exits). With PID: that process's output so far (stdout to stdout, stderr to
stderr), by reconnecting to it; `--follow` keeps streaming until it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import TextIO

import click
from rich.text import Text

from sandlot import errors
from sandlot.cli._common import (
    Api,
    connect,
    console,
    fmt_time,
    json_option,
    pass_api,
    print_json,
    run_async,
    table,
    writer,
)
from sandlot.sdk import AsyncSandbox, ProcessInfo

__all__ = ["command"]

#: without --follow, a running process's replayed output is over once the stream is this quiet
QUIET_S = 0.5
#: ... or, before its first byte, this quiet
FIRST_BYTE_S = 2.0
#: ... and it stops after this long in any case (a chatty process is never quiet)
MAX_S = 10.0


def rows(processes: list[ProcessInfo]) -> list[list[str | Text]]:
    out: list[list[str | Text]] = []
    for p in processes:
        if p.running:
            state = Text("running", style="green")
        elif p.exit is not None and p.exit.signal is not None:
            state = Text(f"killed (signal {p.exit.signal})", style="red")
        else:
            code = p.exit.exit_code if p.exit is not None else None
            state = Text(f"exited ({code})", style="" if code == 0 else "red")
        started = fmt_time(p.started_at_ms / 1000) if p.started_at_ms else ""
        out.append([str(p.pid), state, started, p.tag or "", p.cmd or " ".join(p.argv)])
    return out


async def _list(sbx: AsyncSandbox, as_json: bool) -> None:
    processes = await sbx.commands.list()
    if as_json:
        print_json(processes)
    elif processes:
        console().print(table(["PID", "STATE", "STARTED", "TAG", "COMMAND"], rows(processes)))
    else:
        click.echo("no processes", err=True)


async def _output(sbx: AsyncSandbox, pid: int, follow: bool) -> None:
    got = asyncio.Event()

    def sink(stream: TextIO) -> Callable[[str], None]:
        write = writer(stream)

        def handler(text: str) -> None:
            got.set()
            write(text)

        return handler

    handle = await sbx.commands.connect(pid, on_stdout=sink(sys.stdout), on_stderr=sink(sys.stderr))
    try:
        if follow:
            await handle.wait()
            return
        # The stream replays what the process printed so far, then goes live; the SDK
        # has no "output so far" call, so stop at its exit, once it falls quiet, or at a cap.
        waiter = asyncio.ensure_future(handle.wait())
        quiet, cap = FIRST_BYTE_S, asyncio.get_running_loop().time() + MAX_S
        while asyncio.get_running_loop().time() < cap:
            got.clear()
            arrived = asyncio.ensure_future(got.wait())
            done, _ = await asyncio.wait({waiter, arrived}, timeout=quiet, return_when=asyncio.FIRST_COMPLETED)
            arrived.cancel()
            if waiter in done or not done:
                break
            quiet = QUIET_S
        if waiter.done():
            waiter.result()  # the stream's error, if it broke
        else:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    finally:
        await handle.disconnect()


async def _logs(api: Api, sandbox_id: str, pid: int | None, follow: bool, as_json: bool) -> None:
    async with connect(api, sandbox_id) as sbx:
        if pid is None:
            if follow:
                raise errors.InvalidArgumentError("--follow needs a PID: sandlot logs SANDBOX_ID PID --follow")
            await _list(sbx, as_json)
        else:
            await _output(sbx, pid, follow)


@click.command("logs")
@click.argument("sandbox_id")
@click.argument("pid", type=int, required=False)
@click.option("--follow", "-f", is_flag=True, help="keep streaming until the process exits")
@json_option
@pass_api
def command(api: Api, sandbox_id: str, pid: int | None, follow: bool, as_json: bool) -> None:
    """List a sandbox's processes, or print one's output (PID)."""
    run_async(_logs(api, sandbox_id, pid, follow, as_json))
