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
import logging
import time
from pathlib import Path
from typing import Any

from sandlot import errors

__all__ = ["guest_request", "qmp"]

log = logging.getLogger("sandlot.node.microvm")


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


#: how long the first try of a control request waits for its answer before asking again; each
#: further try waits twice as long (a freeze flushes the disk: seconds on a loaded TCG guest)
GUEST_REQUEST_FIRST_TRY_S = 2.0


async def guest_request(socket: Path, request: str, timeout: float = 60.0) -> None:
    """Send the agent's control port one request ("freeze", "thaw"); raise unless it answers "ok".

    A request is asked again, on a new connection, when a try gets no answer (agents before
    the control port stayed open lost about one thaw in eight after a memory restore: the
    guest kernel discards what reaches a port its agent is closing). Both requests are
    idempotent (frozen already and not frozen count as done). A reply names its request, so
    one left over from an earlier connection is passed over.
    """
    deadline = time.monotonic() + timeout
    wait = GUEST_REQUEST_FIRST_TRY_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(min(wait, left)):
                answer = await _ask(socket, request)
        except TimeoutError:
            log.warning("the VM did not answer %r on %s within %.0fs: asking again", request, socket, wait)
            wait *= 2
            continue
        if answer in ("ok", f"ok {request}"):  # an agent before replies named their request: "ok"
            return
        if answer:  # an empty answer: the connection ended first; ask again
            raise errors.InternalError(f"the VM could not {request} its disk: {answer.removeprefix('error ')}")
        await asyncio.sleep(0.05)
    raise errors.InternalError(f"the VM did not answer {request!r} within {timeout:.0f}s")


async def _ask(socket: Path, request: str) -> str:
    while True:  # QEMU makes the socket when it starts: wait for it, like for the VM
        try:
            reader, writer = await asyncio.open_unix_connection(str(socket))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            await asyncio.sleep(0.05)
    try:
        writer.write(request.encode() + b"\n")
        await writer.drain()
        while True:
            answer = (await reader.readline()).decode(errors="replace").strip()
            # A reply to another request (one sent before, whose answer waited for a connection): not ours
            if not (answer.startswith(("ok ", "error ")) and answer.split(" ", 2)[1].rstrip(":") != request):
                return answer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
