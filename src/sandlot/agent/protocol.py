"""The node <-> agent wire protocol: framing, method names and typed models.

This module is the single source of truth for the protocol. The Go agent's
`agent/protocol_gen.go` is generated from it by `scripts/gen_agent_protocol.py`
(a unit test fails when the generated file is stale), so both ends share one
definition.

Transport: one Unix stream socket per sandbox. The node listens on
`<run dir>/agent.sock`; the agent (the sandbox's init) dials it from inside the
sandbox as `/.sandlot/run/agent.sock` and redials whenever the connection drops,
so a restarted node finds its sandboxes again.

Frame layout (all integers big-endian):

    u32  length of everything after this field
    u32  stream id
    u8   kind (see FrameKind)
    u32  header length H
    H    header: a JSON object (UTF-8)
    ...  payload: raw bytes (may be empty)

Streams are opened by the node with an OPEN frame whose header is
`{"method": ..., "params": {...}}` (payload may carry bytes, e.g. stdin data).
The agent answers on the same stream id with any number of DATA / EVENT frames
and exactly one END frame whose header is `{"ok": true, "result": {...}}` or
`{"ok": false, "error": {"code": ..., "message": ..., "path": ...}}`.
The node may send DATA frames (input) on a stream it opened, then END (`{}`) to
say "no more input", or CANCEL to abandon the stream (the agent then sends END
promptly; a process keeps running when its output stream is cancelled).

Stream 0 is reserved: right after connecting, the agent sends EVENT on stream 0
with a `Hello` header.
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "CHUNK",
    "FILE_CHUNK",
    "MAX_FRAME",
    "PROTOCOL_VERSION",
    "ErrorCode",
    "Frame",
    "FrameDecoder",
    "FrameKind",
    "Method",
    "decode_frames",
    "encode_frame",
    "encode_head",
]

PROTOCOL_VERSION = 1
#: Largest frame either side accepts; bigger frames are a protocol error.
MAX_FRAME = 8 * 1024 * 1024
#: Preferred payload size for streamed data (files, tar streams).
CHUNK = 256 * 1024
#: Payload size of a file's DATA frames, both ways (fs.read, fs.write, fs.tar_write): under gVisor
#: each frame is a trip through the Sentry on both of its ends, so file data goes in large ones.
FILE_CHUNK = 4 * CHUNK

_PREFIX = struct.Struct(">IIBI")  # length, stream, kind, header length


class FrameKind(enum.IntEnum):
    OPEN = 1
    DATA = 2
    EVENT = 3
    END = 4
    CANCEL = 5


class Frame:
    """One decoded frame. `header` is the parsed JSON object."""

    __slots__ = ("header", "kind", "payload", "stream")

    def __init__(self, stream: int, kind: FrameKind, header: dict[str, Any], payload: bytes = b"") -> None:
        self.stream = stream
        self.kind = kind
        self.header = header
        self.payload = payload

    def __repr__(self) -> str:
        return (
            f"Frame(stream={self.stream}, kind={self.kind.name}, header={self.header!r}, payload={len(self.payload)}B)"
        )


def encode_head(stream: int, kind: FrameKind, header: dict[str, Any] | None, payload_len: int) -> bytes:
    """A frame up to its payload: sent before a payload written as it is (no copy of a large one)."""
    head = json.dumps(header or {}, separators=(",", ":")).encode()
    length = 9 + len(head) + payload_len
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    return _PREFIX.pack(length, stream, int(kind), len(head)) + head


def encode_frame(stream: int, kind: FrameKind, header: dict[str, Any] | None = None, payload: bytes = b"") -> bytes:
    return encode_head(stream, kind, header, len(payload)) + payload


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame."""


def decode_frames(src: bytes | bytearray, pos: int, end: int, frames: list[Frame]) -> int:
    """Append the complete frames in `src[pos:end]` to `frames`; return where the first incomplete
    one starts (`end` when none is). Each payload is copied once, out of `src`."""
    with memoryview(src) as view:
        while end - pos >= 4:
            (length,) = struct.unpack_from(">I", src, pos)
            if length < 9 or length > MAX_FRAME:
                raise ProtocolError(f"bad frame length {length}")
            if end - pos < 4 + length:
                break
            _, stream, kind, hlen = _PREFIX.unpack_from(src, pos)
            if hlen > length - 9:
                raise ProtocolError(f"header length {hlen} exceeds frame length {length}")
            try:
                fkind = FrameKind(kind)
            except ValueError:
                raise ProtocolError(f"unknown frame kind {kind}") from None
            start = pos + _PREFIX.size
            try:
                header = json.loads(bytes(view[start : start + hlen]) or b"{}")
            except ValueError as exc:
                raise ProtocolError(f"frame header is not JSON: {exc}") from None
            if not isinstance(header, dict):
                raise ProtocolError("frame header is not a JSON object")
            frames.append(Frame(stream, fkind, header, bytes(view[start + hlen : pos + 4 + length])))
            pos += 4 + length
    return pos


