"""A sandbox's code interpreter, seen from the node: one driver process, many requests.

The driver (`driver.py`) is written into the sandbox and started through the
agent with stdin open; requests go to its stdin as JSON lines and replies come
back on its stdout, tagged with the request number. `_reader` routes each
reply to the queue of the request that asked. When the driver dies (the
sandbox was killed, or the driver crashed) every waiting request fails and the
next use starts a new driver; its kernels' state is gone, as in Jupyter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from importlib import resources
from typing import Any

from sandlot import errors
from sandlot.agent.client import ProcessStream
from sandlot.agent.handle import SandboxAgent

__all__ = ["DEFAULT_CONTEXT", "LANGUAGES", "Interpreter", "interpreter_for"]

log = logging.getLogger("sandlot.interpreter")

DRIVER_PATH = "/tmp/.sandlot-interpreter/driver.py"
DRIVER_TAG = "sandlot-interpreter"
DEFAULT_CONTEXT = "default"
LANGUAGES = ("python", "bash")
USER = "user"
HOME = "/home/user"
MAX_LINE = 64 << 20  # a PNG or a big print in one reply


def _driver_source() -> bytes:
    return resources.files("sandlot.interpreter").joinpath("driver.py").read_bytes()


class Interpreter:
    """The driver in one sandbox. `_queues` maps request numbers to their reply queues."""

    def __init__(self, sandbox: SandboxAgent) -> None:
        self.sandbox = sandbox
        self._proc: ProcessStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._queues: dict[int, asyncio.Queue[dict[str, Any] | None]] = {}
        self._numbers = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self.dead: str | None = None
        self._default_langs: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        agent = self.sandbox.agent
        python = await agent.exists("/usr/bin/python3") or await agent.exists("/usr/local/bin/python3")
        if not python:
            raise errors.InvalidArgumentError(
                f"sandbox {self.sandbox.id} has no python3 for the code interpreter: "
                "create it from the 'code-interpreter' template"
            )
        # A driver left by an earlier API process (a restart) holds kernels nobody can reach: end it.
        for info in await agent.list_processes():
            if info.tag == DRIVER_TAG and info.running:
                with contextlib.suppress(errors.SandlotError):
                    await agent.signal(info.pid, 9, True)
        await agent.write(DRIVER_PATH, _driver_source(), mode=0o644)
        self._proc = await self.sandbox.start(
            ["python3", "-u", DRIVER_PATH],
            stdin=True,
            user=USER,
            cwd=HOME,
            env={"HOME": HOME, "USER": USER, "PYTHONUNBUFFERED": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
            tag=DRIVER_TAG,
        )
        self._reader = asyncio.create_task(self._read(self._proc))
        # The default Python context (a kernel) starts at once: the first execution is the slow one otherwise.
        await self._request({"op": "context", "id": DEFAULT_CONTEXT, "language": "python", "cwd": HOME})

    async def _read(self, proc: ProcessStream) -> None:
        buf = b""
        try:
            async for fd, data in proc.output():
                if fd == 2:
                    log.debug("interpreter %s: %s", self.sandbox.id, data.decode(errors="replace").rstrip())
                    continue
                buf += data
                if len(buf) > MAX_LINE:
                    raise errors.InternalError("the interpreter driver sent an over-long reply")
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._route(line)
            self.dead = "the interpreter driver exited"
        except errors.SandlotError as exc:
            self.dead = f"the interpreter driver failed: {exc}"
        finally:
            self.dead = self.dead or "the interpreter driver stopped"
            for q in self._queues.values():
                q.put_nowait(None)

    def _route(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
            q = self._queues.get(int(msg["req"]))
        except (ValueError, KeyError, TypeError):
            log.warning("interpreter %s: unreadable reply %r", self.sandbox.id, line[:200])
            return
        if q is not None and isinstance(msg, dict):
            q.put_nowait(msg)

    async def _send(self, msg: dict[str, Any]) -> tuple[int, asyncio.Queue[dict[str, Any] | None]]:
        if self.dead or self._proc is None:
            raise errors.SandboxStateError(f"the code interpreter of sandbox {self.sandbox.id} stopped: {self.dead}")
        req = next(self._numbers)
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._queues[req] = q
        async with self._write_lock:
            await self._proc.send_stdin(json.dumps({**msg, "req": req}).encode() + b"\n")
        return req, q

    async def _next(self, q: asyncio.Queue[dict[str, Any] | None]) -> dict[str, Any]:
        msg = await q.get()
        if msg is None:
            raise errors.SandboxStateError(f"the code interpreter of sandbox {self.sandbox.id} stopped: {self.dead}")
        if msg.get("type") == "failed":
            text = str(msg.get("message", "failed"))
            if msg.get("not_found"):
                raise errors.NotFoundError(text)
            raise errors.InvalidArgumentError(text)
        return msg

    async def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        req, q = await self._send(msg)
        try:
            return await self._next(q)
        finally:
            self._queues.pop(req, None)

    # ------------------------------------------------------------ public

    async def create_context(self, language: str = "python", cwd: str | None = None) -> dict[str, Any]:
        """A new context (own kernel or bash, own state, own working directory)."""
        _check_language(language)
        reply = await self._request({"op": "context", "language": language, "cwd": cwd or HOME})
        return {"id": reply["id"], "language": reply["language"], "cwd": reply["cwd"]}

    async def contexts(self) -> list[dict[str, Any]]:
        return list((await self._request({"op": "list"}))["contexts"])

    async def remove_context(self, context_id: str) -> None:
        await self._request({"op": "remove", "context": context_id})

    async def restart_context(self, context_id: str) -> None:
        await self._request({"op": "restart", "context": context_id})

    async def _context_for(self, language: str | None, context: str | None) -> str:
        if context:
            return context
        language = language or "python"
        _check_language(language)
        if language == "python":
            return DEFAULT_CONTEXT
        if language not in self._default_langs:  # one shared context per other language, made on first use
            self._default_langs[language] = (await self.create_context(language))["id"]
        return self._default_langs[language]

    async def execute(
        self, code: str, *, language: str | None = None, context: str | None = None, env: dict[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Run code; yield its events: `accepted` first (the context exists), then stdout, stderr,
        result, error, number_of_executions, ending with `end`.

        A consumer that stops early interrupts the execution.
        """
        cid = await self._context_for(language, context)
        req, q = await self._send({"op": "execute", "context": cid, "code": code, "env": env or {}})
        finished = False
        try:
            while True:
                msg = await self._next(q)
                msg.pop("req", None)
                yield msg
                if msg.get("type") == "end":
                    finished = True
                    return
        finally:
            self._queues.pop(req, None)
            if not finished and not self.dead:
                # In a task of its own: we may be here because our task is being cancelled
                # (a client that went away), and a cancelled task cannot await anything.
                self._later(self._interrupt(cid))

    async def _interrupt(self, context: str) -> None:
        req, q = await self._send({"op": "interrupt", "context": context})
        try:
            await self._next(q)
        finally:
            self._queues.pop(req, None)

    def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            with contextlib.suppress(errors.SandlotError):
                await coro

        task = asyncio.ensure_future(guarded())
        self._tasks.add(task)  # a reference, so the task is not collected mid-run
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._proc is not None and self._proc.pid is not None and not self.dead:
            with contextlib.suppress(errors.SandlotError):
                await self.sandbox.agent.signal(self._proc.pid, 9, True)
        if self._reader is not None:
            self._reader.cancel()


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise errors.InvalidArgumentError(
            f"language must be one of {', '.join(LANGUAGES)}, got {language!r}", field="language"
        )


_start_locks: dict[str, asyncio.Lock] = {}


async def interpreter_for(registry: dict[str, Interpreter], sandbox: SandboxAgent) -> Interpreter:
    """The sandbox's interpreter, started on first use (and again after its driver died)."""
    lock = _start_locks.setdefault(sandbox.id, asyncio.Lock())
    async with lock:
        it = registry.get(sandbox.id)
        if it is not None and it.sandbox is sandbox and not it.dead:
            return it
        if it is not None:
            await it.close()
        it = Interpreter(sandbox)
        try:
            await it.start()
        except BaseException:
            await it.close()
            raise
        registry[sandbox.id] = it
        return it
