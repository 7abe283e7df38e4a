"""The node's side of the agent protocol: a multiplexed connection and typed calls.

The node listens on a Unix socket per sandbox; the agent dials in (and redials
after a node restart). `AgentConnection` owns that listener and the current
connection; `AgentClient` offers one async method per protocol method.

Invariant: `_streams` holds every stream opened on the current connection; when
the connection drops, each gets a SandboxStateError and the map is cleared.

An agent that is stopped (SIGSTOP), wedged or killed without its socket
closing answers nothing, so no call may wait on it forever: calls whose first
answer comes at once (a process starting, a file stat, a port connecting) wait
`response_timeout` and then ping the agent; if the ping is not answered within
`response_timeout` either, the call fails with AgentUnresponsiveError. A slow
answer from a live agent (a huge `remove` on a busy host) is waited for. The
output of a running process is not: a command may rightly be silent for hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.agent.protocol import Frame, FrameKind

__all__ = ["AgentClient", "AgentConnection", "PortTunnel", "ProcessStream", "RelayStream", "Stream", "WatchStream"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
_EOF = object()
#: How long a call waits for a first answer before it asks whether the agent is alive at all.
RESPONSE_TIMEOUT = 30.0
#: The agent's connection is received into a buffer with at least this much room (it starts at
#: twice this, and grows to twice the largest frame that arrives in pieces).
RECV_MIN = 256 << 10
#: A payload at least this large is written after its frame's head rather than copied into one buffer.
_INLINE_PAYLOAD = 64 << 10
#: A port stream acknowledges what it consumed once this much is unacknowledged.
ACK_BATCH = p.PORT_WINDOW // 4


class Stream:
    """One OPENed stream: incoming frames are queued until END."""

    def __init__(self, conn: AgentConnection, stream_id: int, method: str) -> None:
        self._conn = conn
        self.id = stream_id
        self.method = method
        self._queue: asyncio.Queue[Frame | BaseException] = asyncio.Queue()
        self.result: dict[str, Any] | None = None
        self.done = False
        #: a process start's: the host's count of refused forks when it started (pids_refusals)
        self.refusals_at: int | None = None
        # Flow control of port streams (see p.PortConnectParams): DATA sent, not yet acknowledged.
        self._unacked_bytes = 0
        self._unacked_frames = 0
        self._credit = asyncio.Event()
        self._broken: BaseException | None = None
        self._ended = False

    def _deliver(self, item: Frame | BaseException) -> None:
        if isinstance(item, BaseException):
            self._broken = item
            self._credit.set()  # a sender waiting for credit must see the stream die
        elif item.kind is FrameKind.EVENT and item.header.get("type") == "ack":
            n, frames = item.header.get("n"), item.header.get("frames", 1)
            if isinstance(n, int) and n >= 0 and isinstance(frames, int) and frames >= 0:
                self._unacked_bytes -= n
                self._unacked_frames -= frames
                self._credit.set()
            return
        elif item.kind is FrameKind.END:
            self._ended = True
            self._credit.set()  # nothing will be acknowledged any more
        self._queue.put_nowait(item)

    async def send_windowed(self, data: bytes, max_frames: int = 32) -> None:
        """`send`, waiting while the agent has PORT_WINDOW bytes (or `max_frames`) unacknowledged."""
        for i in range(0, len(data), p.CHUNK):
            chunk = data[i : i + p.CHUNK]
            while self._unacked_bytes >= p.PORT_WINDOW or self._unacked_frames >= max_frames:
                if self._broken is not None:
                    raise self._broken
                if self.done or self._ended:
                    raise errors.SandboxStateError(f"sandbox {self._conn.sandbox_id}: the port's connection closed")
                self._credit.clear()
                await self._credit.wait()
            self._unacked_bytes += len(chunk)
            self._unacked_frames += 1
            await self._conn._send(self.id, FrameKind.DATA, {"fd": 0}, chunk)

    async def ack(self, n: int) -> None:
        """Tell the agent `n` bytes of its DATA were consumed (port streams)."""
        with contextlib.suppress(errors.SandlotError):
            await self._conn._send(self.id, FrameKind.EVENT, {"type": "ack", "n": n})

    async def send(self, data: bytes | bytearray | memoryview, chunk: int = p.CHUNK) -> None:
        """Send input (DATA frames of up to `chunk` bytes) on this stream: views of `data`, not copies."""
        with memoryview(data) as view:
            for i in range(0, len(view), chunk):
                await self._conn._send(self.id, FrameKind.DATA, {"fd": 0}, view[i : i + chunk])

    async def end_input(self) -> None:
        await self._conn._send(self.id, FrameKind.END, {})

    async def cancel(self) -> None:
        if not self.done:
            with contextlib.suppress(errors.SandlotError):
                await self._conn._send(self.id, FrameKind.CANCEL, {})

    async def frames(self) -> AsyncIterator[Frame]:
        """Yield DATA and EVENT frames; on END store the result or raise its error."""
        while not self.done:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                self.done = True
                raise item
            if item.kind is FrameKind.END:
                self.done = True
                self._conn._streams.pop(self.id, None)
                self._finish(item.header)
                return
            yield item

    def _finish(self, header: dict[str, Any]) -> None:
        if header.get("ok"):
            result = header.get("result")
            self.result = result if isinstance(result, dict) else {}
            return
        err = header.get("error") if isinstance(header.get("error"), dict) else {}
        assert isinstance(err, dict)
        code = str(err.get("code", "internal"))
        message = str(err.get("message", "the agent reported an error"))[:4096]
        path = err.get("path") if isinstance(err.get("path"), str) else None
        raise errors.error_from_code(code, message, path=path, agent=True)

    async def wait(self) -> dict[str, Any]:
        async for _ in self.frames():
            pass
        assert self.result is not None
        return self.result


class RelayStream(Stream):
    """A stream whose frames are handed, as they come, to `deliver` (a bridge forwarding them
    elsewhere, see agent/relay.py) rather than queued; it is forgotten once it ends."""

    def __init__(
        self, conn: AgentConnection, stream_id: int, method: str, deliver: Callable[[Frame | BaseException], None]
    ) -> None:
        super().__init__(conn, stream_id, method)
        self._relay = deliver

    def _deliver(self, item: Frame | BaseException) -> None:
        if isinstance(item, BaseException) or item.kind is FrameKind.END:
            self._conn._streams.pop(self.id, None)
            self.done = True
        self._relay(item)

    async def send_frame(self, kind: FrameKind, header: dict[str, Any], payload: bytes = b"") -> None:
        """Pass a frame of the far end's on to the agent, on this stream."""
        await self._conn._send(self.id, kind, header, payload)

    def forget(self) -> None:
        self._conn._streams.pop(self.id, None)
        self.done = True


