"""envd's `filesystem.Filesystem` Connect service, its `/files` HTTP API and `/health`.

Entries are E2B's `EntryInfo` in protobuf JSON (int64 size as a string, enums
by name); watch events carry the path relative to the watched directory.
Watchers made with CreateWatcher (the sync SDK polls them) buffer events in
`app.state.e2b_watchers` until fetched or removed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import logging
import posixpath
import secrets
import stat as statmod
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile

from sandlot import errors
from sandlot.agent import protocol as p
from sandlot.agent.client import WatchStream
from sandlot.api.e2b import connect as rpc
from sandlot.api.e2b import envd_metadata as meta
from sandlot.api.e2b.envd_common import Caller, caller, http_status
from sandlot.api.e2b.routing import ENVD_PORT, INTERNAL_PREFIX
from sandlot.api.streams import later, prefetched

__all__ = ["router"]

log = logging.getLogger(__name__)

BASE = f"{INTERNAL_PREFIX}/{{sandbox_id}}/{ENVD_PORT}"
router = APIRouter(prefix=BASE, include_in_schema=False)
FS = "/filesystem.Filesystem"

_TYPES = {"file": "FILE_TYPE_FILE", "dir": "FILE_TYPE_DIRECTORY", "symlink": "FILE_TYPE_SYMLINK"}
_EVENTS = {
    "create": "EVENT_TYPE_CREATE",
    "write": "EVENT_TYPE_WRITE",
    "remove": "EVENT_TYPE_REMOVE",
    "rename": "EVENT_TYPE_RENAME",
    "chmod": "EVENT_TYPE_CHMOD",
}
_TYPE_BITS = {"file": statmod.S_IFREG, "dir": statmod.S_IFDIR, "symlink": statmod.S_IFLNK}
MAX_WATCHER_EVENTS = 10_000


def entry_info(e: p.FileEntry) -> dict[str, Any]:
    """envd's EntryInfo. A symlink is described as envd does now: `type` is its target's type,
    `isSymlink` marks it, `symlinkTarget` is the target's resolved path (what the SDKs show)."""
    kind = (e.link_type or "other") if e.type == "symlink" else e.type
    info: dict[str, Any] = {
        "name": e.name,
        "type": _TYPES.get(kind, "FILE_TYPE_UNSPECIFIED"),
        "path": e.path,
        "size": str(e.size),
        "mode": e.mode,
        "permissions": statmod.filemode(_TYPE_BITS.get(e.type, 0) | e.mode),
        "owner": e.owner or str(e.uid),
        "group": e.group or str(e.gid),
        "modifiedTime": dt.datetime.fromtimestamp(e.mtime_ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z"),
    }
    if e.type == "symlink":
        info["isSymlink"] = True
        target = e.link_path or e.symlink_target
        if target is not None:
            info["symlinkTarget"] = target
    if e.metadata:
        info["metadata"] = e.metadata
    return info


def _str(msg: dict[str, Any], key: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise errors.InvalidArgumentError(f"{key} must be a non-empty string", field=key)
    return value


async def _event(c: Caller, root: str, ev: p.WatchEvent) -> dict[str, Any]:
    name = posixpath.relpath(ev.path, root) if ev.path.startswith("/") else ev.path
    out: dict[str, Any] = {"name": name, "type": _EVENTS[ev.op]}
    if ev.entry is not None:
        (entry,) = await meta.complete(c.node, c.sandbox.id, [ev.entry])
        out["entry"] = entry_info(entry)
    return out


def _unary(name: str, fn: Any) -> None:
    async def endpoint(sandbox_id: str, request: Request) -> Response:
        return await rpc.unary_for(request, lambda: caller(request, sandbox_id), lambda c, msg: fn(c, msg, request))

    router.add_api_route(f"{FS}/{name}", endpoint, methods=["POST"], name=f"e2b_fs_{name}")


async def _stat(c: Caller, msg: dict[str, Any], _: Request) -> dict[str, Any]:
    entry = await c.sandbox.agent.stat(c.path(_str(msg, "path")), metadata=True)
    (entry,) = await meta.complete(c.node, c.sandbox.id, [entry])
    return {"entry": entry_info(entry)}


async def _list(c: Caller, msg: dict[str, Any], _: Request) -> dict[str, Any]:
    depth = msg.get("depth") or 1
    if not isinstance(depth, int) or depth < 1:
        raise errors.InvalidArgumentError("depth must be a positive integer", field="depth")
    entries = await c.sandbox.agent.list(c.path(_str(msg, "path")), depth=depth, metadata=True)
    return {"entries": [entry_info(e) for e in await meta.complete(c.node, c.sandbox.id, entries)]}


async def _make_dir(c: Caller, msg: dict[str, Any], _: Request) -> dict[str, Any]:
    path = c.path(_str(msg, "path"))
    if not await c.sandbox.agent.mkdir(path, parents=True, user=c.user):
        raise errors.FileExistsError_(f"{path} already exists")
    return {"entry": entry_info(await c.sandbox.agent.stat(path))}


async def _move(c: Caller, msg: dict[str, Any], _: Request) -> dict[str, Any]:
    src, dst = c.path(_str(msg, "source"), "source"), c.path(_str(msg, "destination"), "destination")
    (entry,) = await meta.complete(c.node, c.sandbox.id, [await c.sandbox.agent.rename(src, dst, metadata=True)])
    return {"entry": entry_info(entry)}


async def _remove(c: Caller, msg: dict[str, Any], _: Request) -> dict[str, Any]:
    await c.sandbox.agent.remove(c.path(_str(msg, "path")), recursive=True)
    return {}


@dataclass
class _Watcher:
    sandbox_id: str
    stream: WatchStream
    task: asyncio.Task[None] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _watchers(request: Request) -> dict[str, _Watcher]:
    reg: dict[str, _Watcher] | None = getattr(request.app.state, "e2b_watchers", None)
    if reg is None:
        reg = request.app.state.e2b_watchers = {}
    return reg


async def _watch(c: Caller, msg: dict[str, Any]) -> tuple[str, WatchStream]:
    root = c.path(_str(msg, "path"))
    recursive, entries = bool(msg.get("recursive")), bool(msg.get("includeEntry"))
    return root, await c.sandbox.agent.watch(root, recursive=recursive, entries=entries)


async def _create_watcher(c: Caller, msg: dict[str, Any], request: Request) -> dict[str, Any]:
    root, stream = await _watch(c, msg)
    w = _Watcher(c.sandbox.id, stream)

    async def pump() -> None:
        try:
            async for ev in stream.events():
                out = await _event(c, root, ev)
                # `w.events` is swapped for a new list by each GetWatcherEvents: append only
                # after the await, to the list of the moment (appending to one bound before
                # it lost the event whenever a poll came in meanwhile).
                if len(w.events) < MAX_WATCHER_EVENTS:
                    w.events.append(out)
        except errors.SandlotError as exc:
            w.error = str(exc)
        except Exception as exc:
            log.exception("watcher of %s in sandbox %s failed", root, c.sandbox.id)
            w.error = f"{type(exc).__name__}: {exc}"

    w.task = asyncio.create_task(pump())
    wid = "w-" + secrets.token_hex(8)
    _watchers(request)[wid] = w
    return {"watcherId": wid}


def _watcher(c: Caller, msg: dict[str, Any], request: Request) -> tuple[str, _Watcher]:
    wid = _str(msg, "watcherId") if "watcherId" in msg else _str(msg, "watcher_id")
    w = _watchers(request).get(wid)
    if w is None or w.sandbox_id != c.sandbox.id:
        raise errors.NotFoundError(f"watcher {wid} not found")
    return wid, w


async def _get_watcher_events(c: Caller, msg: dict[str, Any], request: Request) -> dict[str, Any]:
    _, w = _watcher(c, msg, request)
    events, w.events = w.events, []
    if not events and w.error:
        raise errors.InternalError(f"the watch ended: {w.error}")
    return {"events": events}


async def _remove_watcher(c: Caller, msg: dict[str, Any], request: Request) -> dict[str, Any]:
    wid, w = _watcher(c, msg, request)
    del _watchers(request)[wid]
    if w.task is not None:
        w.task.cancel()
    later(w.stream.close())
    return {}


for _name, _fn in (
    ("Stat", _stat),
    ("ListDir", _list),
    ("MakeDir", _make_dir),
    ("Move", _move),
    ("Remove", _remove),
    ("CreateWatcher", _create_watcher),
    ("GetWatcherEvents", _get_watcher_events),
    ("RemoveWatcher", _remove_watcher),
):
    _unary(_name, _fn)


@router.post(f"{FS}/WatchDir")
async def watch_dir(sandbox_id: str, request: Request) -> Response:
    async def events(c: Caller, msg: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        root, stream = await _watch(c, msg)

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for ev in stream.events():
                yield {"filesystem": await _event(c, root, ev)}

        try:
            yield {"start": {}}
            async for msg in rpc.with_keepalive(events(), rpc.keepalive_interval(request), {"keepalive": {}}):
                yield msg
        finally:
            later(stream.close())

    return await rpc.stream_for(request, lambda: caller(request, sandbox_id), events)


# ---------------------------------------------------------------- HTTP: /files, /health


def _http_error(exc: errors.SandlotError) -> JSONResponse:
    status = http_status(exc)
    message = rpc.not_running_message(exc) if isinstance(exc, errors.SandboxStateError) else str(exc)
    return JSONResponse({"code": status, "message": message}, status_code=status)


@router.get("/health", status_code=204)
async def health(sandbox_id: str, request: Request) -> Response:
    """204 while the sandbox runs; E2B's 502 "not found" when it is killed or paused (`is_running()`
    is False); a paused sandbox with `auto_resume` is resumed by it, as by any request."""
    try:
        await caller(request, sandbox_id)
    except errors.SandboxStateError as exc:
        return _http_error(exc)
    return Response(status_code=204)


@router.get("/files")
async def download(sandbox_id: str, request: Request, path: str = "", username: str | None = None) -> Response:
    try:
        c = await caller(request, sandbox_id, username)
        body = await prefetched(c.sandbox.agent.read(c.path(path or ".")))
    except errors.SandlotError as exc:
        return _http_error(exc)
    name = posixpath.basename(c.path(path))
    headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{name}"}
    return StreamingResponse(body, media_type="application/octet-stream", headers=headers)


async def _request_body(request: Request) -> AsyncIterator[bytes]:
    if request.headers.get("content-encoding", "").lower() == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        async for chunk in request.stream():
            out = d.decompress(chunk)
            if out:
                yield out
        tail = d.flush()
        if tail:
            yield tail
    else:
        async for chunk in request.stream():
            if chunk:
                yield chunk


async def _part_chunks(part: UploadFile) -> AsyncIterator[bytes]:
    """A multipart file (spooled to disk by the parser when large) in chunks, never whole in memory."""
    while chunk := await part.read(1 << 20):
        yield chunk


def _written(e: p.FileEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"name": e.name, "type": "dir" if e.type == "dir" else "file", "path": e.path}
    if e.metadata:
        out["metadata"] = e.metadata
    return out


@router.post("/files")
async def upload(sandbox_id: str, request: Request, path: str | None = None, username: str | None = None) -> Response:
    try:
        c = await caller(request, sandbox_id, username)
        metadata = meta.from_headers(request.headers.items())

        async def write(target: str, chunks: AsyncIterator[bytes]) -> p.FileEntry:
            entry = await c.sandbox.agent.write(c.path(target), chunks, user=c.user, metadata=metadata)
            return await meta.store(c.node, c.sandbox.id, entry, metadata)

        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            results = []
            async with request.form(max_files=10_000, max_fields=10_000, max_part_size=1 << 30) as form:
                files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
                if not files:
                    raise errors.InvalidArgumentError("the multipart upload has no file parts", field="file")
                for part in files:
                    target = path if (path and len(files) == 1) else part.filename
                    if not target:
                        raise errors.InvalidArgumentError("each file part needs its path as filename", field="file")
                    results.append(_written(await write(target, _part_chunks(part))))
            return JSONResponse(results)
        if not path:
            raise errors.InvalidArgumentError("path is required for an octet-stream upload", field="path")
        return JSONResponse([_written(await write(path, _request_body(request)))])
    except errors.SandlotError as exc:
        return _http_error(exc)
    except (zlib.error, gzip.BadGzipFile) as exc:
        return _http_error(errors.InvalidArgumentError(f"the gzip upload is corrupt: {exc}"))
