"""`sbx.pty`: interactive terminals over a WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sandlot import errors
from sandlot.sdk.commands import CommandResult, retrieve

if TYPE_CHECKING:
    from sandlot.sdk.sandbox import AsyncSandbox

__all__ = ["AsyncPty", "AsyncPtyHandle", "PtySize"]

DataHandler = Callable[[bytes], Any] | Callable[[bytes], Awaitable[Any]]


@dataclass(frozen=True)
class PtySize:
    rows: int = 24
    cols: int = 80


class AsyncPtyHandle:
    """A terminal session: send input, resize, read output (via `on_data`), wait, kill."""

    def __init__(self, pty: AsyncPty, ws: ClientConnection, pid: int, on_data: DataHandler | None) -> None:
        self._pty = pty
        self._ws = ws
        self.pid = pid
        self._on_data = on_data
        self._output = bytearray()
        self._task: asyncio.Task[CommandResult] = asyncio.ensure_future(self._read())
        self._task.add_done_callback(retrieve)

    async def _read(self) -> CommandResult:
        exit_event: dict[str, Any] | None = None
        try:
            async for msg in self._ws:
                if isinstance(msg, bytes):
                    self._output += msg
                    if self._on_data is not None:
                        res = self._on_data(msg)
                        if asyncio.iscoroutine(res):
                            await res
                    continue
                event = json.loads(msg)
                if event.get("type") == "exit":
                    exit_event = event
                elif event.get("type") == "error":
                    raise errors.error_from_code(str(event.get("code")), str(event.get("message")))
        except ConnectionClosed:
            pass
        if exit_event is None:
            raise errors.SandboxStateError(f"the terminal {self.pid} was disconnected before it exited")
        return CommandResult(
            stdout=self._output.decode(errors="replace"),
            stderr="",
            exit_code=exit_event.get("exit_code"),
            signal=exit_event.get("signal"),
            oom_killed=bool(exit_event.get("oom_killed")),
            timed_out=bool(exit_event.get("timed_out")),
            pid=self.pid,
        )

    @property
    def output(self) -> bytes:
        """Everything the terminal printed so far."""
        return bytes(self._output)

    async def send_stdin(self, data: str | bytes) -> None:
        """Type into the terminal."""
        await self._ws.send(data.encode() if isinstance(data, str) else data)

    send = send_stdin

    async def resize(self, size: PtySize) -> None:
        await self._ws.send(json.dumps({"type": "resize", "rows": size.rows, "cols": size.cols}))

    async def wait(self, timeout: float | None = None) -> CommandResult:
        """Wait for the terminal's process to exit; `stdout` holds the whole output.

        Raises:
            TimeoutError_: it still runs after `timeout` seconds (it keeps running).
        """
        try:
            return await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            raise errors.TimeoutError_(f"terminal {self.pid} still runs after {timeout}s") from None

    async def kill(self) -> bool:
        return await self._pty.kill(self.pid)

    async def disconnect(self) -> None:
        """Close the socket; the terminal keeps running (reattach with `pty.connect`)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, errors.SandlotError):
            await self._task
        await self._ws.close()


class AsyncPty:
    def __init__(self, sbx: AsyncSandbox) -> None:
        self._sbx = sbx

    async def _open(self, params: dict[str, Any], on_data: DataHandler | None) -> AsyncPtyHandle:
        t = self._sbx._transport
        url = t.ws_url(f"/sandboxes/{self._sbx.sandbox_id}/pty?{urlencode(params)}")
        try:
            ws = await connect(url, additional_headers=t.headers, max_size=None, open_timeout=30)
        except InvalidStatus as exc:
            raise errors.InternalError(f"the API refused the terminal: HTTP {exc.response.status_code}") from None
        except OSError as exc:
            raise errors.InternalError(f"cannot reach the Sandlot API at {t.api_url}: {exc}") from None
        first = json.loads(await ws.recv())
        if first.get("type") != "start":
            await ws.close()
            raise errors.error_from_code(str(first.get("code", "internal")), str(first.get("message", "")))
        return AsyncPtyHandle(self, ws, int(first["pid"]), on_data)

    async def create(
        self,
        size: PtySize = PtySize(),
        *,
        on_data: DataHandler | None = None,
        cmd: str | None = None,
        cwd: str | None = None,
        user: str | None = None,
    ) -> AsyncPtyHandle:
        """Open a terminal running `cmd` (default: an interactive bash, or sh).

        Args:
            size: rows and columns.
            on_data: called with output bytes as they arrive.
            cmd: shell command to run on the terminal.
            cwd: working directory.
            user: user name or uid.

        Returns:
            An AsyncPtyHandle (its `pid` names the terminal for send_stdin/resize/kill).

        Raises:
            SandboxStateError: the sandbox is not running.
        """
        params: dict[str, Any] = {"rows": size.rows, "cols": size.cols}
        for key, value in (("cmd", cmd), ("cwd", cwd), ("user", user)):
            if value:
                params[key] = value
        return await self._open(params, on_data)

    async def connect(self, pid: int, *, on_data: DataHandler | None = None) -> AsyncPtyHandle:
        """Reattach to a running terminal (its recent output is replayed)."""
        return await self._open({"pid": pid}, on_data)

    async def send_stdin(self, pid: int, data: str | bytes) -> None:
        """Type into a terminal by pid."""
        await self._sbx.commands.send_stdin(pid, data)

    send = send_stdin

    async def resize(self, pid: int, size: PtySize) -> None:
        body = {"rows": size.rows, "cols": size.cols}
        await self._sbx._transport.request(
            "POST", f"/sandboxes/{self._sbx.sandbox_id}/processes/{pid}/resize", json=body
        )

    async def kill(self, pid: int) -> bool:
        """Kill the terminal's process. Returns False when it had already gone."""
        return await self._sbx.commands.kill(pid)