def _note_refusals(header: dict[str, Any], before: int, now: int) -> None:
    """Mark a process's exit `pids_limit_hit` when the sandbox's pids limit refused forks meanwhile."""
    result = header.get("result")
    if isinstance(result, dict) and now > before and not result.get("pids_limit_hit"):
        result["pids_limit_hit"] = True


class _AgentLink(asyncio.BufferedProtocol):
    """One connection of the agent's: received straight into a buffer kept for the connection's
    life and decoded there (a payload is copied once, into its Frame), frames dispatched to the
    AgentConnection; `write` and `drain` for the other way.

    A StreamReader copied each byte three times more (its buffer, `read`, the decoder's buffer),
    the largest cost on the node's side of a file read."""

    def __init__(self, conn: AgentConnection) -> None:
        self._conn = conn
        self._buf = bytearray(2 * RECV_MIN)
        self._start = 0  # decoded up to here
        self._end = 0  # received up to here
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        #: done once the connection is lost
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is one, but not a subclass
        self._conn._connected_link(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._start == self._end:
            self._start = self._end = 0
        elif len(self._buf) - self._end < RECV_MIN:  # move the incomplete frame's part to the front
            pending = self._end - self._start
            need = RECV_MIN + pending
            if pending >= 4:  # its length is known: make room for all of it (a frame is up to MAX_FRAME)
                need = max(need, 2 * (4 + int.from_bytes(self._buf[self._start : self._start + 4], "big")))
            buf = self._buf if len(self._buf) >= need else bytearray(need)
            buf[:pending] = self._buf[self._start : self._end]
            self._buf, self._start, self._end = buf, 0, pending
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        frames: list[Frame] = []
        try:
            self._start = p.decode_frames(self._buf, self._start, self._end, frames)
        except p.ProtocolError as exc:
            self._conn.closed_reason = f"protocol error from agent: {exc}"
            assert self._transport is not None
            self._transport.close()
        for frame in frames:
            self._conn._dispatch(frame)

    def eof_received(self) -> bool:
        return False  # close the connection

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._conn._lost_link(self, None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def write(self, data: bytes | memoryview) -> None:
        if self._transport is None or self.lost.done():
            raise ConnectionResetError("the connection to the agent was lost")
        self._transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport holds more than its high-water mark of unsent bytes."""
        while self._paused and not self.lost.done():
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self.lost.done():
            raise ConnectionResetError("the connection to the agent was lost")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def close_after_peer(self, timeout: float) -> bool:
        """Half-close, then wait up to `timeout` for the agent to close its end; whether it did."""
        if self._transport is not None and not self.lost.done() and self._transport.can_write_eof():
            self._transport.write_eof()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        self.close()
        return self.lost.done()


class AgentConnection:
    """Listens on `socket_path` and keeps the agent's current connection."""

    def __init__(self, socket_path: str, sandbox_id: str, response_timeout: float = RESPONSE_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.sandbox_id = sandbox_id
        self.response_timeout = response_timeout
        self._server: asyncio.AbstractServer | None = None
        self._writer: _AgentLink | None = None
        self._connected = asyncio.Event()
        self._streams: dict[int, Stream] = {}
        self._ids = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self.hello: p.Hello | None = None
        self.closed_reason: str | None = None
        #: processes the agent killed for the memory limit, and trees for the pids limit
        #: (counted from their exits as they pass, for the node's metrics)
        self.oom_kills = 0
        self.pids_limit_hits = 0
        #: the host's count of forks its pids limit refused the sandbox (node/cgroups.py), where it
        #: has one: a process that ends after the count rose is reported `pids_limit_hit` even when
        #: the agent killed nothing (under crun the cgroup refuses the forks, and a fork bomb may
        #: fizzle out, or its shell give up, by itself)
        self.pids_refusals: Callable[[], int] | None = None

    async def listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _AgentLink(self), path=self.socket_path)
        os.chmod(self.socket_path, 0o600)

    def _connected_link(self, link: _AgentLink) -> None:
        if self._writer is not None:  # a redial replaces a half-dead connection
            self._drop("the agent reconnected")
            self._writer.close()
        self._writer = link

    def _lost_link(self, link: _AgentLink, reason: str | None) -> None:
        if reason is not None:
            self.closed_reason = reason
        if self._writer is link:
            self._writer = None
            self._connected.clear()
            self._drop(self.closed_reason or "the connection to the agent was lost")

    def _dispatch(self, frame: Frame) -> None:
        if frame.stream == 0:
            if frame.header.get("type") == "hello":
                try:
                    self.hello = p.Hello.model_validate(frame.header)
                except ValidationError:
                    return
                self._connected.set()
            return
        stream = self._streams.get(frame.stream)
        if frame.kind is FrameKind.END:
            if stream is not None and stream.refusals_at is not None and self.pids_refusals is not None:
                _note_refusals(frame.header, stream.refusals_at, self.pids_refusals())
            self._count_limit_kills(frame.header)
        if stream is not None:
            stream._deliver(frame)

    def _count_limit_kills(self, header: dict[str, Any]) -> None:
        result = header.get("result")
        if isinstance(result, dict):
            self.oom_kills += result.get("oom_killed") is True
            self.pids_limit_hits += result.get("pids_limit_hit") is True

    def _drop(self, reason: str) -> None:
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream._deliver(errors.SandboxStateError(f"sandbox {self.sandbox_id}: {reason}"))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> p.Hello:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise errors.TimeoutError_(
                f"sandbox {self.sandbox_id}: the agent did not connect within {timeout:.0f}s"
            ) from None
        assert self.hello is not None
        return self.hello

    async def _send(
        self, stream: int, kind: FrameKind, header: dict[str, Any], payload: bytes | memoryview = b""
    ) -> None:
        writer = self._writer
        if writer is None:
            raise errors.SandboxStateError(f"sandbox {self.sandbox_id}: the agent is not connected")
        async with self._write_lock:
            try:
                if len(payload) < _INLINE_PAYLOAD:
                    writer.write(p.encode_frame(stream, kind, header, bytes(payload)))
                else:  # a large payload goes as it is, after its frame's head: no copy into one frame
                    writer.write(p.encode_head(stream, kind, header, len(payload)))
                    writer.write(payload)
                await writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise errors.SandboxStateError(
                    f"sandbox {self.sandbox_id}: the agent connection broke: {exc}"
                ) from None

    async def answered(self, waiting: Awaitable[T]) -> T:
        """`waiting` (a first answer of the agent), or AgentUnresponsiveError when the agent is not alive."""
        task = asyncio.ensure_future(waiting)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.response_timeout)
                if done:
                    return task.result()
                if not await self._pings():
                    raise errors.AgentUnresponsiveError(
                        f"sandbox {self.sandbox_id}: its agent answered nothing for {2 * self.response_timeout:.0f} s "
                        "(it was stopped, killed or is wedged); kill the sandbox (or retry, on an overloaded host)"
                    )
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _pings(self) -> bool:
        try:
            stream = await self.open(p.Method.PING, p.Empty())
        except errors.SandlotError:
            return False
        try:
            await asyncio.wait_for(stream.wait(), self.response_timeout)
        except (TimeoutError, errors.SandlotError):
            self._streams.pop(stream.id, None)
            return False
        return True

    def _note_start(self, stream: Stream) -> None:
        if stream.method == p.Method.PROCESS_START and self.pids_refusals is not None:
            stream.refusals_at = self.pids_refusals()

    async def open(self, method: str, params: BaseModel, payload: bytes = b"") -> Stream:
        stream = Stream(self, next(self._ids), method)
        self._streams[stream.id] = stream
        self._note_start(stream)
        try:
            await self._send(stream.id, FrameKind.OPEN, {"method": method, "params": params.model_dump()}, payload)
        except BaseException:
            self._streams.pop(stream.id, None)
            raise
        return stream

    async def relay(
        self, method: str, params: dict[str, Any], payload: bytes, deliver: Callable[[Frame | BaseException], None]
    ) -> RelayStream:
        """OPEN a stream with the far end's method and params, its frames going to `deliver` unchanged."""
        stream = RelayStream(self, next(self._ids), method, deliver)
        self._streams[stream.id] = stream
        self._note_start(stream)
        try:
            await self._send(stream.id, FrameKind.OPEN, {"method": method, "params": params}, payload)
        except BaseException:
            self._streams.pop(stream.id, None)
            raise
        return stream

    async def close(self, wait_agent_s: float = 0.0) -> bool:
        """Stop listening and close the agent's connection. With `wait_agent_s`, the node's end is
        half-closed first, and the agent (which closes its end on the end of its input) is waited
        for that long; returns whether nothing of the connection is left open on the agent's side."""
        self._drop("the sandbox was closed")
        if self._server is not None:
            self._server.close()
            self._server = None
        closed = True
        if self._writer is not None:
            writer, self._writer = self._writer, None
            if wait_agent_s > 0:
                closed = await writer.close_after_peer(wait_agent_s)
            else:
                writer.close()
        self._connected.clear()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        return closed


def _validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors.InternalError(f"the agent sent a malformed {model.__name__}: {exc.errors()[0]['msg']}") from None


class ProcessStream:
    """Output of a process: `(fd, bytes)` pairs, then `exit` holds the ProcessExit."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self.pid: int | None = None
        self.exit: p.ProcessExit | None = None

    async def wait_started(self) -> int:
        """Wait for the started event (or the error that stopped the start)."""
        while self.pid is None:
            item = await self._stream._queue.get()
            if isinstance(item, BaseException):
                self._stream.done = True
                raise item
            if item.kind is FrameKind.EVENT and item.header.get("type") == "started":
                self.pid = _validate(p.ProcessStarted, item.header).pid
            elif item.kind is FrameKind.END:
                self._stream.done = True
                self._stream._conn._streams.pop(self._stream.id, None)
                self._stream._finish(item.header)
                raise errors.InternalError("the agent ended a process stream before starting it")
            else:  # output can only follow the start; keep it for output()
                self._early.append(item)
        return self.pid

    _early: list[Frame]

    def __aiter__(self) -> AsyncIterator[tuple[int, bytes]]:
        return self.output()

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        for frame in self.__dict__.pop("_early", []):
            yield int(frame.header.get("fd", 1)), frame.payload
        async for frame in self._stream.frames():
            if frame.kind is FrameKind.DATA:
                fd = frame.header.get("fd", 1)
                yield (fd if fd in (1, 2) else 1), frame.payload
            elif frame.kind is FrameKind.EVENT and frame.header.get("type") == "started":
                self.pid = _validate(p.ProcessStarted, frame.header).pid
        assert self._stream.result is not None
        self.exit = _validate(p.ProcessExit, self._stream.result)

    async def send_stdin(self, data: bytes) -> None:
        await self._stream.send(data)

    async def close_stdin(self) -> None:
        await self._stream.end_input()

    async def detach(self) -> None:
        """Stop following the output; the process keeps running."""
        await self._stream.cancel()


class WatchStream:
    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    async def events(self) -> AsyncIterator[p.WatchEvent]:
        async for frame in self._stream.frames():
            if frame.kind is FrameKind.EVENT and frame.header.get("type") == "fs":
                yield _validate(p.WatchEvent, frame.header)

    async def close(self) -> None:
        await self._stream.cancel()


class PortTunnel:
    """A TCP connection to a port inside the sandbox (`port.connect`), as a byte stream.

    `send` writes to it, `end_input` half-closes it, `received()` yields what it
    sends until it closes, `close` drops it. Opened by `AgentClient.connect_port`.
    """

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    async def _wait_connected(self) -> None:
        item = await self._stream._queue.get()
        if isinstance(item, BaseException):
            self._stream.done = True
            raise item
        if item.kind is FrameKind.END:
            self._stream.done = True
            self._stream._conn._streams.pop(self._stream.id, None)
            self._stream._finish(item.header)  # raises the agent's error (port_not_listening, ...)
            raise errors.InternalError("the agent ended a port stream before connecting")
        if not (item.kind is FrameKind.EVENT and item.header.get("type") == "connected"):
            raise errors.InternalError(f"the agent sent {item.kind.name} before connecting a port")

    async def send(self, data: bytes) -> None:
        await self._stream.send_windowed(data)

    async def end_input(self) -> None:
        await self._stream.end_input()

    async def received(self) -> AsyncIterator[bytes]:
        """What the sandbox's side sends, acknowledged as it is consumed (so the agent keeps sending).

        Acknowledgements are batched (a quarter window at a time): one frame per
        small answer was a write to the agent's socket per request, the largest
        single cost of a proxied request. The agent never stalls on the batch:
        what is consumed but not yet acknowledged stays under a quarter window.
        """
        pending = 0
        async for frame in self._stream.frames():
            if frame.kind is FrameKind.DATA and frame.payload:
                yield frame.payload
                pending += len(frame.payload)
                if pending >= ACK_BATCH:
                    await self._stream.ack(pending)
                    pending = 0

    async def close(self) -> None:
        await self._stream.cancel()

    @property
    def closed(self) -> bool:
        """The sandbox's side closed it (or the agent's connection broke)."""
        s = self._stream
        return s.done or s._ended or s._broken is not None


class AgentClient:
    """Typed calls over an AgentConnection; one method per protocol method."""

    def __init__(self, conn: AgentConnection) -> None:
        self.conn = conn

    async def _call(self, method: str, params: BaseModel, result: type[M], payload: bytes = b"") -> M:
        stream = await self.conn.open(method, params, payload)
        return _validate(result, await self.conn.answered(stream.wait()))

    async def ping(self) -> p.Hello:
        return await self._call(p.Method.PING, p.Empty(), p.Hello)

    async def check_limits(self) -> None:
        """Wake the agent's limit watchdog (the node saw the sandbox's host cgroup grow)."""
        await self._call(p.Method.LIMITS_CHECK, p.Empty(), p.Empty)

    async def listeners(self) -> list[p.Listener]:
        """The sandbox's listening TCP sockets, each with a process that holds it."""
        return (await self._call(p.Method.NET_LISTENERS, p.Empty(), p.ListenersResult)).listeners

    # -- processes
    async def start(self, params: p.ProcessStartParams) -> ProcessStream:
        proc = ProcessStream(await self.conn.open(p.Method.PROCESS_START, params))
        proc._early = []
        await self.conn.answered(proc.wait_started())
        return proc

    async def connect(self, pid: int) -> ProcessStream:
        proc = ProcessStream(await self.conn.open(p.Method.PROCESS_CONNECT, p.ProcessSelector(pid=pid)))
        proc.pid = pid
        proc._early = []
        return proc

    async def list_processes(self) -> list[p.ProcessInfo]:
        return (await self._call(p.Method.PROCESS_LIST, p.Empty(), p.ProcessListResult)).processes

    async def send_input(self, pid: int, data: bytes, eof: bool = False) -> None:
        if not data and not eof:
            return
        for i in range(0, max(len(data), 1), p.CHUNK):
            last = i + p.CHUNK >= len(data)
            params = p.ProcessInputParams(pid=pid, eof=eof and last)
            await self._call(p.Method.PROCESS_INPUT, params, p.Empty, data[i : i + p.CHUNK])

    async def signal(self, pid: int, signal: int, group: bool = True) -> None:
        await self._call(p.Method.PROCESS_SIGNAL, p.ProcessSignalParams(pid=pid, signal=signal, group=group), p.Empty)

    async def resize(self, pid: int, rows: int, cols: int) -> None:
        await self._call(p.Method.PROCESS_RESIZE, p.ProcessResizeParams(pid=pid, rows=rows, cols=cols), p.Empty)

    # -- files
    async def read(self, path: str, offset: int = 0, length: int = -1) -> AsyncIterator[bytes]:
        """The file's bytes as they come; the agent sends at most READ_WINDOW ahead of what was taken
        (so a slow consumer holds the node's memory to that, whatever the file's size)."""
        params = p.ReadParams(path=path, offset=offset, length=length, window=p.READ_WINDOW)
        stream = await self.conn.open(p.Method.FS_READ, params)
        pending = 0
        try:
            async for frame in stream.frames():
                if frame.kind is FrameKind.DATA:
                    yield frame.payload
                    pending += len(frame.payload)
                    if pending >= p.READ_WINDOW // 4:
                        await stream.ack(pending)
                        pending = 0
        finally:
            await stream.cancel()

    async def write(
        self,
        path: str,
        data: bytes | AsyncIterable[bytes],
        *,
        mode: int | None = None,
        append: bool = False,
        make_parents: bool = True,
        user: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> p.FileEntry:
        """Write a file. `metadata` replaces its `user.e2b.*` extended attributes (E2B's file metadata;
        {} clears them); None leaves them as they are."""
        params = p.WriteParams(
            path=path, mode=mode, append=append, make_parents=make_parents, user=user, metadata=metadata
        )
        stream = await self.conn.open(p.Method.FS_WRITE, params)
        return _validate(p.FileEntry, await self._feed(stream, data))

    async def _feed(self, stream: Stream, data: bytes | AsyncIterable[bytes]) -> dict[str, Any]:
        # The agent may fail early (a directory, no space): race the upload
        # against the stream's end so an error never waits for the whole input.
        async def pump() -> None:
            if isinstance(data, (bytes, bytearray, memoryview)):
                await stream.send(data, p.FILE_CHUNK)
            else:
                # Small pieces (an HTTP body arrives 64 KB at a time) gathered into frames of FILE_CHUNK:
                # each frame is a write to the agent's socket and a read in gVisor.
                held: list[bytes] = []
                size = 0
                async for chunk in data:
                    held.append(chunk)
                    size += len(chunk)
                    if size >= p.FILE_CHUNK:
                        await stream.send(b"".join(held), p.FILE_CHUNK)
                        held, size = [], 0
                if held:
                    await stream.send(b"".join(held), p.FILE_CHUNK)
            await stream.end_input()

        pumper = asyncio.ensure_future(pump())
        try:
            result = await stream.wait()
        finally:
            if not pumper.done():
                pumper.cancel()
            with contextlib.suppress(asyncio.CancelledError, errors.SandlotError):
                await pumper
        return result

    async def list(self, path: str, depth: int = 1, *, metadata: bool = False) -> list[p.FileEntry]:
        params = p.ListParams(path=path, depth=depth, metadata=metadata)
        return (await self._call(p.Method.FS_LIST, params, p.ListResult)).entries

    async def stat(self, path: str, *, metadata: bool = False) -> p.FileEntry:
        return await self._call(p.Method.FS_STAT, p.StatParams(path=path, metadata=metadata), p.FileEntry)

    async def exists(self, path: str) -> bool:
        return (await self._call(p.Method.FS_EXISTS, p.PathParams(path=path), p.ExistsResult)).exists

    async def mkdir(self, path: str, *, parents: bool = True, mode: int = 0o755, user: str | None = None) -> bool:
        params = p.MkdirParams(path=path, parents=parents, mode=mode, user=user)
        return (await self._call(p.Method.FS_MKDIR, params, p.MkdirResult)).created

    async def rename(self, src: str, dst: str, *, metadata: bool = False) -> p.FileEntry:
        return await self._call(p.Method.FS_RENAME, p.RenameParams(src=src, dst=dst, metadata=metadata), p.FileEntry)

    async def remove(self, path: str, recursive: bool = True) -> None:
        await self._call(p.Method.FS_REMOVE, p.RemoveParams(path=path, recursive=recursive), p.Empty)

    async def tar_read(self, path: str) -> AsyncIterator[bytes]:
        stream = await self.conn.open(p.Method.FS_TAR_READ, p.PathParams(path=path))
        try:
            async for frame in stream.frames():
                if frame.kind is FrameKind.DATA:
                    yield frame.payload
        finally:
            await stream.cancel()

    async def tar_write(self, path: str, data: bytes | AsyncIterable[bytes], user: str | None = None) -> p.TarResult:
        stream = await self.conn.open(p.Method.FS_TAR_WRITE, p.TarWriteParams(path=path, user=user))
        return _validate(p.TarResult, await self._feed(stream, data))

    async def connect_port(self, port: int) -> PortTunnel:
        """Connect to 127.0.0.1:`port` inside the sandbox; PortNotListeningError when nothing accepts."""
        tunnel = PortTunnel(await self.conn.open(p.Method.PORT_CONNECT, p.PortConnectParams(port=port)))
        await self.conn.answered(tunnel._wait_connected())
        return tunnel

    async def watch(self, path: str, recursive: bool = False, *, entries: bool = False) -> WatchStream:
        """Watch a directory; returns once the watch is in place, so no later change is missed.
        With `entries`, each event carries the entry's FileEntry (metadata included) while it exists."""
        params = p.WatchParams(path=path, recursive=recursive, entries=entries)
        stream = await self.conn.open(p.Method.FS_WATCH, params)
        async for frame in stream.frames():  # raises the agent's error (not found, ...) if any
            if frame.kind is FrameKind.EVENT and frame.header.get("type") == "ready":
                break
        return WatchStream(stream)
