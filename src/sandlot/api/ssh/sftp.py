"""SFTP (and so OpenSSH's scp) on a sandbox's file API: asyncssh's SFTPServer, backed by the agent.

Reads are ranged reads of the agent (`fs.read` with offset and length). Writes
are buffered and sent in order: a file opened for writing is truncated (or
created) when opened, each write must continue where the last one ended (what
sftp and scp do), and the buffer is appended at 1 MiB and on close. A write at
another offset fails with SFTP's "operation unsupported".
"""

from __future__ import annotations

import posixpath
import stat as _stat
from typing import Any

import asyncssh
from asyncssh import SFTPAttrs, SFTPName

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.agent.handle import SandboxAgent
from sandlot.api.ssh.server import _Login

__all__ = ["SandboxSFTP"]

FLUSH_AT = 1 << 20
_TYPES = {"file": _stat.S_IFREG, "dir": _stat.S_IFDIR, "symlink": _stat.S_IFLNK, "other": 0}
_SFTP_TYPES = {
    "file": asyncssh.FILEXFER_TYPE_REGULAR,
    "dir": asyncssh.FILEXFER_TYPE_DIRECTORY,
    "symlink": asyncssh.FILEXFER_TYPE_SYMLINK,
    "other": asyncssh.FILEXFER_TYPE_SPECIAL,
}


def _attrs(e: p.FileEntry) -> SFTPAttrs:
    return SFTPAttrs(
        type=_SFTP_TYPES[e.type],
        size=e.size,
        uid=e.uid,
        gid=e.gid,
        owner=e.owner or None,
        group=e.group or None,
        permissions=_TYPES[e.type] | (e.mode & 0o7777),
        atime=e.mtime_ms // 1000,
        mtime=e.mtime_ms // 1000,
    )


def _sftp_error(exc: errors.SandlotError) -> asyncssh.SFTPError:
    if isinstance(exc, errors.NotFoundError):
        return asyncssh.SFTPNoSuchFile(exc.message)
    if isinstance(exc, errors.PermissionDeniedError):
        return asyncssh.SFTPPermissionDenied(exc.message)
    if isinstance(exc, errors.FileExistsError_):
        return asyncssh.SFTPFileAlreadyExists(exc.message)
    if isinstance(exc, errors.NoSpaceError):
        return asyncssh.SFTPNoSpaceOnFilesystem(exc.message)
    return asyncssh.SFTPFailure(exc.message)


class _File:
    def __init__(self, path: str, writing: bool) -> None:
        self.path = path
        self.writing = writing
        self.buffer = bytearray()
        self.end = 0  # where the next write must start (bytes sent + buffered)


class SandboxSFTP(asyncssh.SFTPServer):
    """Paths are the sandbox's; relative ones start at /root (or / when it has none)."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        super().__init__(chan)
        owner = chan.get_connection().get_owner()
        assert isinstance(owner, _Login)
        self._login = owner
        self._sbx: SandboxAgent | None = None
        self._home: str | None = None

    async def _sandbox(self) -> SandboxAgent:
        try:
            self._sbx = await self._login.sandbox()
        except errors.SandlotError as exc:
            raise asyncssh.SFTPConnectionLost(exc.message) from None
        return self._sbx

    async def _call(self, method: str, *args: Any, **kw: Any) -> Any:
        sbx = await self._sandbox()
        try:
            return await getattr(sbx.agent, method)(*args, **kw)
        except errors.SandlotError as exc:
            raise _sftp_error(exc) from None

    async def _path(self, raw: bytes) -> str:
        path = raw.decode(errors="surrogateescape")
        if not path.startswith("/"):
            if self._home is None:
                self._home = "/root" if await (await self._sandbox()).agent.exists("/root") else "/"
            path = posixpath.join(self._home, path)
        return posixpath.normpath(path) if path != "/" else path

    # ---------------------------------------------------------------- names

    async def realpath(self, path: bytes) -> bytes:
        return (await self._path(path)).encode(errors="surrogateescape")

    async def stat(self, path: bytes) -> SFTPAttrs:
        return _attrs(await self._call("stat", await self._path(path)))

    lstat = stat

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        pass  # modes and times as the sandbox made them (scp -p asks; nothing breaks without)

    async def scandir(self, path: bytes) -> Any:
        entries: list[p.FileEntry] = await self._call("list", await self._path(path), 1)
        for e in entries:
            yield SFTPName(e.name.encode(errors="surrogateescape"), attrs=_attrs(e))

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        where = await self._path(path)
        if not await self._call("mkdir", where, parents=False, mode=(attrs.permissions or 0o755) & 0o7777):
            raise asyncssh.SFTPFileAlreadyExists(f"{where} exists")

    async def rmdir(self, path: bytes) -> None:
        await self._call("remove", await self._path(path), recursive=False)

    async def remove(self, path: bytes) -> None:
        await self._call("remove", await self._path(path), recursive=False)

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._call("rename", await self._path(oldpath), await self._path(newpath))

    posix_rename = rename

    # ---------------------------------------------------------------- files

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> _File:
        where = await self._path(path)
        writing = bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND))
        if not writing:
            entry: p.FileEntry = await self._call("stat", where)
            if entry.type == "dir":
                raise asyncssh.SFTPFailure(f"{where} is a directory")
            return _File(where, False)
        f = _File(where, True)
        if pflags & asyncssh.FXF_APPEND:
            f.end = (await self._call("stat", where)).size
        elif pflags & (asyncssh.FXF_TRUNC | asyncssh.FXF_CREAT):
            mode = (attrs.permissions or 0o644) & 0o7777
            await self._call("write", where, b"", mode=mode)
        return f

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, _File)
        sbx = await self._sandbox()
        out = bytearray()
        try:
            async for chunk in sbx.agent.read(file_obj.path, offset, size):
                out += chunk
        except errors.SandlotError as exc:
            raise _sftp_error(exc) from None
        return bytes(out[:size])

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, _File) and file_obj.writing
        if offset != file_obj.end:
            raise asyncssh.SFTPOpUnsupported(
                f"writes to {file_obj.path} must continue where the last one ended (at {file_obj.end}, not {offset})"
            )
        file_obj.buffer += data
        file_obj.end += len(data)
        if len(file_obj.buffer) >= FLUSH_AT:
            await self._flush(file_obj)
        return len(data)

    async def _flush(self, f: _File) -> None:
        if f.buffer:
            data, f.buffer = bytes(f.buffer), bytearray()
            await self._call("write", f.path, data, append=True)

    async def fstat(self, file_obj: object) -> SFTPAttrs:
        assert isinstance(file_obj, _File)
        await self._flush(file_obj)
        return _attrs(await self._call("stat", file_obj.path))

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        pass

    async def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, _File)
        if file_obj.writing:
            await self._flush(file_obj)

    def exit(self) -> None:
        # OpenSSH's scp checks the session's exit status (its sftp-server exits 0); asyncssh sends none.
        self.channel.exit(0)
