"""`sbx.commands`: run commands, start background processes, follow and control them."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import signal as _signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, overload

from sandlot import errors
from sandlot.models import ProcessInfo, ProcessList, ProcessStarted
from sandlot.results import CommandResult

if TYPE_CHECKING:
    from sandlot.sdk.sandbox import AsyncSandbox

__all__ = ["AsyncCommandHandle", "AsyncCommands", "CommandResult", "OutputHandler"]

#: Called with each piece of output text as it arrives (a coroutine function is awaited).
OutputHandler = Callable[[str], Any] | Callable[[str], Awaitable[Any]]
#: The default command timeout, in seconds; pass None for none.
DEFAULT_COMMAND_TIMEOUT = 60.0


def check_result(cmd: object, result: CommandResult) -> CommandResult:
    if not result.ok:
        detail = result.stderr.strip()[-500:]
        raise errors.CommandExitError(
            f"command {cmd!r} {result.error}" + (f": {detail}" if detail else ""), result=result
        )
    return result


def retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a follower task's error as seen: it is raised by wait(), if anyone waits."""
    if not task.cancelled():
        task.exception()


async def _call(handler: OutputHandler | None, text: str) -> None:
    if handler is not None:
        res = handler(text)
        if asyncio.iscoroutine(res):
            await res


class _Collector:
    """Folds stream events into a CommandResult, calling the handlers on the way."""

    def __init__(self, on_stdout: OutputHandler | None, on_stderr: OutputHandler | None) -> None:
        self.on_stdout, self.on_stderr = on_stdout, on_stderr
        self.out: list[str] = []
        self.err: list[str] = []
        self.pid = 0
        self.exit: dict[str, Any] | None = None

    async def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "start":
            self.pid = int(event["pid"])
        elif kind == "stdout":
            self.out.append(str(event["data"]))
            await _call(self.on_stdout, str(event["data"]))
        elif kind == "stderr":
            self.err.append(str(event["data"]))
            await _call(self.on_stderr, str(event["data"]))
        elif kind == "exit":
            self.exit = event

    def result(self) -> CommandResult:
        if self.exit is None:
            raise errors.InternalError("the command's output stream ended without its exit status")
        ex = self.exit
        return CommandResult(
            stdout="".join(self.out),
            stderr="".join(self.err),
            exit_code=ex.get("exit_code"),
            signal=ex.get("signal"),
            oom_killed=bool(ex.get("oom_killed")),
            timed_out=bool(ex.get("timed_out")),
            pids_limit_hit=bool(ex.get("pids_limit_hit")),
            pid=int(ex.get("pid") or self.pid),
        )


