"""The SSH gateway's server: logins, sessions (shell, command), and `ssh -L` forwards.

Each connection logs in as one sandbox (the user name) of one team. Invariant:
`_Login.target` is set only after the key or password was checked *and* the
sandbox was found among that team's; every session of the connection uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal as _signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.agent.client import PortTunnel, ProcessStream
from sandlot.agent.handle import SandboxAgent
from sandlot.api.auth import Principal, authenticate_key
from sandlot.api.service import SandboxService
from sandlot.api.store import Store
from sandlot.api.streams import later

__all__ = ["SshGateway", "host_key"]

log = logging.getLogger("sandlot.ssh")
# asyncssh logs every channel at INFO: a server log of its own is enough.
logging.getLogger("asyncssh").setLevel(logging.WARNING)

HOST_KEY_FILE = "ssh_host_ed25519_key"
LOGIN_SHELL = ["/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"]


def host_key(data_dir: Path) -> asyncssh.SSHKey:
    """The server's host key: made on the first start (ed25519, mode 0600), the same key ever after."""
    path = Path(data_dir) / HOST_KEY_FILE
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="sandlot")
        tmp = path.with_suffix(f".tmp{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
        os.replace(tmp, path)
    return asyncssh.read_private_key(path)


@dataclass(frozen=True)
class Target:
    who: Principal
    sandbox_id: str


class _Login(asyncssh.SSHServer):
    """One connection: who logged in, and to which sandbox."""

    def __init__(self, gateway: SshGateway) -> None:
        self.gateway = gateway
        self.target: Target | None = None
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        rec = await self.gateway.store.ssh_key_by_fingerprint(key.get_fingerprint("sha256"))
        if rec is None:
            return False
        return await self._admit(Principal(rec.key_id, rec.team, False), username)

    async def validate_password(self, username: str, password: str) -> bool:
        try:
            who = await authenticate_key(self.gateway.store, password)
        except errors.SandlotError:
            return False
        return await self._admit(who, username)

    async def _admit(self, who: Principal, sandbox_id: str) -> bool:
        try:
            await self.gateway.service.get(who, sandbox_id)
        except errors.SandlotError:
            return False  # another team's, or no such sandbox: the same answer as a wrong key
        self.target = Target(who, sandbox_id)
        return True

    async def sandbox(self) -> SandboxAgent:
        assert self.target is not None
        return await self.gateway.service.sandbox(self.target.who, self.target.sandbox_id)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        """`ssh -L`: a TCP connection to `dest_port` on the sandbox's own loopback."""
        if dest_host not in ("localhost", "127.0.0.1", "::1") or not 1 <= dest_port <= 65535:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"only ports of the sandbox itself can be forwarded (localhost:PORT), not {dest_host}:{dest_port}",
            )
        return self._forward(dest_port)

    async def _forward(self, port: int) -> _Forward:
        sbx = await self.sandbox()
        try:
            tunnel = await sbx.agent.connect_port(port)
        except errors.SandlotError as exc:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, exc.message) from None
        return _Forward(tunnel)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False  # `ssh -R` would open a port on the server's host: never


