"""Images and templates: pull from a registry (progress streamed), list, inspect, delete.

Templates belong to the node, shared by every team: any key may pull and list;
deleting one (which frees its layers) is for admins.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from sandlot import errors
from sandlot.api.auth import require_admin
from sandlot.api.deps import Who
from sandlot.api.models import ErrorBody, ImagePull, ProgressEvent, TemplateEvent, TemplateInfo, TemplateList
from sandlot.api.streams import event_stream
from sandlot.node import Node
from sandlot.node.images import Image
from sandlot.node.oci.reference import Reference
from sandlot.node.oci.registry import RegistryConfig
from sandlot.node.oci.store import check_template_name

__all__ = ["router", "template_info"]

router = APIRouter(tags=["templates"], responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 422)})

TemplateName = Annotated[str, Path(min_length=1, max_length=512, description="a template name or image reference")]


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
    )


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


async def pull_events(node: Node, body: ImagePull) -> AsyncIterator[BaseModel]:
    """Progress lines while the pull runs in a thread, then the template."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def progress(line: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, line)

    auth = RegistryConfig(body.auth.username, body.auth.password) if body.auth else None
    task = asyncio.ensure_future(
        asyncio.to_thread(
            node.images.pull, body.ref, name=body.name, platform=body.platform, auth=auth, progress=progress
        )
    )
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
        if not task.done():  # the client left: the pull still finishes (a thread cannot be stopped)
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


@router.post("/images/pull", response_model=None, responses={200: {"content": {"application/x-ndjson": {}}}})
async def pull_image(body: ImagePull, who: Who, request: Request) -> StreamingResponse:
    """Pull an image into a template; streams `progress` lines, then `template` (or `error`)."""
    Reference.parse(body.ref)  # a malformed reference is a 400 before the stream starts
    check_template_name(body.name or body.ref)
    return event_stream(request, pull_events(_node(request), body))


@router.get("/templates", response_model=TemplateList)
async def list_templates(who: Who, request: Request) -> TemplateList:
    """The templates on this node (built-ins appear once built)."""
    images = await asyncio.to_thread(_node(request).images.list_templates)
    return TemplateList(templates=[template_info(i) for i in images])


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
