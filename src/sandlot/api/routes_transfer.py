"""Images in and out as files: import a tarball into a template, export a template or a sandbox.

- POST /templates/import: the body is a `docker save` / `podman save` tarball, or an OCI
  image layout in a tar; streams progress, then the template.
- GET /templates/{name}/export and GET /sandboxes/{id}/export: an OCI image layout, as a
  tar, that skopeo, podman and umoci read (`skopeo copy oci-archive:file.tar ...`).
"""

from __future__ import annotations

import asyncio
import shutil
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from sandlot import errors
from sandlot.api.deps import SandboxId, Svc, Who
from sandlot.api.routes_images import Progress, TemplateName, _node, progress_events
from sandlot.api.streams import event_stream
from sandlot.models import ErrorBody
from sandlot.node.images import Image
from sandlot.node.oci.store import check_template_name
from sandlot.node.sandbox_export import export_sandbox

__all__ = ["router"]

router = APIRouter(tags=["templates"], responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 422)})

MAX_IMPORT_BYTES = 32 << 30
_TAR_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/x-tar": {"schema": {"type": "string"}}}}
}
_TAR_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}
}
Tag = Annotated[str, Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")]


@router.post("/templates/import", response_model=None, openapi_extra=_TAR_BODY)
async def import_template(
    request: Request,
    who: Who,
    name: Annotated[str, Query(min_length=1, max_length=128, description="the template to make")],
    tag: Annotated[str | None, Query(max_length=256, description="which image, when the tarball holds several")] = None,
) -> StreamingResponse:
    """Import a `docker save` tarball or an OCI layout tar into a template; streams progress."""
    check_template_name(name)
    node = _node(request)
    work = node.images.layers.scratch("import")
    archive = work / "image.tar"
    try:
        n = 0
        with open(archive, "wb") as f:
            async for chunk in request.stream():
                n += len(chunk)
                if n > MAX_IMPORT_BYTES:
                    raise errors.InvalidArgumentError(f"the image is larger than {MAX_IMPORT_BYTES} bytes")
                f.write(chunk)
        if not tarfile.is_tarfile(archive):
            raise errors.InvalidArgumentError("the body is not a tar archive (docker save, or an OCI layout)")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise

    async def work_fn(progress: Progress) -> Image:
        try:
            return await asyncio.to_thread(node.images.import_image, archive, name, tag=tag, progress=progress)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    return event_stream(request, progress_events(work_fn))


async def _tar_of(layout: Path, work: Path) -> StreamingResponse:
    """The layout directory as a tar, streamed from a file; `work` is removed once it is sent."""
    archive = work / "layout.tar"

    def pack() -> None:
        with tarfile.open(archive, "w") as tar:
            for child in sorted(layout.iterdir()):
                tar.add(child, arcname=child.name)

    await asyncio.to_thread(pack)

    async def body() -> AsyncIterator[bytes]:
        try:
            with open(archive, "rb") as f:
                while chunk := await asyncio.to_thread(f.read, 1 << 20):
                    yield chunk
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    return StreamingResponse(body(), media_type="application/x-tar")


@router.get("/templates/{name:path}/export", response_class=StreamingResponse, responses=_TAR_ANSWER)
async def export_template(name: TemplateName, who: Who, request: Request, tag: Tag = "latest") -> StreamingResponse:
    """The template as an OCI image layout (a tar), image `tag`."""
    node = _node(request)
    work = node.images.layers.scratch("export")
    try:
        await asyncio.to_thread(node.images.export, name, work / "layout", tag=tag, progress=lambda line: None)
        return await _tar_of(work / "layout", work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


@router.get("/sandboxes/{sandbox_id}/export", response_class=StreamingResponse, responses=_TAR_ANSWER)
async def export_sandbox_image(
    sandbox_id: SandboxId, who: Who, svc: Svc, request: Request, tag: Tag = "latest"
) -> StreamingResponse:
    """The sandbox's filesystem (its template's layers plus what it changed) as an OCI layout tar."""
    await svc.sandbox(who, sandbox_id)  # the caller's, and alive
    node = _node(request)
    work = node.images.layers.scratch("export")
    try:
        await export_sandbox(node, sandbox_id, work / "layout", tag=tag)
        return await _tar_of(work / "layout", work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
