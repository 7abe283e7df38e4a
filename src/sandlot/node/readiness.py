"""A template's start command and readiness check: a sandbox is handed out only once ready.

A template may name a command to start in every new sandbox (a server, say)
and how to tell it is ready: a command that exits 0 (`ready_cmd`), or a TCP
port listening inside the sandbox (`ready_port`, read from /proc/net/tcp by the
agent, so it needs nothing in the image). Until then the create does not
return; if the start command exits non-zero first, or the deadline passes, the
create fails with the command's output and the sandbox is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sandlot import errors

if TYPE_CHECKING:
    from sandlot.node.sandbox import Sandbox

__all__ = ["StartSpec", "start_and_wait"]

POLL_S = 0.1
TAIL = 2000


@dataclass(frozen=True)
class StartSpec:
    cmd: str
    ready_cmd: str | None = None
    ready_port: int | None = None
    timeout: float = 60.0

    def validate(self) -> StartSpec:
        if not self.cmd.strip() or "\0" in self.cmd:
            raise errors.InvalidArgumentError("the start command must be a non-empty shell command", field="cmd")
        if self.ready_port is not None and not 1 <= self.ready_port <= 65535:
            raise errors.InvalidArgumentError(f"ready_port must be 1-65535, got {self.ready_port}", field="ready_port")
        if not 0 < self.timeout <= 3600:
            raise errors.InvalidArgumentError(f"timeout must be in (0, 3600] s, got {self.timeout}", field="timeout")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> StartSpec | None:
        if not d:
            return None
        return cls(str(d["cmd"]), d.get("ready_cmd"), d.get("ready_port"), float(d.get("timeout", 60.0)))


def _listening(tables: str, port: int) -> bool:
    for line in tables.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and fields[1].rsplit(":", 1)[-1].upper() == f"{port:04X}":
            return True
    return False


async def _port_open(sbx: Sandbox, port: int) -> bool:
    text = ""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(errors.SandlotError):
            text += b"".join([c async for c in sbx.agent.read(table)]).decode(errors="replace")
    return _listening(text, port)


async def _ready(sbx: Sandbox, spec: StartSpec) -> bool:
    if spec.ready_port is not None and not await _port_open(sbx, spec.ready_port):
        return False
    if spec.ready_cmd is not None:
        res = await sbx.run(spec.ready_cmd, timeout=max(1.0, min(10.0, spec.timeout)))
        return res.exit_code == 0
    return True


async def start_and_wait(sbx: Sandbox, spec: StartSpec, template: str) -> None:
    """Start `spec.cmd` in the background and return once the sandbox is ready."""
    proc = await sbx.start(spec.cmd, tag="template-start")
    output: list[bytes] = []

    async def drain() -> None:
        async for _fd, data in proc.output():
            output.append(data)
            while sum(map(len, output)) > TAIL * 2:
                output.pop(0)

    reader = asyncio.ensure_future(drain())
    deadline = time.monotonic() + spec.timeout
    try:
        while True:
            if reader.done() and proc.exit is not None and proc.exit.exit_code != 0:
                tail = b"".join(output)[-TAIL:].decode(errors="replace")
                raise errors.SandboxStateError(
                    f"template {template!r}: its start command exited with code {proc.exit.exit_code} "
                    f"before the sandbox was ready: {spec.cmd}\n{tail}"
                )
            if await _ready(sbx, spec):
                return
            if time.monotonic() > deadline:
                tail = b"".join(output)[-TAIL:].decode(errors="replace")
                raise errors.TimeoutError_(
                    f"template {template!r}: not ready within {spec.timeout:g} s "
                    f"(start command: {spec.cmd}); its output ends:\n{tail}"
                )
            await asyncio.sleep(POLL_S)
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            with contextlib.suppress(errors.SandlotError):
                await proc.detach()  # the server keeps running; nobody reads its output now