class _Forward(asyncssh.SSHTCPSession[bytes]):
    """Bytes between an SSH channel and a port tunnel into the sandbox, in order, both ways."""

    def __init__(self, tunnel: PortTunnel) -> None:
        self.tunnel = tunnel
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        self.tasks = [asyncio.ensure_future(self._to_sandbox()), asyncio.ensure_future(self._from_sandbox())]

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.outbox.put_nowait(data)

    def eof_received(self) -> bool:
        self.outbox.put_nowait(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.tasks:
            task.cancel()
        later(self._close())

    async def _close(self) -> None:
        with contextlib.suppress(errors.SandlotError):
            await self.tunnel.close()

    async def _to_sandbox(self) -> None:
        try:
            while (data := await self.outbox.get()) is not None:
                await self.tunnel.send(data)
            await self.tunnel.end_input()
        except errors.SandlotError:
            assert self.chan is not None
            self.chan.close()

    async def _from_sandbox(self) -> None:
        assert self.chan is not None
        try:
            async for data in self.tunnel.received():
                self.chan.write(data)
        except errors.SandlotError:
            pass
        with contextlib.suppress(OSError, asyncssh.Error):
            self.chan.write_eof()
        self.chan.close()


async def _session(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """A shell (with a PTY when asked) or a command; its exit status is the session's."""
    login: _Login = process.get_extra_info("connection").get_owner()
    try:
        sbx = await login.sandbox()
        proc = await _start(sbx, process)
    except errors.SandlotError as exc:
        process.stderr.write(f"sandlot: {exc.message}\r\n".encode())
        process.exit(255)
        return
    assert proc.pid is not None
    pump = asyncio.ensure_future(_input(process, sbx, proc.pid))
    output = asyncio.ensure_future(_output(process, proc))
    hangup = asyncio.ensure_future(process.channel.wait_closed())
    try:
        await asyncio.wait({output, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        pump.cancel()
        hangup.cancel()
        if not output.done():  # the client went away first: hang up on its process, as sshd does
            output.cancel()
            later(proc.detach())
            later(sbx.agent.signal(proc.pid, int(_signal.SIGHUP), True))
    if not output.done() or output.cancelled():
        return
    try:
        ex = output.result()
    except errors.SandlotError as exc:
        process.stderr.write(f"\r\nsandlot: {exc.message}\r\n".encode())
        process.exit(255)
        return
    assert ex is not None
    if ex.signal:
        try:
            name = _signal.Signals(ex.signal).name.removeprefix("SIG")
        except ValueError:
            name = "KILL"
        process.exit_with_signal(name, False, "", "")
    else:
        process.exit(ex.exit_code if ex.exit_code is not None else 255)


async def _output(process: asyncssh.SSHServerProcess[bytes], proc: ProcessStream) -> p.ProcessExit:
    """Process -> client (stderr apart, unless on a PTY); then its exit."""
    async for fd, data in proc.output():
        (process.stderr if fd == 2 else process.stdout).write(data)
    assert proc.exit is not None
    return proc.exit


async def _start(sbx: SandboxAgent, process: asyncssh.SSHServerProcess[bytes]) -> ProcessStream:
    term = process.get_terminal_type()
    cmd: str | list[str] = process.command if process.command else LOGIN_SHELL
    if term is None:
        return await sbx.start(cmd, stdin=True, tag="ssh")
    cols, rows, _, _ = process.get_terminal_size()
    pty = p.PtySize(rows=max(rows, 1), cols=max(cols, 1))
    return await sbx.start(cmd, env={"TERM": term}, stdin=True, pty=pty, tag="ssh")


async def _input(process: asyncssh.SSHServerProcess[bytes], sbx: SandboxAgent, pid: int) -> None:
    """Client -> process: keystrokes or piped stdin, window resizes, then EOF."""
    while True:
        try:
            data = await process.stdin.read(65536)
        except asyncssh.TerminalSizeChanged as change:
            with contextlib.suppress(errors.SandlotError):
                await sbx.agent.resize(pid, max(change.height, 1), max(change.width, 1))
            continue
        except (asyncssh.BreakReceived, asyncssh.SignalReceived):
            continue
        try:
            if not data:
                await sbx.agent.send_input(pid, b"", eof=True)
                return
            await sbx.agent.send_input(pid, data)
        except errors.SandlotError:
            return


class SshGateway:
    """The SSH server of a `sandlot serve` (started and closed by the app's lifespan)."""

    def __init__(self, service: SandboxService, store: Store, data_dir: Path) -> None:
        self.service = service
        self.store = store
        self.data_dir = Path(data_dir)
        self._server: asyncssh.SSHAcceptor | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port; returns the port (the one chosen, for port 0)."""
        from sandlot.api.ssh.sftp import SandboxSFTP

        self._server = await asyncssh.create_server(
            lambda: _Login(self),
            host,
            port,
            server_host_keys=[host_key(self.data_dir)],
            process_factory=_session,
            sftp_factory=SandboxSFTP,
            allow_scp=False,  # OpenSSH's scp speaks SFTP, which is served
            encoding=None,
            agent_forwarding=False,
            x11_forwarding=False,
            line_editor=False,
            keepalive_interval=60,
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
