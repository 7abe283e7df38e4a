"""The synchronous SDK: a thin wrapper that runs the async SDK on a private event loop thread.

There is one implementation, the async one. Each sync method here either *is*
its async counterpart run to completion on the loop thread (`_blocking`: the
signature and docstring come from the async method, so the two cannot drift),
or, where the async method returns an async object, a small wrapper that runs
it and wraps the result (`Sandbox.create`, `commands.run(background=True)`,
`files.watch`, `pty.create`).

Callbacks (`on_stdout`, `on_data`, `on_event`) run on the loop thread.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Concatenate, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

from sandlot.models import CheckpointInfo, SandboxInfo, VolumeMountRequest, WatchEventOut
from sandlot.sdk.commands import (
    DEFAULT_COMMAND_TIMEOUT,
    AsyncCommandHandle,
    AsyncCommands,
    CommandResult,
    OutputHandler,
)
from sandlot.sdk.files import AsyncFiles, AsyncWatchHandle
from sandlot.sdk.network import AsyncNetwork
from sandlot.sdk.pty import AsyncPty, AsyncPtyHandle, DataHandler, PtySize
from sandlot.sdk.sandbox import AsyncSandbox

__all__ = ["CommandHandle", "Commands", "Files", "Pty", "PtyHandle", "Sandbox", "WatchHandle"]

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")


class _Portal:
    """One daemon thread running an event loop for every sync object of this process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="sandlot-sdk", daemon=True).start()
                cls._loop = loop
            return cls._loop

    @classmethod
    def call(cls, coro: Coroutine[Any, Any, T]) -> T:
        loop = cls.loop()
        try:
            if asyncio.get_running_loop() is loop:
                coro.close()
                raise RuntimeError("a sync Sandlot call was made from an SDK callback; use AsyncSandbox there")
        except RuntimeError as exc:
            if "sync Sandlot call" in str(exc):
                raise
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of the async SDK on the SDK's loop thread and return its result."""
    return _Portal.call(coro)


class _HasAsync(Protocol[A]):
    _async: A


