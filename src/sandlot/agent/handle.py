"""One sandbox's data plane, whoever runs it: its agent client and what every process gets.

The API reaches a sandbox's processes, files, watches and ports through a
`SandboxAgent`. It does not care where the sandbox runs: the node that holds it
supplies `client`, a function answering the `AgentClient` that serves the
sandbox now. In-process that is the node's own connection to the agent (and it
raises SandboxStateError unless the sandbox runs); a remote node will supply one
whose transport is a WebSocket to its daemon, bridged to the agent's socket.
Either way every call is the agent protocol (`agent/protocol.py`).

Invariant: a node hands out one `SandboxAgent` per sandbox (per boot of it, in
the in-process case), so callers may key caches on its identity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict, Unpack

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.agent.client import AgentClient, ProcessStream

__all__ = ["SandboxAgent", "StartOptions", "process_params"]


class StartOptions(TypedDict, total=False):
    """How to start a process, beside its command."""

    #: added to (and overriding) the sandbox's own environment
    env: dict[str, str] | None
    cwd: str | None
    user: str | None
    #: keep its stdin open for input
    stdin: bool
    #: seconds until it is killed
    timeout: float | None
    #: run it on a terminal of this size
    pty: p.PtySize | None
    #: a label to find it by
    tag: str | None


def process_params(cmd: str | list[str], **options: Unpack[StartOptions]) -> p.ProcessStartParams:
    """The agent's `process.start` parameters for a command (argv list, or a shell string)."""
    if isinstance(cmd, str):
        params = p.ProcessStartParams(cmd=cmd)
    elif cmd and all(isinstance(a, str) for a in cmd):
        params = p.ProcessStartParams(argv=list(cmd))
    else:
        raise errors.InvalidArgumentError("cmd must be a shell string or a non-empty list of strings", field="cmd")
    timeout = options.get("timeout")
    if timeout is not None and timeout <= 0:
        raise errors.InvalidArgumentError(f"timeout must be positive, got {timeout}", field="timeout")
    params.env = options.get("env") or {}
    params.cwd, params.user, params.tag = options.get("cwd"), options.get("user"), options.get("tag")
    params.stdin, params.pty = options.get("stdin", False), options.get("pty")
    params.timeout_ms = int(timeout * 1000) if timeout else 0
    return params


class SandboxAgent:
    """The agent of sandbox `id`, and the environment its processes start with.

    Args:
        sandbox_id: the sandbox.
        client: answers the AgentClient serving the sandbox now (raising
            SandboxStateError when it cannot run processes: paused, killed).
        env: the sandbox's own environment, under every process's (a pooled
            sandbox was booted before its creator gave it).
        gone: whether the sandbox is killed (holders drop what they keep for it).
        address: the sandbox's own address where this process may reach its
            ports directly (over its interface, not through the agent), or
            None: only an in-process node knows one, and only while the
            sandbox runs (see Sandbox.direct_address).
    """

    def __init__(
        self,
        sandbox_id: str,
        client: Callable[[], AgentClient],
        *,
        env: Callable[[], dict[str, str]],
        gone: Callable[[], bool],
        address: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.id = sandbox_id
        self._client = client
        self._env = env
        self._gone = gone
        self._address = address

    def __repr__(self) -> str:
        return f"<SandboxAgent {self.id}>"

    @property
    def agent(self) -> AgentClient:
        """The agent client; raises SandboxStateError unless the sandbox runs."""
        return self._client()

    @property
    def gone(self) -> bool:
        return self._gone()

    def direct_address(self) -> str | None:
        """Where its ports may be reached without the agent (an optimisation; None: use `agent.connect_port`)."""
        return self._address()

    def environment(self) -> dict[str, str]:
        """The sandbox's own environment (what every process it starts gets under its own)."""
        return self._env()

    async def start(self, cmd: str | list[str], **options: Unpack[StartOptions]) -> ProcessStream:
        """Start a process and return its output stream (it can be detached from)."""
        merged: StartOptions = {**options, "env": {**self._env(), **(options.get("env") or {})}}
        return await self.agent.start(process_params(cmd, **merged))
