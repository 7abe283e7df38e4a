"""The two control channels of a microVM, both Unix sockets that QEMU serves.

- QMP (`qmp.sock`): QEMU's own, JSON lines. Pause (`stop`), resume (`cont`)
  and the memory snapshot (`migrate` to a file) go through it. One command
  per connection keeps it simple; QEMU serves one client at a time.
- The guest's control port (`ctl.sock`, a virtio-serial port the agent serves
  inside, see agent/go/vm.go): line requests "freeze" and "thaw" of the
  sandbox's writable disk, so a checkpoint clones a consistent filesystem.
  Never the agent protocol: the runtime does not talk to the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from sandlot import errors

__all__ = ["guest_request", "qmp"]


async def qmp(socket: Path, command: str, timeout: float = 30.0, **arguments: Any) -> Any:
    """Run one QMP command; returns its `return` value, raises InternalError with QEMU's message."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(socket), limit=1 << 24), timeout)
    except (OSError, TimeoutError) as exc:
        raise errors.InternalError(f"QEMU's control socket {socket} does not answer: {exc}") from None
    try:
        return await asyncio.wait_for(_exchange(reader, writer, command, arguments), timeout)
    except TimeoutError:
        raise errors.InternalError(f"QEMU did not answer {command!r} within {timeout:.0f}s") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: str, args: Any) -> Any:
    await _reply(reader)  # the greeting
    for name, arguments in (("qmp_capabilities", None), (command, args)):
        msg: dict[str, Any] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        writer.write(json.dumps(msg).encode() + b"\n")
        await writer.drain()
        answer = await _reply(reader)
    return answer


async def _reply(reader: asyncio.StreamReader) -> Any:
    """The next line that is not an event: a greeting, a return value, or an error (raised)."""
    while True:
        line = await reader.readline()
        if not line:
            raise errors.InternalError("QEMU closed its control socket")
        msg = json.loads(line)
        if "error" in msg:
            err = msg["error"]
            raise errors.InternalError(f"QEMU: {err.get('desc', err)}")
        if "return" in msg:
            return msg["return"]
        if "QMP" in msg:
            return msg


async def guest_request(socket: Path, request: str, timeout: float = 60.0) -> None:
    """Send the agent's control port one request ("freeze", "thaw"); raise unless it answers "ok"."""
    deadline = time.monotonic() + timeout
    try:
        async with asyncio.timeout(timeout):
            while True:  # QEMU makes the socket when it starts: wait for it, like for the VM
                try:
                    reader, writer = await asyncio.open_unix_connection(str(socket))
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    await asyncio.sleep(0.05)
            try:
                writer.write(request.encode() + b"\n")
                await writer.drain()
                answer = (await reader.readline()).decode(errors="replace").strip()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        waited = timeout - max(0.0, deadline - time.monotonic())
        raise errors.InternalError(f"the VM did not answer {request!r} within {waited:.0f}s") from None
    if answer != "ok":
        raise errors.InternalError(f"the VM could not {request} its disk: {answer or 'no answer'}")
