"""One sandbox on this node: its lifecycle state machine and its agent.

States (see DESIGN.md): starting -> running <-> paused -> hibernated -> running,
and any state -> killed. `TRANSITIONS` is the table; an illegal transition is a
bug (assert), a request in the wrong state is the caller's error
(SandboxStateError naming the state).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Unpack

from sandlot import errors
from sandlot.agent.client import AgentClient, AgentConnection, ProcessStream
from sandlot.agent.handle import SandboxAgent, StartOptions
from sandlot.node import cgroups
from sandlot.node.images import Image
from sandlot.node.network import SandboxNet
from sandlot.node.rootfs import WritableLayer
from sandlot.node.runtimes import Runtime
from sandlot.node.spec import SandboxSpec
from sandlot.results import CommandResult

__all__ = ["TRANSITIONS", "CommandResult", "Sandbox", "State"]


class State(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    HIBERNATED = "hibernated"
    KILLED = "killed"


TRANSITIONS: dict[State, set[State]] = {
    State.STARTING: {State.RUNNING, State.KILLED},
    State.RUNNING: {State.PAUSED, State.KILLED},
    State.PAUSED: {State.RUNNING, State.HIBERNATED, State.KILLED},
    State.HIBERNATED: {State.RUNNING, State.KILLED},
    State.KILLED: set(),
}


OutputCallback = Callable[[str], object]


class Sandbox:
    """A running sandbox. Created by `Node.create`; use `agent` for every operation."""

    def __init__(
        self,
        sandbox_id: str,
        spec: SandboxSpec,
        image: Image,
        runtime: Runtime,
        dir: Path,
        layer: WritableLayer,
        conn: AgentConnection,
    ) -> None:
        self.id = sandbox_id
        self.spec = spec
        self.image = image
        self.runtime = runtime
        self.dir = dir
        self.layer = layer
        self.conn = conn
        conn.pids_refusals = cgroups.refusals_counter(sandbox_id)
        self._agent = AgentClient(conn)
        self.state = State.STARTING
        self.created_at = time.time()
        self.exit_reason: str | None = None
        #: idle in the warm pool: nobody has seen it yet
        self.pooled = False
        #: bumped when the node restarts the runtime on purpose (a restore): old exit watchers stand down
        self.generation = 0
        #: its network namespace, interfaces and rules; None for network "none"
        self.net: SandboxNet | None = None
        #: while its memory is being saved: no new connection from the host to its address (memory_pause)
        self.saving_memory = False
        self._kill_lock = asyncio.Lock()
        #: called with its id whenever what `status` reports of it changes (its state, its network);
        #: the node sets it (`Node.on_change`)
        self.on_change: Callable[[str], None] = lambda _sid: None
        #: its data plane, as the node hands it to the API (one per sandbox: holders may key caches on it)
        self.handle = SandboxAgent(
            sandbox_id, lambda: self.agent, env=lambda: self.spec.env, gone=lambda: self.killed,
            address=self.direct_address,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<Sandbox {self.id} {self.runtime.name} {self.state.value}>"

    def direct_address(self) -> str | None:
        """Its address on its interface, for reaching its ports from the node without the agent.

        None without an interface (network "none"), unless it runs, and while
        its memory is being saved: a runtime that cannot save open connections
        (gVisor) has the host's connections to it reset first (memory_pause).
        """
        if self.net is None or self.state is not State.RUNNING or self.saving_memory:
            return None
        return self.net.address

    @property
    def killed(self) -> bool:
        return self.state is State.KILLED

    def transition(self, new: State) -> None:
        assert new in TRANSITIONS[self.state], f"illegal transition {self.state.value} -> {new.value} ({self.id})"
        self.state = new
        self.on_change(self.id)

    def require(self, *states: State) -> None:
        if self.state not in states:
            reason = f" ({self.exit_reason})" if self.exit_reason else ""
            raise errors.SandboxStateError(f"sandbox {self.id} is {self.state.value}{reason}")

    async def reconnect(self) -> None:
        """Listen for a new agent (the runtime is being booted again); the old connection is closed."""
        await self.conn.close()
        old = self.conn
        self.conn = AgentConnection(old.socket_path, self.id, old.response_timeout)
        self.conn.oom_kills, self.conn.pids_limit_hits = old.oom_kills, old.pids_limit_hits
        self.conn.pids_refusals = old.pids_refusals
        self._agent = AgentClient(self.conn)
        await self.conn.listen()

    @property
    def agent(self) -> AgentClient:
        """The agent client; raises SandboxStateError unless the sandbox runs."""
        self.require(State.RUNNING)
        return self._agent

    async def run(
        self,
        cmd: str | list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> CommandResult:
        """Run a command (argv list, or a shell string) to completion.

        Output is passed to the callbacks as it arrives and collected in the result.
        A non-zero exit is data, not an error; a signal death sets `signal`.
        Past `timeout` the command is killed and TimeoutError_ raised (its
        `result` holds the output so far).
        """
        proc = await self.start(cmd, env=env, cwd=cwd, user=user, stdin=stdin is not None, timeout=timeout)
        if stdin is not None:
            await proc.send_stdin(stdin)
            await proc.close_stdin()
        res = await collect(proc, on_stdout, on_stderr)
        if res.timed_out:
            raise errors.TimeoutError_(f"command timed out after {timeout}s and was killed: {cmd}", result=res)
        return res

    async def start(self, cmd: str | list[str], **options: Unpack[StartOptions]) -> ProcessStream:
        """Start a process and return its output stream (it can be detached from); see `StartOptions`."""
        return await self.handle.start(cmd, **options)


async def collect(
    proc: ProcessStream, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None
) -> CommandResult:
    """Drain a process's output into a CommandResult."""
    out: list[bytes] = []
    err: list[bytes] = []
    async for fd, data in decoded(proc, on_stdout, on_stderr):
        (out if fd == 1 else err).append(data)
    assert proc.exit is not None
    ex = proc.exit
    return CommandResult(
        stdout=b"".join(out).decode(errors="replace"),
        stderr=b"".join(err).decode(errors="replace"),
        exit_code=ex.exit_code,
        signal=ex.signal,
        oom_killed=ex.oom_killed,
        timed_out=ex.timed_out,
        pids_limit_hit=ex.pids_limit_hit,
        pid=ex.pid,
    )


async def decoded(
    proc: ProcessStream, on_stdout: OutputCallback | None, on_stderr: OutputCallback | None
) -> AsyncIterator[tuple[int, bytes]]:
    """Pass output through, calling the callbacks with text (UTF-8 split safely across chunks)."""
    import codecs

    decoders = {
        1: codecs.getincrementaldecoder("utf-8")("replace"),
        2: codecs.getincrementaldecoder("utf-8")("replace"),
    }
    async for fd, data in proc.output():
        cb = on_stdout if fd == 1 else on_stderr
        if cb is not None:
            text = decoders[fd].decode(data)
            if text:
                res = cb(text)
                if asyncio.iscoroutine(res):
                    await res
        yield fd, data
