"""A stand-in for the Go agent, for API tests on hosts where the agent is not built.

It speaks the real agent protocol (sandlot.agent.protocol) over the node's
socket, and redials like the real one, but it is NOT a sandbox: commands run
as host processes and paths are mapped under a root directory. Only used by
`FakeRuntime` (tests/api/conftest.py) when `src/sandlot/agent/go` is missing.

    python tests/api/fake_agent.py SOCKET ROOT
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sandlot.agent import protocol as p
from sandlot.agent.protocol import FrameKind


class Proc:
    def __init__(self, pid: int, proc: asyncio.subprocess.Process, info: p.ProcessInfo) -> None:
        self.pid, self.proc, self.info = pid, proc, info
        self.buffer: list[tuple[int, bytes]] = []
        self.listeners: set[asyncio.Queue[tuple[int, bytes] | None]] = set()
        self.exit: p.ProcessExit | None = None
        self.done = asyncio.Event()
        self.timed_out = False
        self.pump: asyncio.Task[None] | None = None


class Agent:
    def __init__(self, sock: str, root: Path) -> None:
        self.sock, self.root = sock, root
        self.procs: dict[int, Proc] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.inputs: dict[int, tuple[str, Any, bytearray]] = {}  # stream -> (method, params, data)
        self.tasks: dict[int, asyncio.Task[Any]] = {}

    def path(self, path: str) -> Path:
        if "\0" in path:
            raise AgentError("invalid_argument", "bad path")
        return self.root / os.path.normpath("/" + path.lstrip("/")).lstrip("/")

    async def send(self, stream: int, kind: FrameKind, header: dict[str, Any], payload: bytes = b"") -> None:
        if self.writer is not None:
            self.writer.write(p.encode_frame(stream, kind, header, payload))
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    async def end(self, stream: int, result: dict[str, Any] | None = None, err: AgentError | None = None) -> None:
        if err is not None:
            await self.send(stream, FrameKind.END, {"ok": False, "error": {"code": err.code, "message": err.msg}})
        else:
            await self.send(stream, FrameKind.END, {"ok": True, "result": result or {}})

    async def run(self) -> None:
        while True:
            try:
                reader, self.writer = await asyncio.open_unix_connection(self.sock)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            await self.send(0, FrameKind.EVENT, {"type": "hello", "version": 1, "agent_pid": os.getpid(),
                                                  "started_at_ms": int(time.time() * 1000)})  # fmt: skip
            decoder = p.FrameDecoder()
            while data := await reader.read(1 << 20):
                for frame in decoder.feed(data):
                    await self.dispatch(frame)
            self.writer = None
            await asyncio.sleep(0.05)

    async def dispatch(self, frame: p.Frame) -> None:
        sid = frame.stream
        if frame.kind is FrameKind.OPEN:
            method, params = frame.header["method"], frame.header.get("params", {})
            if method == p.Method.FS_WRITE:  # input may follow at once: collect it from here on
                self.inputs[sid] = (method, params, bytearray())
            self.tasks[sid] = asyncio.ensure_future(self.handle(sid, method, params, frame.payload))
        elif frame.kind is FrameKind.DATA and sid in self.inputs:
            self.inputs[sid][2].extend(frame.payload)
            method, params, _ = self.inputs[sid]
            if method == p.Method.PROCESS_START and frame.payload:
                proc = self.procs.get(params.get("_pid", 0))
                if proc and proc.proc.stdin:
                    proc.proc.stdin.write(frame.payload)
        elif frame.kind is FrameKind.END and sid in self.inputs:
            method, params, data = self.inputs.pop(sid)
            if method == p.Method.PROCESS_START:
                proc = self.procs.get(params.get("_pid", 0))
                if proc and proc.proc.stdin:
                    proc.proc.stdin.close()
            else:
                self.tasks[sid] = asyncio.ensure_future(self.handle(sid, method + ":data", params, bytes(data)))
        elif frame.kind is FrameKind.CANCEL:
            task = self.tasks.pop(sid, None)
            if task:
                task.cancel()
            await self.end(sid, {})

    async def handle(self, sid: int, method: str, params: dict[str, Any], payload: bytes) -> None:
        try:
            fn = getattr(self, "m_" + method.replace(".", "_").replace(":", "_"), None)
            if fn is None:
                raise AgentError("invalid_argument", f"unknown method {method}")
            result = await fn(sid, params, payload)
            if result is not None:
                await self.end(sid, result)
        except AgentError as exc:
            await self.end(sid, err=exc)
        except FileNotFoundError as exc:
            await self.end(sid, err=AgentError("not_found", f"{exc.filename}: no such file or directory"))
        except IsADirectoryError:
            await self.end(sid, err=AgentError("is_a_directory", "is a directory"))
        except NotADirectoryError:
            await self.end(sid, err=AgentError("not_a_directory", "not a directory"))
        except asyncio.CancelledError:
            pass

    # -- processes
    async def m_process_start(self, sid: int, params: dict[str, Any], _: bytes) -> None:
        sp = p.ProcessStartParams.model_validate(params)
        argv = sp.argv or ["/bin/sh", "-c", sp.cmd or ""]
        cwd = self.path(sp.cwd) if sp.cwd else self.root
        if not cwd.is_dir():
            raise AgentError("not_found", f"{sp.cwd}: no such directory")
        if sp.argv and not shutil.which(argv[0]):
            raise AgentError("command_not_found", f"{argv[0]}: command not found")
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env={**os.environ, **sp.env}, start_new_session=True,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        if not sp.stdin and not sp.pty:
            assert proc.stdin is not None
            proc.stdin.close()
        info = p.ProcessInfo(pid=proc.pid, argv=argv, cmd=sp.cmd, cwd=str(sp.cwd or "/"), user="root", tag=sp.tag,
                             pty=sp.pty is not None, started_at_ms=int(time.time() * 1000))  # fmt: skip
        pr = Proc(proc.pid, proc, info)
        self.procs[proc.pid] = pr
        if sp.stdin:
            self.inputs[sid] = (p.Method.PROCESS_START, {"_pid": proc.pid}, bytearray())
        pr.pump = asyncio.ensure_future(self.pump(pr, sp.timeout_ms))
        await self.send(sid, FrameKind.EVENT, {"type": "started", "pid": proc.pid})
        await self.follow(sid, pr, replay=False)

    async def pump(self, pr: Proc, timeout_ms: int) -> None:
        async def read(fd: int, stream: asyncio.StreamReader | None) -> None:
            assert stream is not None
            while chunk := await stream.read(65536):
                pr.buffer.append((fd, chunk))
                for q in pr.listeners:
                    q.put_nowait((fd, chunk))

        async def killer() -> None:
            await asyncio.sleep(timeout_ms / 1000)
            pr.timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pr.pid, signal.SIGKILL)

        k = asyncio.ensure_future(killer()) if timeout_ms else None
        await asyncio.gather(read(1, pr.proc.stdout), read(2, pr.proc.stderr))
        rc = await pr.proc.wait()
        if k:
            k.cancel()
        pr.exit = p.ProcessExit(pid=pr.pid, exit_code=rc if rc >= 0 else None, signal=-rc if rc < 0 else None,
                                timed_out=pr.timed_out)  # fmt: skip
        pr.info.running, pr.info.exit = False, pr.exit
        for q in pr.listeners:
            q.put_nowait(None)
        pr.done.set()

    async def follow(self, sid: int, pr: Proc, replay: bool) -> None:
        q: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        if replay:
            for fd, chunk in pr.buffer:
                q.put_nowait((fd, chunk))
            if pr.exit:
                q.put_nowait(None)
        if not pr.exit:
            pr.listeners.add(q)
        try:
            while (item := await q.get()) is not None:
                await self.send(sid, FrameKind.DATA, {"fd": item[0]}, item[1])
        finally:
            pr.listeners.discard(q)
        assert pr.exit is not None
        await self.end(sid, pr.exit.model_dump())

    def proc(self, pid: int) -> Proc:
        if pid not in self.procs:
            raise AgentError("process_not_found", f"process {pid} not found")
        return self.procs[pid]

    async def m_process_connect(self, sid: int, params: dict[str, Any], _: bytes) -> None:
        await self.follow(sid, self.proc(int(params["pid"])), replay=True)

    async def m_process_list(self, sid: int, params: dict[str, Any], _: bytes) -> dict[str, Any]:
        return {"processes": [pr.info.model_dump() for pr in self.procs.values()]}

    async def m_process_input(self, sid: int, params: dict[str, Any], payload: bytes) -> dict[str, Any]:
        pr = self.proc(int(params["pid"]))
        if pr.exit or pr.proc.stdin is None or pr.proc.stdin.is_closing():
            raise AgentError("invalid_argument", "stdin is closed")
        pr.proc.stdin.write(payload)
        if params.get("eof"):
            pr.proc.stdin.close()
        return {}

    async def m_process_signal(self, sid: int, params: dict[str, Any], _: bytes) -> dict[str, Any]:
        pr = self.proc(int(params["pid"]))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pr.pid, int(params.get("signal", 15)))
        return {}

    async def m_process_resize(self, sid: int, params: dict[str, Any], _: bytes) -> dict[str, Any]:
        self.proc(int(params["pid"]))
        return {}

    # -- files
    def entry(self, path: str) -> dict[str, Any]:
        real = self.path(path)
        st = real.lstat()
        kind = "dir" if real.is_dir() else "symlink" if real.is_symlink() else "file"
        return {"name": real.name, "path": os.path.normpath("/" + path.lstrip("/")), "type": kind, "size": st.st_size,
                "mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid,
                "mtime_ms": int(st.st_mtime * 1000)}  # fmt: skip

    async def m_fs_read(self, sid: int, params: dict[str, Any], _: bytes) -> dict[str, Any]:
        real = self.path(params["path"])
        if real.is_dir():
            raise IsADirectoryError
        size = 0
        with open(real, "rb") as f:
            while chunk := f.read(p.CHUNK):
                size += len(chunk)
                await self.send(sid, FrameKind.DATA, {}, chunk)
        return {"size": size}

    async def m_fs_write(self, sid: int, params: dict[str, Any], _: bytes) -> None:
        if self.path(params["path"]).is_dir():
            self.inputs.pop(sid, None)
            raise IsADirectoryError

    async def m_fs_write_data(self, sid: int, params: dict[str, Any], data: bytes) -> dict[str, Any]:
        real = self.path(params["path"])
        real.parent.mkdir(parents=True, exist_ok=True)
        with open(real, "ab" if params.get("append") else "wb") as f:
            f.write(data)
        return self.entry(params["path"])

    async def m_fs_list(self, sid: int, params: dict[str, Any], _: bytes) -> dict[str, Any]:
        real = self.path(params["path"])
        if not real.is_dir():
            raise NotADirectoryError if real.exists() else FileNotFoundError(None, None, params["path"])
        base = os.path.normpath("/" + params["path"].lstrip("/"))
        return {"entries": [self.entry(f"{base}/{c.name}") for c in sorted(real.iterdir())]}

    async def m_fs_stat(self, sid: int, params: dict[str, Any], _: bytes) -> dict[str, Any]:
        if not self.path(params["path"]).exists():
            raise FileNotFoundError(None, None, params["path"])
        return self.entry(params["path"])

    async def m_fs_exists(self, sid: int, params: dict[str, Any], _: bytes) -> dict[str, Any]:
        return {"exists": self.path(params["path"]).exists()}

    async def m_fs_mkdir(self, sid: int, params: dict[str, Any], _: bytes) -> dict[str, Any]:
        real = self.path(params["path"])
        existed = real.is_dir()
        real.mkdir(parents=True, exist_ok=True)
        return {"created": not existed}

    async def m_fs_rename(self, sid: int, params: dict[str, Any], _: bytes) -> dict[str, Any]:
        os.rename(self.path(params["src"]), self.path(params["dst"]))
        return self.entry(params["dst"])

    async def m_fs_remove(self, sid: int, params: dict[str, Any], _: bytes) -> dict[str, Any]:
        real = self.path(params["path"])
        if real.is_dir():
            shutil.rmtree(real)
        else:
            real.unlink()
        return {}

    async def m_ping(self, sid: int, params: dict[str, Any], _: bytes) -> dict[str, Any]:
        return {"type": "hello", "version": 1, "agent_pid": os.getpid(), "started_at_ms": 0}


class AgentError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


async def main() -> None:
    agent = Agent(sys.argv[1], Path(sys.argv[2]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    runner = asyncio.ensure_future(agent.run())
    await stop.wait()
    for pr in agent.procs.values():  # a dying "sandbox" takes its processes with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pr.pid, signal.SIGKILL)
    runner.cancel()


if __name__ == "__main__":
    asyncio.run(main())
