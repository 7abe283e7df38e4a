"""Images in and out as files: import a tarball into a template, export a template or a sandbox.

- POST /templates/import: the body is a `docker save` / `podman save` tarball, or an OCI
  image layout in a tar; streams progress, then the template.
- GET /templates/{name}/export and GET /sandboxes/{id}/export: an OCI image layout, as a
  tar, that skopeo, podman and umoci read (`skopeo copy oci-archive:file.tar ...`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from sandlot.api.deps import SandboxId, Svc, Who
from sandlot.api.routes_images import TemplateName, request_body
from sandlot.api.streams import event_stream
from sandlot.api.template_access import usable, writer
from sandlot.models import ErrorBody

__all__ = ["router"]

router = APIRouter(tags=["templates"], responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 422)})

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
    svc: Svc,
    name: Annotated[str, Query(min_length=1, max_length=128, description="the template to make")],
    tag: Annotated[str | None, Query(max_length=256, description="which image, when the tarball holds several")] = None,
) -> StreamingResponse:
    """Import a `docker save` tarball or an OCI layout tar into a template; streams progress."""
    events = await svc.node.import_template(name, request_body(request), tag=tag, team=writer(who))
    return event_stream(request, events)


@router.get("/templates/{name:path}/export", response_class=StreamingResponse, responses=_TAR_ANSWER)
async def export_template(name: TemplateName, who: Who, svc: Svc, tag: Tag = "latest") -> StreamingResponse:
    """The template as an OCI image layout (a tar), image `tag`."""
    usable(await svc.node.get_template(name), name, who)  # another team's own is "not found"
    return StreamingResponse(await svc.node.export_template(name, tag), media_type="application/x-tar")


@router.get("/sandboxes/{sandbox_id}/export", response_class=StreamingResponse, responses=_TAR_ANSWER)
async def export_sandbox_image(sandbox_id: SandboxId, who: Who, svc: Svc, tag: Tag = "latest") -> StreamingResponse:
    """The sandbox's filesystem (its template's layers plus what it changed) as an OCI layout tar."""
    await svc.live_status(who, sandbox_id)  # the caller's, and alive
    return StreamingResponse(await svc.node.export_sandbox(sandbox_id, tag), media_type="application/x-tar")
