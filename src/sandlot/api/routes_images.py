"""Images and templates: pull from a registry (progress streamed), list, inspect, delete.

Templates live on the node; who sees and uses which is template_access.py's
(shared ones for everyone, a team's own for that team). Deleting one (which
frees its layers) and start commands are for admins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from sandlot import errors
from sandlot.api.auth import require_admin
from sandlot.api.deps import Svc, Who
from sandlot.api.streams import event_stream
from sandlot.api.template_access import may_use, usable, writer
from sandlot.models import ErrorBody, ImagePull, TemplateInfo, TemplateList, TemplateStart

__all__ = ["router"]

router = APIRouter(tags=["templates"], responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 422)})

TemplateName = Annotated[str, PathParam(min_length=1, max_length=512, description="a template name or image reference")]


@router.post("/images/pull", response_model=None, responses={200: {"content": {"application/x-ndjson": {}}}})
async def pull_image(body: ImagePull, who: Who, svc: Svc, request: Request) -> StreamingResponse:
    """Pull an image into a template; streams `progress` lines, then `template` (or `error`)."""
    events = await svc.node.pull_template(
        body.ref, name=body.name, platform=body.platform, auth=body.auth, team=writer(who)
    )
    return event_stream(request, events)


_TAR_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/x-tar": {"schema": {"type": "string"}}}}
}


def request_body(request: Request) -> AsyncIterator[bytes]:
    """The request's body as it arrives (the node writes it where it needs it)."""
    return request.stream()


@router.post(
    "/templates/build",
    response_model=None,
    openapi_extra=_TAR_BODY,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def build_template(
    request: Request,
    who: Who,
    svc: Svc,
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
    args: dict[str, str] = {}
    for item in build_arg:
        key, sep, value = item.partition("=")
        if not sep or not key or "\0" in item:
            raise errors.InvalidArgumentError(f"build_arg must be KEY=VALUE, got {item!r}", field="build_arg")
        args[key] = value
    events = await svc.node.build_template(
        name, request_body(request), dockerfile=dockerfile, build_args=args, network=network, team=writer(who)
    )
    return event_stream(request, events)


@router.get("/templates", response_model=TemplateList)
async def list_templates(who: Who, svc: Svc) -> TemplateList:
    """The templates on this node (built-ins appear once built)."""
    return TemplateList(templates=[t for t in await svc.node.list_templates() if may_use(t, who)])


@router.put("/templates/{name:path}/start", response_model=TemplateInfo)
async def set_start(name: TemplateName, body: TemplateStart, who: Who, svc: Svc) -> TemplateInfo:
    """Give the template a start command and readiness check (admin only): new sandboxes wait for it."""
    require_admin(who)
    return await svc.node.set_template_start(name, body)


@router.delete("/templates/{name:path}/start", response_model=TemplateInfo)
async def clear_start(name: TemplateName, who: Who, svc: Svc) -> TemplateInfo:
    """Remove the template's start command (admin only)."""
    require_admin(who)
    return await svc.node.set_template_start(name, None)


@router.get("/templates/{name:path}", response_model=TemplateInfo)
async def get_template(name: TemplateName, who: Who, svc: Svc) -> TemplateInfo:
    return usable(await svc.node.get_template(name), name, who)


@router.delete("/templates/{name:path}", status_code=204, response_class=Response)
async def delete_template(name: TemplateName, who: Who, svc: Svc) -> Response:
    """Delete a template (admin only) and free the layers no other template uses."""
    require_admin(who)
    await svc.node.delete_template(name)
    return Response(status_code=204)