class _blocking(Generic[A, P, T]):
    """`name = _blocking(AsyncX.name)`: the async method, run to completion."""

    def __init__(self, fn: Callable[Concatenate[A, P], Coroutine[Any, Any, T]]) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _blocking[A, P, T]: ...
    @overload
    def __get__(self, obj: _HasAsync[A], owner: type[Any]) -> Callable[P, T]: ...
    def __get__(self, obj: _HasAsync[A] | None, owner: type[Any]) -> _blocking[A, P, T] | Callable[P, T]:
        if obj is None:
            return self
        inner = obj._async

        @functools.wraps(self._fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return _Portal.call(self._fn(inner, *args, **kwargs))

        return call


# ---------------------------------------------------------------- commands


class CommandHandle:
    """A background process (see AsyncCommandHandle)."""

    def __init__(self, handle: AsyncCommandHandle) -> None:
        self._async = handle
        self.pid = handle.pid

    @property
    def stdout(self) -> str:
        return self._async.stdout

    @property
    def stderr(self) -> str:
        return self._async.stderr

    wait = _blocking(AsyncCommandHandle.wait)
    kill = _blocking(AsyncCommandHandle.kill)
    send_stdin = _blocking(AsyncCommandHandle.send_stdin)
    disconnect = _blocking(AsyncCommandHandle.disconnect)


class Commands:
    def __init__(self, commands: AsyncCommands) -> None:
        self._async = commands

    @overload
    def run(
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
    def run(
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
    ) -> CommandHandle: ...

    def run(
        self, cmd: str | builtins.list[str], *, background: bool = False, **kw: Any
    ) -> CommandResult | CommandHandle:
        """Run a command; see `AsyncCommands.run` (same arguments, same results, blocking)."""
        if background:
            return CommandHandle(_Portal.call(self._async.run(cmd, background=True, **kw)))
        return _Portal.call(self._async.run(cmd, background=False, **kw))

    def connect(
        self, pid: int, *, on_stdout: OutputHandler | None = None, on_stderr: OutputHandler | None = None
    ) -> CommandHandle:
        """Follow a running process; see `AsyncCommands.connect`."""
        return CommandHandle(_Portal.call(self._async.connect(pid, on_stdout=on_stdout, on_stderr=on_stderr)))

    list = _blocking(AsyncCommands.list)
    kill = _blocking(AsyncCommands.kill)
    signal = _blocking(AsyncCommands.signal)
    send_stdin = _blocking(AsyncCommands.send_stdin)


# ---------------------------------------------------------------- files


class WatchHandle:
    """Filesystem events (see AsyncWatchHandle); iterate it to block for each event."""

    def __init__(self, handle: AsyncWatchHandle) -> None:
        self._async = handle

    def get_new_events(self) -> builtins.list[WatchEventOut]:
        return _Portal.call(_now(self._async.get_new_events))

    next_event = _blocking(AsyncWatchHandle.next_event)
    stop = _blocking(AsyncWatchHandle.stop)

    def __iter__(self) -> Iterator[WatchEventOut]:
        while (ev := self.next_event()) is not None:
            yield ev


async def _now(fn: Callable[[], T]) -> T:
    return fn()


class Files:
    def __init__(self, files: AsyncFiles) -> None:
        self._async = files

    @overload
    def read(self, path: str, format: Literal["text"] = "text") -> str: ...
    @overload
    def read(self, path: str, format: Literal["bytes"]) -> bytes: ...
    def read(self, path: str, format: Literal["text", "bytes"] = "text") -> str | bytes:
        """Read a whole file; see `AsyncFiles.read`."""
        if format == "bytes":
            return _Portal.call(self._async.read(path, "bytes"))
        return _Portal.call(self._async.read(path, "text"))

    def read_stream(self, path: str) -> Iterator[bytes]:
        """The file's content chunk by chunk; see `AsyncFiles.read_stream`."""
        agen = self._async.read_stream(path)
        try:
            while True:
                try:
                    yield _Portal.call(anext(agen))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            _Portal.call(agen.aclose())  # type: ignore[attr-defined]

    def watch(
        self, path: str, *, recursive: bool = False, on_event: Callable[[WatchEventOut], Any] | None = None
    ) -> WatchHandle:
        """Watch a directory; see `AsyncFiles.watch`."""
        return WatchHandle(_Portal.call(self._async.watch(path, recursive=recursive, on_event=on_event)))

    write = _blocking(AsyncFiles.write)
    list = _blocking(AsyncFiles.list)
    stat = _blocking(AsyncFiles.stat)
    get_info = stat
    exists = _blocking(AsyncFiles.exists)
    make_dir = _blocking(AsyncFiles.make_dir)
    rename = _blocking(AsyncFiles.rename)
    remove = _blocking(AsyncFiles.remove)
    upload_dir = _blocking(AsyncFiles.upload_dir)
    download_dir = _blocking(AsyncFiles.download_dir)


# ---------------------------------------------------------------- pty


class PtyHandle:
    """A terminal session (see AsyncPtyHandle)."""

    def __init__(self, handle: AsyncPtyHandle) -> None:
        self._async = handle
        self.pid = handle.pid

    @property
    def output(self) -> bytes:
        return self._async.output

    send_stdin = _blocking(AsyncPtyHandle.send_stdin)
    send = send_stdin
    resize = _blocking(AsyncPtyHandle.resize)
    wait = _blocking(AsyncPtyHandle.wait)
    kill = _blocking(AsyncPtyHandle.kill)
    disconnect = _blocking(AsyncPtyHandle.disconnect)


class Pty:
    def __init__(self, pty: AsyncPty) -> None:
        self._async = pty

    def create(
        self,
        size: PtySize = PtySize(),
        *,
        on_data: DataHandler | None = None,
        cmd: str | None = None,
        cwd: str | None = None,
        user: str | None = None,
    ) -> PtyHandle:
        """Open a terminal; see `AsyncPty.create`."""
        return PtyHandle(_Portal.call(self._async.create(size, on_data=on_data, cmd=cmd, cwd=cwd, user=user)))

    def connect(self, pid: int, *, on_data: DataHandler | None = None) -> PtyHandle:
        """Reattach to a terminal; see `AsyncPty.connect`."""
        return PtyHandle(_Portal.call(self._async.connect(pid, on_data=on_data)))

    send_stdin = _blocking(AsyncPty.send_stdin)
    send = send_stdin
    resize = _blocking(AsyncPty.resize)
    kill = _blocking(AsyncPty.kill)


# ---------------------------------------------------------------- network


class Network:
    def __init__(self, network: AsyncNetwork) -> None:
        self._async = network

    get = _blocking(AsyncNetwork.get)
    update = _blocking(AsyncNetwork.update)
    set_public = _blocking(AsyncNetwork.set_public)


# ---------------------------------------------------------------- sandbox


class Sandbox:
    """A sandbox on a Sandlot server (blocking API; see AsyncSandbox for the details).

    Example:
        >>> with Sandbox.create() as sbx:
        ...     sbx.commands.run("echo hi").stdout
        'hi\\n'
    """

    def __init__(self, inner: AsyncSandbox) -> None:
        self._async = inner
        self.sandbox_id = inner.sandbox_id
        self.commands = Commands(inner.commands)
        self.files = Files(inner.files)
        self.pty = Pty(inner.pty)
        self.network = Network(inner.network)

    def __repr__(self) -> str:
        return f"<Sandbox {self.sandbox_id}>"

    @property
    def access_token(self) -> str | None:
        return self._async.access_token

    def get_host(self, port: int) -> str:
        """See `AsyncSandbox.get_host`."""
        return self._async.get_host(port)

    def get_url(self, port: int, path: str = "/") -> str:
        """See `AsyncSandbox.get_url`."""
        return self._async.get_url(port, path)

    @classmethod
    def create(
        cls,
        template: str | None = None,
        *,
        image: str | None = None,
        registry_auth: tuple[str, str] | None = None,
        timeout: int = 300,
        runtime: str | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        env: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
        network: str | dict[str, Any] | None = None,
        persistent: bool = False,
        on_timeout: str = "kill",
        auto_resume: bool = False,
        volumes: Sequence[VolumeMountRequest] | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
        request_timeout: float | None = None,
    ) -> Sandbox:
        """Start a new sandbox; see `AsyncSandbox.create` for every argument and error."""
        return cls(
            _Portal.call(
                AsyncSandbox.create(
                    template,
                    image=image,
                    registry_auth=registry_auth,
                    timeout=timeout,
                    runtime=runtime,
                    cpu=cpu,
                    memory_mb=memory_mb,
                    disk_mb=disk_mb,
                    env=env,
                    metadata=metadata,
                    network=network,
                    persistent=persistent,
                    on_timeout=on_timeout,
                    auto_resume=auto_resume,
                    volumes=volumes,
                    api_url=api_url,
                    api_key=api_key,
                    request_timeout=request_timeout,
                )
            )
        )

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        request_timeout: float | None = None,
    ) -> Sandbox:
        """Attach to an existing sandbox; see `AsyncSandbox.connect`."""
        inner = AsyncSandbox.connect(sandbox_id, api_url=api_url, api_key=api_key, request_timeout=request_timeout)
        return cls(_Portal.call(inner))

    @classmethod
    def list(
        cls,
        *,
        metadata: dict[str, str] | None = None,
        state: Sequence[str] | None = None,
        limit: int | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[SandboxInfo]:
        """The team's sandboxes; see `AsyncSandbox.list`."""
        return _Portal.call(
            AsyncSandbox.list(metadata=metadata, state=state, limit=limit, api_url=api_url, api_key=api_key)
        )

    get_info = _blocking(AsyncSandbox.get_info)
    is_running = _blocking(AsyncSandbox.is_running)
    set_timeout = _blocking(AsyncSandbox.set_timeout)
    kill = _blocking(AsyncSandbox.kill)
    pause = _blocking(AsyncSandbox.pause)
    resume = _blocking(AsyncSandbox.resume)
    checkpoint = _blocking(AsyncSandbox.checkpoint)
    list_checkpoints = _blocking(AsyncSandbox.list_checkpoints)
    restore = _blocking(AsyncSandbox.restore)
    close = _blocking(AsyncSandbox.close)
    run_code = _blocking(AsyncSandbox.run_code)
    create_code_context = _blocking(AsyncSandbox.create_code_context)

    @classmethod
    def fork(
        cls,
        checkpoint: CheckpointInfo | str,
        count: int = 1,
        *,
        timeout: int = 300,
        metadata: dict[str, str] | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
        request_timeout: float | None = None,
    ) -> builtins.list[Sandbox]:
        """Start `count` sandboxes from a checkpoint; see `AsyncSandbox.fork`."""
        inner = AsyncSandbox.fork(
            checkpoint,
            count,
            timeout=timeout,
            metadata=metadata,
            api_url=api_url,
            api_key=api_key,
            request_timeout=request_timeout,
        )
        return [cls(s) for s in _Portal.call(inner)]

    @staticmethod
    def delete_checkpoint(
        checkpoint: CheckpointInfo | str, *, api_url: str | None = None, api_key: str | None = None
    ) -> None:
        """Delete a checkpoint; see `AsyncSandbox.delete_checkpoint`."""
        _Portal.call(AsyncSandbox.delete_checkpoint(checkpoint, api_url=api_url, api_key=api_key))

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.kill()
        finally:
            self.close()
