"""Images and templates: pull from a registry (progress streamed), list, inspect, delete.

Templates belong to the node, shared by every team: any key may pull and list;
deleting one (which frees its layers) is for admins.
"""

from __future__ import annotations

import asyncio
import shutil
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from sandlot import errors
from sandlot.api.auth import require_admin
from sandlot.api.deps import Who
from sandlot.api.streams import event_stream
from sandlot.models import (
    ErrorBody,
    ImagePull,
    ProgressEvent,
    TemplateEvent,
    TemplateInfo,
    TemplateList,
    TemplateStart,
)
from sandlot.node import Node
from sandlot.node.dockerfile.builder import BuildOptions, build
from sandlot.node.images import Image
from sandlot.node.oci.reference import Reference
from sandlot.node.oci.registry import RegistryConfig
from sandlot.node.oci.store import check_template_name
from sandlot.node.readiness import StartSpec
from sandlot.safetar import extract_all

__all__ = ["progress_events", "router", "template_info"]

Progress = Callable[[str], None]

router = APIRouter(tags=["templates"], responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 422)})

TemplateName = Annotated[str, PathParam(min_length=1, max_length=512, description="a template name or image reference")]


def template_info(image: Image) -> TemplateInfo:
    c = image.config
    return TemplateInfo(
        name=image.name,
        source=image.source,
        digest=image.digest,
        layers=len(image.layers),
        size=image.size,
        created_at=image.created_at,
        env=c.env,
        cwd=c.cwd,
        user=c.user,
        entrypoint=c.entrypoint,
        cmd=c.cmd,
        start=TemplateStart(**image.start.to_dict()) if image.start else None,
    )


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


async def progress_events(work: Callable[[Progress], Awaitable[Image]]) -> AsyncIterator[BaseModel]:
    """`progress` lines while `work(progress)` runs (it may call progress from any thread), then the template."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def progress(line: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, line)

    task = asyncio.ensure_future(work(progress))
    try:
        while not task.done() or not queue.empty():
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield ProgressEvent(message=getter.result())
            else:
                getter.cancel()
        yield TemplateEvent(template=template_info(task.result()))
    finally:
        if not task.done():  # the client left: the work still finishes (a thread cannot be stopped)
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


@router.post("/images/pull", response_model=None, responses={200: {"content": {"application/x-ndjson": {}}}})
async def pull_image(body: ImagePull, who: Who, request: Request) -> StreamingResponse:
    """Pull an image into a template; streams `progress` lines, then `template` (or `error`)."""
    Reference.parse(body.ref)  # a malformed reference is a 400 before the stream starts
    check_template_name(body.name or body.ref)
    node = _node(request)
    auth = RegistryConfig(body.auth.username, body.auth.password) if body.auth else None

    async def work(progress: Progress) -> Image:
        return await asyncio.to_thread(
            node.images.pull, body.ref, name=body.name, platform=body.platform, auth=auth, progress=progress
        )

    return event_stream(request, progress_events(work))


_TAR_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/x-tar": {"schema": {"type": "string"}}}}
}
MAX_CONTEXT_BYTES = 4 << 30


async def _receive_context(request: Request, dest: Path) -> None:
    """The request body (a tar of the build context) unpacked into `dest`; nothing may land outside it."""
    archive = dest.with_suffix(".tar")
    n = 0
    try:
        with open(archive, "wb") as f:
            async for chunk in request.stream():
                n += len(chunk)
                if n > MAX_CONTEXT_BYTES:
                    raise errors.InvalidArgumentError(f"the build context is larger than {MAX_CONTEXT_BYTES} bytes")
                f.write(chunk)

        def unpack() -> None:
            try:
                with tarfile.open(archive) as tar:
                    extract_all(tar, dest)
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise errors.InvalidArgumentError(f"the build context is not a valid tar archive: {exc}") from None

        await asyncio.to_thread(unpack)
    finally:
        archive.unlink(missing_ok=True)


@router.post(
    "/templates/build",
    response_model=None,
    openapi_extra=_TAR_BODY,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def build_template(
    request: Request,
    who: Who,
    name: Annotated[str, Query(min_length=1, max_length=128, description="the template to make")],
    dockerfile: Annotated[str, Query(min_length=1, max_length=1024, description="its path in the context")] = (
        "Dockerfile"
    ),
    build_arg: Annotated[
        list[Annotated[str, Query(max_length=4096)]], Query(description="KEY=VALUE; repeat for several")
    ] = [],  # noqa: B006
    network: Annotated[
        Literal["full", "none"],
        Query(description="RUN steps' network: the outside world (minus what is always blocked) or none"),
    ] = "full",
) -> StreamingResponse:
    """Build a template from a Dockerfile in the uploaded context (a tar); streams the steps' output."""
    check_template_name(name)
    args: dict[str, str] = {}
    for item in build_arg:
        key, sep, value = item.partition("=")
        if not sep or not key or "\0" in item:
            raise errors.InvalidArgumentError(f"build_arg must be KEY=VALUE, got {item!r}", field="build_arg")
        args[key] = value
    node = _node(request)
    work_dir = node.images.layers.scratch("context")
    try:
        await _receive_context(request, work_dir / "context")
        path = (work_dir / "context" / dockerfile).resolve()
        if not path.is_relative_to((work_dir / "context").resolve()) or not path.is_file():
            raise errors.InvalidArgumentError(
                f"no Dockerfile at {dockerfile!r} in the build context", field="dockerfile"
            )
        text = path.read_text(errors="replace")
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    opts = BuildOptions(name=name, context=work_dir / "context", dockerfile=text, build_args=args, network=network)

    async def work(progress: Progress) -> Image:
        try:
            return await build(node, opts, progress)
        finally:
            await asyncio.to_thread(shutil.rmtree, work_dir, True)

    return event_stream(request, progress_events(work))