class AsyncCommandHandle:
    """A background process: its output is collected (and passed to the handlers) as it comes."""

    def __init__(
        self,
        commands: AsyncCommands,
        pid: int,
        on_stdout: OutputHandler | None = None,
        on_stderr: OutputHandler | None = None,
    ) -> None:
        self._commands = commands
        self.pid = pid
        self._collector = _Collector(on_stdout, on_stderr)
        self._task: asyncio.Task[CommandResult] = asyncio.ensure_future(self._follow())
        self._task.add_done_callback(retrieve)

    async def _follow(self) -> CommandResult:
        path = f"{self._commands._base}/processes/{self.pid}/output"
        async for event in self._commands._sbx._transport.lines("GET", path):
            await self._collector.feed(event)
        return self._collector.result()

    @property
    def stdout(self) -> str:
        """Output so far."""
        return "".join(self._collector.out)

    @property
    def stderr(self) -> str:
        return "".join(self._collector.err)

    async def wait(self, *, check: bool = False) -> CommandResult:
        """Wait for the process to exit.

        Args:
            check: raise CommandExitError when it exits non-zero.

        Returns:
            The CommandResult (all output since the process started).

        Raises:
            CommandExitError: `check` and a non-zero exit.
            SandboxStateError: the sandbox died.
        """
        result = await asyncio.shield(self._task)
        return check_result(self.pid, result) if check else result

    async def kill(self) -> bool:
        """SIGKILL the process (and its group). Returns False when it had already gone."""
        return await self._commands.kill(self.pid)

    async def send_stdin(self, data: str | bytes, *, eof: bool = False) -> None:
        """Write to the process's stdin (`eof` closes it afterwards)."""
        await self._commands.send_stdin(self.pid, data, eof=eof)

    async def disconnect(self) -> None:
        """Stop following the output; the process keeps running (see `commands.connect`)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, errors.SandlotError):
            await self._task


class AsyncCommands:
    def __init__(self, sbx: AsyncSandbox) -> None:
        self._sbx = sbx

    @property
    def _base(self) -> str:
        return f"/sandboxes/{self._sbx.sandbox_id}"

    @overload
    async def run(
        self,
        cmd: str | builtins.list[str],
        *,
        background: Literal[False] = False,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        stdin: str | None = None,
        on_stdout: OutputHandler | None = None,
        on_stderr: OutputHandler | None = None,
        check: bool = False,
        tag: str | None = None,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        cmd: str | builtins.list[str],
        *,
        background: Literal[True],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        stdin: str | None = None,
        on_stdout: OutputHandler | None = None,
        on_stderr: OutputHandler | None = None,
        check: bool = False,
        tag: str | None = None,
    ) -> AsyncCommandHandle: ...

    async def run(
        self,
        cmd: str | builtins.list[str],
        *,
        background: bool = False,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        stdin: str | None = None,
        on_stdout: OutputHandler | None = None,
        on_stderr: OutputHandler | None = None,
        check: bool = False,
        tag: str | None = None,
    ) -> CommandResult | AsyncCommandHandle:
        """Run a command in the sandbox.

        Args:
            cmd: a shell string (run by /bin/sh -c) or an argv list.
            background: return an AsyncCommandHandle at once instead of waiting.
            env: extra environment variables.
            cwd: working directory (default: the image's).
            user: user name or uid (default: the image's).
            timeout: kill the command after this many seconds; None for no limit.
            stdin: text fed to the command's stdin, which is then closed (foreground only).
            on_stdout: called with stdout text as it is produced.
            on_stderr: called with stderr text as it is produced.
            check: raise CommandExitError on a non-zero exit (foreground only).
            tag: a label shown by `commands.list()`.

        Returns:
            A CommandResult; an AsyncCommandHandle when `background` is true.

        Raises:
            CommandNotFoundError: the program does not exist (argv form).
            SandboxFileNotFoundError: `cwd` does not exist.
            UserNotFoundError: `user` does not exist.
            CommandExitError: `check` and a non-zero exit.
            TimeoutError_: the command ran past `timeout` and was killed (`.result` has its output).
            SandboxStateError: the sandbox is not running.

        Example:
            >>> sbx.commands.run("echo hi").stdout
            'hi\\n'
        """
        body: dict[str, Any] = {"cmd": cmd, "env": env or {}, "cwd": cwd, "user": user, "timeout": timeout, "tag": tag}
        if background:
            if stdin is not None:
                raise errors.InvalidArgumentError("stdin= is for foreground commands; use send_stdin()", field="stdin")
            body["background"] = True
            started = ProcessStarted.model_validate(
                await self._sbx._transport.json("POST", f"{self._base}/commands", json=body)
            )
            return AsyncCommandHandle(self, started.pid, on_stdout, on_stderr)
        body["stdin"] = stdin
        collector = _Collector(on_stdout, on_stderr)
        async for event in self._sbx._transport.lines("POST", f"{self._base}/commands", json=body):
            await collector.feed(event)
        result = collector.result()
        if result.timed_out:
            raise errors.TimeoutError_(f"command timed out after {timeout}s and was killed: {cmd}", result=result)
        return check_result(cmd, result) if check else result

    async def list(self) -> builtins.list[ProcessInfo]:
        """Processes started in the sandbox (running ones and recent exits)."""
        data = await self._sbx._transport.json("GET", f"{self._base}/processes")
        return ProcessList.model_validate(data).processes

    async def kill(self, pid: int) -> bool:
        """SIGKILL a process and its group.

        Returns:
            True when it was signalled; False when no such process runs.
        """
        try:
            await self._sbx._transport.request("DELETE", f"{self._base}/processes/{pid}")
        except errors.ProcessNotFoundError:
            return False
        return True

    async def signal(self, pid: int, sig: int = int(_signal.SIGTERM), *, group: bool = True) -> None:
        """Send a signal to a process (by default to its whole process group)."""
        body = {"signal": int(sig), "group": group}
        await self._sbx._transport.request("POST", f"{self._base}/processes/{pid}/signal", json=body)

    async def send_stdin(self, pid: int, data: str | bytes, *, eof: bool = False) -> None:
        """Write to a process's stdin.

        Raises:
            ProcessNotFoundError: no such process.
        """
        content = data.encode() if isinstance(data, str) else data
        params = {"eof": "true"} if eof else {}
        await self._sbx._transport.request(
            "POST", f"{self._base}/processes/{pid}/stdin", content=content, params=params
        )

    async def connect(
        self, pid: int, *, on_stdout: OutputHandler | None = None, on_stderr: OutputHandler | None = None
    ) -> AsyncCommandHandle:
        """Follow a running (or recently exited) process: its output so far, then live.

        Raises:
            ProcessNotFoundError: no such process.
        """
        if not any(p.pid == pid for p in await self.list()):
            raise errors.ProcessNotFoundError(f"process {pid} not found in sandbox {self._sbx.sandbox_id}")
        return AsyncCommandHandle(self, pid, on_stdout, on_stderr)