class FrameDecoder:
    """Incremental decoder: feed bytes, get complete frames (what arrives is decoded in place;
    only the tail of an incomplete frame is kept for the next feed)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        if self._buf:
            self._buf += data
            del self._buf[: decode_frames(self._buf, 0, len(self._buf), frames)]
        else:
            pos = decode_frames(data, 0, len(data), frames)
            self._buf = bytearray(data[pos:])
        return frames


class Method:
    """Method names carried in OPEN frames."""

    PING = "ping"
    PROCESS_START = "process.start"
    PROCESS_LIST = "process.list"
    PROCESS_CONNECT = "process.connect"
    PROCESS_INPUT = "process.input"
    PROCESS_SIGNAL = "process.signal"
    PROCESS_RESIZE = "process.resize"
    FS_READ = "fs.read"
    FS_WRITE = "fs.write"
    FS_LIST = "fs.list"
    FS_STAT = "fs.stat"
    FS_EXISTS = "fs.exists"
    FS_MKDIR = "fs.mkdir"
    FS_RENAME = "fs.rename"
    FS_REMOVE = "fs.remove"
    FS_TAR_READ = "fs.tar_read"
    FS_TAR_WRITE = "fs.tar_write"
    FS_WATCH = "fs.watch"
    PORT_CONNECT = "port.connect"
    #: Wake the agent's limit watchdog now: the node saw the sandbox's host cgroup grow.
    LIMITS_CHECK = "limits.check"
    #: The sandbox's listening TCP sockets and the processes holding them (before a memory save).
    NET_LISTENERS = "net.listeners"


class ErrorCode:
    """Error codes in END frames. Each maps to one exception in sandlot.errors."""

    NOT_FOUND = "not_found"  # a path does not exist
    IS_A_DIRECTORY = "is_a_directory"
    NOT_A_DIRECTORY = "not_a_directory"
    EXISTS = "exists"
    PERMISSION_DENIED = "permission_denied"
    NOT_EMPTY = "not_empty"
    NO_SPACE = "no_space"
    COMMAND_NOT_FOUND = "command_not_found"
    PROCESS_NOT_FOUND = "process_not_found"
    USER_NOT_FOUND = "user_not_found"
    INVALID = "invalid_argument"
    LIMIT = "limit_reached"  # e.g. the pids limit stopped a spawn
    PORT_NOT_LISTENING = "port_not_listening"  # port.connect: nothing accepts on that port
    INTERNAL = "internal"


class _Model(BaseModel):
    # The agent is untrusted: unknown fields are ignored, known ones validated.
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- agent config


class AgentConfig(_Model):
    """Written by the node to `/.sandlot/run/config.json` before the sandbox starts."""

    sandbox_id: str
    env: dict[str, str] = {}
    cwd: str = "/"
    user: str = "root"
    hostname: str = "sandbox"
    memory_limit_bytes: int = 0  # 0 = none; the agent's OOM watchdog enforces it
    pids_limit: int = 0  # 0 = none; RLIMIT_NPROC of spawned processes, and the agent's watchdog
    socket_path: str = "/.sandlot/run/agent.sock"
    output_buffer_bytes: int = 1 << 20  # per process, kept for reconnects
    # gVisor: the agent (init) mounts /dev and /dev/shm as tmpfs of these sizes (see go/devfs.go); 0 = as made
    dev_bytes: int = 0
    shm_bytes: int = 0
    # The OS threads the agent starts at once and keeps (0 = as its runtime makes them): where the
    # sandbox's pids limit counts them with its processes (crun), a fork bomb could otherwise
    # refuse the agent's Go runtime a thread, and it dies when one is refused (go/threads.go)
    reserve_threads: int = 0


class Hello(_Model):
    type: Literal["hello"] = "hello"
    version: int
    agent_pid: int
    started_at_ms: int


# ---------------------------------------------------------------- processes


class PtySize(_Model):
    rows: int = 24
    cols: int = 80


class ProcessStartParams(_Model):
    """Start a process. Exactly one of `argv` and `cmd` (run by /bin/sh -c)."""

    argv: list[str] | None = None
    cmd: str | None = None
    env: dict[str, str] = {}
    cwd: str | None = None  # default: AgentConfig.cwd
    user: str | None = None  # name or numeric uid; default: AgentConfig.user
    stdin: bool = False  # True: the node streams DATA frames then END as stdin
    pty: PtySize | None = None  # run on a new pseudo-terminal (output on fd 1)
    timeout_ms: int = 0  # 0 = none; on expiry: SIGKILL to the process group
    tag: str | None = None  # free-form label shown by process.list


class ProcessStarted(_Model):
    """EVENT on a process.start stream once the process exists."""

    type: Literal["started"] = "started"
    pid: int


class ProcessExit(_Model):
    """END result of process.start / process.connect."""

    pid: int
    exit_code: int | None = None  # None when killed by a signal
    signal: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    pids_limit_hit: bool = False  # its process tree outgrew the pids limit and was killed


class ProcessInfo(_Model):
    pid: int
    argv: list[str]
    cmd: str | None = None
    cwd: str
    user: str
    tag: str | None = None
    pty: bool = False
    running: bool = True
    started_at_ms: int = 0
    exit: ProcessExit | None = None


class ProcessListResult(_Model):
    processes: list[ProcessInfo]


class ProcessSelector(_Model):
    pid: int


class ProcessInputParams(_Model):
    """OPEN payload is the bytes to write; `eof` closes stdin afterwards."""

    pid: int
    eof: bool = False


class ProcessSignalParams(_Model):
    pid: int
    signal: int = 15
    group: bool = True  # signal the whole process group


class ProcessResizeParams(_Model):
    pid: int
    rows: int
    cols: int


# ---------------------------------------------------------------- files


class FileEntry(_Model):
    name: str
    path: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int  # permission bits
    uid: int
    gid: int
    owner: str = ""
    group: str = ""
    mtime_ms: int
    symlink_target: str | None = None  # a symlink's target, as written
    #: a symlink's target: its absolute path with every link resolved, and its type (None: dangling)
    link_path: str | None = None
    link_type: Literal["file", "dir", "other"] | None = None
    #: E2B's file metadata, when asked for: the `user.e2b.*` extended attributes, prefix stripped
    metadata: dict[str, str] | None = None
    #: the file's filesystem holds no extended attributes here (gVisor's 9p): the node keeps them
    metadata_unsupported: bool = False


class PathParams(_Model):
    path: str


class StatParams(_Model):
    path: str
    metadata: bool = False  # read the entry's metadata (FileEntry.metadata)


class ReadParams(_Model):
    path: str
    offset: int = 0
    length: int = -1  # -1 = to the end
    # Flow control: with window > 0 the agent keeps at most `window` bytes of DATA
    # unacknowledged (PortAck events from the node, as for ports), so a slow reader
    # never makes the node hold the file; 0 (an older node): it sends without waiting.
    window: int = 0


#: The window a node asks for when it reads a file (see ReadParams.window).
READ_WINDOW = 4 << 20


class ReadResult(_Model):
    size: int  # bytes sent


class WriteParams(_Model):
    """The node sends the content as DATA frames, then END."""

    path: str
    mode: int | None = None  # permission bits for a new file; default 0o644
    append: bool = False
    make_parents: bool = True
    user: str | None = None  # owner of created files and directories
    #: replace the file's metadata (`user.e2b.*` xattrs) with these; None leaves them as they are
    metadata: dict[str, str] | None = None


class ListParams(_Model):
    path: str
    depth: int = 1
    metadata: bool = False  # read each entry's metadata


class ListResult(_Model):
    entries: list[FileEntry]


class ExistsResult(_Model):
    exists: bool


class MkdirParams(_Model):
    path: str
    parents: bool = True
    mode: int = 0o755
    user: str | None = None


class MkdirResult(_Model):
    created: bool


class RenameParams(_Model):
    src: str
    dst: str
    metadata: bool = False  # read the moved entry's metadata


class RemoveParams(_Model):
    path: str
    recursive: bool = True


class TarWriteParams(_Model):
    """Extract a tar stream (DATA frames, then END) under `path`."""

    path: str
    user: str | None = None


class TarResult(_Model):
    entries: int
    bytes: int


class WatchParams(_Model):
    path: str
    #: directories created later (or moved in) are watched too, and what they already hold when
    #: the watch reaches them is reported as created
    recursive: bool = False
    entries: bool = False  # each event carries the entry's FileEntry (with its metadata), when it still exists


class WatchReady(_Model):
    """EVENT on an fs.watch stream once the watch is in place (events before it are not seen)."""

    type: Literal["ready"] = "ready"


class WatchEvent(_Model):
    """EVENT on an fs.watch stream."""

    type: Literal["fs"] = "fs"
    op: Literal["create", "write", "remove", "rename", "chmod"]
    path: str
    entry: FileEntry | None = None


# ---------------------------------------------------------------- ports


class PortConnectParams(_Model):
    """Open a TCP connection to 127.0.0.1:port inside the sandbox and relay it.

    The agent answers with a `PortConnected` EVENT, then relays: the node's DATA
    frames are written to the connection, its END half-closes it (shutdown
    write); what the connection sends comes back as DATA frames; when the
    sandbox side closes, the agent sends END (`PortClosed`). CANCEL drops it.
    Flow control: each side acknowledges the DATA it consumed with a `PortAck`
    EVENT; a sender keeps at most PORT_WINDOW bytes unacknowledged.
    Works in every network mode: the bytes travel over the agent's socket,
    never over a network between host and sandbox.
    """

    port: int


class PortConnected(_Model):
    type: Literal["connected"] = "connected"


#: Bytes of DATA a port stream's sender may have unacknowledged (each direction).
PORT_WINDOW = 1 << 20


class PortAck(_Model):
    type: Literal["ack"] = "ack"
    n: int  # bytes of DATA consumed
    frames: int = 1  # how many DATA frames those were (acknowledgements may be batched)


class PortClosed(_Model):
    bytes_in: int = 0  # node -> sandbox
    bytes_out: int = 0  # sandbox -> node


class Listener(_Model):
    """A listening TCP socket and one process that holds it."""

    pid: int
    command: str
    address: str
    port: int
    #: whether the process also holds an epoll instance (an event-loop server: asyncio, uvicorn,
    #: Node.js; its listening socket is almost surely in it)
    epoll: bool = False


class ListenersResult(_Model):
    listeners: list[Listener]


class Empty(_Model):
    pass


class ErrorBody(_Model):
    code: str
    message: str
    path: str | None = None


#: method -> (params model, result model); the generator emits Go types for all.
METHODS: dict[str, tuple[type[_Model], type[_Model]]] = {
    Method.PING: (Empty, Hello),
    Method.PROCESS_START: (ProcessStartParams, ProcessExit),
    Method.PROCESS_LIST: (Empty, ProcessListResult),
    Method.PROCESS_CONNECT: (ProcessSelector, ProcessExit),
    Method.PROCESS_INPUT: (ProcessInputParams, Empty),
    Method.PROCESS_SIGNAL: (ProcessSignalParams, Empty),
    Method.PROCESS_RESIZE: (ProcessResizeParams, Empty),
    Method.FS_READ: (ReadParams, ReadResult),
    Method.FS_WRITE: (WriteParams, FileEntry),
    Method.FS_LIST: (ListParams, ListResult),
    Method.FS_STAT: (StatParams, FileEntry),
    Method.FS_EXISTS: (PathParams, ExistsResult),
    Method.FS_MKDIR: (MkdirParams, MkdirResult),
    Method.FS_RENAME: (RenameParams, FileEntry),
    Method.FS_REMOVE: (RemoveParams, Empty),
    Method.FS_TAR_READ: (PathParams, TarResult),
    Method.FS_TAR_WRITE: (TarWriteParams, TarResult),
    Method.FS_WATCH: (WatchParams, Empty),
    Method.PORT_CONNECT: (PortConnectParams, PortClosed),
    Method.LIMITS_CHECK: (Empty, Empty),
    Method.NET_LISTENERS: (Empty, ListenersResult),
}

#: Models that are not params/results but travel on the wire too.
EXTRA_MODELS: list[type[_Model]] = [
    AgentConfig,
    ProcessStarted,
    WatchReady,
    WatchEvent,
    ErrorBody,
    PortConnected,
    PortAck,
]