@router.get("/templates", response_model=TemplateList)
async def list_templates(who: Who, request: Request) -> TemplateList:
    """The templates on this node (built-ins appear once built)."""
    images = await asyncio.to_thread(_node(request).images.list_templates)
    return TemplateList(templates=[template_info(i) for i in images])


@router.put("/templates/{name:path}/start", response_model=TemplateInfo)
async def set_start(name: TemplateName, body: TemplateStart, who: Who, request: Request) -> TemplateInfo:
    """Give the template a start command and readiness check (admin only): new sandboxes wait for it."""
    require_admin(who)
    start = StartSpec(body.cmd, body.ready_cmd, body.ready_port, body.timeout)
    return template_info(await asyncio.to_thread(_node(request).images.set_start, name, start))


@router.delete("/templates/{name:path}/start", response_model=TemplateInfo)
async def clear_start(name: TemplateName, who: Who, request: Request) -> TemplateInfo:
    """Remove the template's start command (admin only)."""
    require_admin(who)
    return template_info(await asyncio.to_thread(_node(request).images.set_start, name, None))


@router.get("/templates/{name:path}", response_model=TemplateInfo)
async def get_template(name: TemplateName, who: Who, request: Request) -> TemplateInfo:
    image = await asyncio.to_thread(_node(request).images.get, name)
    if image is None:
        raise errors.ImageNotFoundError(f"template {name!r} not found")
    return template_info(image)


@router.delete("/templates/{name:path}", status_code=204, response_class=Response)
async def delete_template(name: TemplateName, who: Who, request: Request) -> Response:
    """Delete a template (admin only) and free the layers no other template uses."""
    require_admin(who)
    node = _node(request)
    # Sandboxes use their template's layers, and a warm pool starts more of them.
    in_use = {s.image.name for s in node.list_sandboxes()} | {k.image for k in node.pool.sizes()}
    await asyncio.to_thread(node.images.remove, name, in_use)
    return Response(status_code=204)
