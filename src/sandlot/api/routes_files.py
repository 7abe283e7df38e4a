"""Files: streamed download/upload, list, stat, exists, mkdir, rename, remove, tar, watch.

Content never sits whole in memory: uploads flow from the request body to the
agent chunk by chunk, downloads from the agent to the response. The first chunk
of a download is fetched before the response starts, so a missing file is a 404
rather than a broken 200.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from sandlot import errors
from sandlot.api.deps import FilePath, Running, check_path
from sandlot.api.streams import event_stream, prefetched, watch_events
from sandlot.models import (
    NDJSON,
    ErrorBody,
    ExistsResponse,
    FileEntry,
    FileList,
    MkdirRequest,
    MkdirResponse,
    RenameRequest,
    TarResult,
)

__all__ = ["router"]

router = APIRouter(
    prefix="/sandboxes/{sandbox_id}/files",
    tags=["files"],
    responses={s: {"model": ErrorBody} for s in (400, 401, 404, 409, 422, 507)},
)

_RAW_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string"}}}}
}
_TAR_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/x-tar": {"schema": {"type": "string"}}}}
}


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


@router.get(
    "",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def download(sbx: Running, path: FilePath) -> StreamingResponse:
    """The file's content, streamed."""
    body = await prefetched(sbx.agent.read(check_path(path)))
    return StreamingResponse(body, media_type="application/octet-stream")


@router.put("", response_model=FileEntry, openapi_extra=_RAW_BODY)
async def upload(
    sbx: Running,
    request: Request,
    path: FilePath,
    mode: Annotated[int | None, Query(ge=0, le=0o7777, description="permission bits of a new file")] = None,
    append: bool = False,
) -> FileEntry:
    """Write the request body (streamed) to the file, creating parent directories."""
    entry = await sbx.agent.write(check_path(path), _body(request), mode=mode, append=append)
    return FileEntry.from_agent(entry)


@router.delete("", status_code=204, response_class=Response)
async def remove(sbx: Running, path: FilePath, recursive: bool = True) -> Response:
    await sbx.agent.remove(check_path(path), recursive=recursive)
    return Response(status_code=204)


@router.get("/list", response_model=FileList)
async def list_dir(sbx: Running, path: FilePath, depth: Annotated[int, Query(ge=1, le=32)] = 1) -> FileList:
    """Entries under a directory, `depth` levels deep."""
    entries = await sbx.agent.list(check_path(path), depth)
    return FileList(entries=[FileEntry.from_agent(e) for e in entries])


@router.get("/stat", response_model=FileEntry)
async def stat(sbx: Running, path: FilePath) -> FileEntry:
    return FileEntry.from_agent(await sbx.agent.stat(check_path(path)))


@router.get("/exists", response_model=ExistsResponse)
async def exists(sbx: Running, path: FilePath) -> ExistsResponse:
    return ExistsResponse(exists=await sbx.agent.exists(check_path(path)))


@router.post("/mkdir", response_model=MkdirResponse)
async def mkdir(sbx: Running, body: MkdirRequest) -> MkdirResponse:
    """Make a directory; `created` is false when it already existed."""
    return MkdirResponse(created=await sbx.agent.mkdir(body.path, parents=body.parents, mode=body.mode))


@router.post("/rename", response_model=FileEntry)
async def rename(sbx: Running, body: RenameRequest) -> FileEntry:
    return FileEntry.from_agent(await sbx.agent.rename(body.src, body.dst))


@router.get(
    "/tar",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def download_tar(sbx: Running, path: FilePath) -> StreamingResponse:
    """A directory as a tar stream."""
    body = await prefetched(sbx.agent.tar_read(check_path(path)))
    return StreamingResponse(body, media_type="application/x-tar")


@router.put("/tar", response_model=TarResult, openapi_extra=_TAR_BODY)
async def upload_tar(sbx: Running, request: Request, path: FilePath) -> TarResult:
    """Extract a tar stream (the request body) under `path`."""
    res = await sbx.agent.tar_write(check_path(path), _body(request))
    return TarResult(entries=res.entries, bytes=res.bytes)


@router.get(
    "/watch",
    response_model=None,
    responses={200: {"description": "NDJSON events {type: fs, op, path}", "content": {NDJSON: {}}}},
)
async def watch(sbx: Running, request: Request, path: FilePath, recursive: bool = False) -> StreamingResponse:
    """Stream filesystem events under a directory until the client disconnects."""
    check_path(path)
    entry = await sbx.agent.stat(path)
    if entry.type != "dir":
        raise errors.NotADirectoryError_(f"{path} is not a directory", path=path, field="path")
    stream = await sbx.agent.watch(path, recursive=recursive)
    return event_stream(request, watch_events(stream))
