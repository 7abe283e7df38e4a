"""`GET /metrics`: Prometheus' text format, admin keys only (figures: api/telemetry.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from sandlot.api.auth import require_admin
from sandlot.api.deps import Svc, Who
from sandlot.api.telemetry import CONTENT_TYPE

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}, 403: {}},
)
async def metrics(who: Who, svc: Svc) -> Response:
    """The server's figures in Prometheus' text format (admin keys only)."""
    require_admin(who, "read the server's metrics")
    return Response(await svc.telemetry.render(svc.store, svc.node), media_type=CONTENT_TYPE)
