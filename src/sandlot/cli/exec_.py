"""`sandlot exec SANDBOX_ID -- CMD...`: run a command, stream its output, exit with its status.

The command runs as a background process followed at once, so that Ctrl-C can
kill it: a foreground run whose client goes away keeps running in the sandbox.
Its stdin is closed at once, or fed from ours with `--stdin`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import click

from sandlot import errors
from sandlot.cli._common import Api, connect, exit_status, pairs, pass_api, read_stdin, run_async, writer
from sandlot.sdk import AsyncCommandHandle, AsyncSandbox, CommandResult

__all__ = ["command"]


async def _feed_stdin(handle: AsyncCommandHandle, send_local: bool) -> None:
    if send_local:
        async for chunk in read_stdin():
            await handle.send_stdin(chunk)
    await handle.send_stdin(b"", eof=True)


async def _wait(sbx: AsyncSandbox, handle: AsyncCommandHandle, send_local: bool) -> CommandResult:
    feeder = asyncio.ensure_future(_feed_stdin(handle, send_local))
    try:
        result = await handle.wait()
    except BaseException:  # Ctrl-C, a closed stdout, ...: the remote command must not outlive us
        with contextlib.suppress(errors.SandlotError):
            await asyncio.shield(sbx.commands.kill(handle.pid))
        raise
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
    return result


async def _exec(
    api: Api,
    sandbox_id: str,
    cmd: list[str],
    *,
    cwd: str | None,
    env: dict[str, str],
    user: str | None,
    timeout: float | None,
    send_local: bool,
    detach: bool,
) -> int:
    async with connect(api, sandbox_id) as sbx:
        if detach:
            started = await sbx.commands.run(
                cmd[0] if len(cmd) == 1 else cmd,
                background=True,
                cwd=cwd,
                env=env,
                user=user,
                timeout=timeout,
                tag="sandlot exec -d",
            )
            await started.disconnect()
            click.echo(started.pid)
            return 0
        handle = await sbx.commands.run(
            cmd[0] if len(cmd) == 1 else cmd,
            background=True,
            cwd=cwd,
            env=env,
            user=user,
            timeout=timeout,
            tag="sandlot exec",
            on_stdout=writer(sys.stdout),
            on_stderr=writer(sys.stderr),
        )
        result = await _wait(sbx, handle, send_local)
    if result.oom_killed:
        click.echo("sandlot: the command ran out of memory and was killed", err=True)
    if result.timed_out:
        click.echo(f"sandlot: the command timed out after {timeout}s", err=True)
    return exit_status(result.exit_code, result.signal)


@click.command("exec")
@click.argument("sandbox_id")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--cwd", "-w", default=None, help="working directory")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE", help="environment variable (repeatable)")
@click.option("--user", "-u", default=None, help="user name or uid")
@click.option("--timeout", type=float, default=None, help="kill the command after this many seconds (default: none)")
@click.option("--stdin", "-i", "send_local", is_flag=True, help="send our stdin to the command (until EOF)")
@click.option("--detach", "-d", is_flag=True, help="leave it running in the background; print its pid (see logs)")
@pass_api
def command(
    api: Api,
    sandbox_id: str,
    cmd: tuple[str, ...],
    cwd: str | None,
    env: tuple[str, ...],
    user: str | None,
    timeout: float | None,
    send_local: bool,
    detach: bool,
) -> int:
    """Run CMD in a sandbox; exit with its exit code (128+N for signal N).

    One argument runs through /bin/sh -c; several are an argv. Put `--` before a
    command with options of its own: sandlot exec SANDBOX_ID -- ls -la /tmp

    With --detach the command keeps running after we return, its stdin open and
    its output kept for `sandlot logs SANDBOX_ID PID`.
    """
    if not cmd:
        raise errors.InvalidArgumentError("no command given: sandlot exec SANDBOX_ID -- CMD [ARG...]", field="cmd")
    if send_local and detach:
        raise errors.InvalidArgumentError("--stdin and --detach do not go together", field="stdin")
    return run_async(
        _exec(
            api,
            sandbox_id,
            list(cmd),
            cwd=cwd,
            env=pairs(env, "--env"),
            user=user,
            timeout=timeout,
            send_local=send_local,
            detach=detach,
        )
    )
