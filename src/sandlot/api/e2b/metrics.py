"""E2B's `GET /sandboxes/{id}/metrics`: `Sandbox.get_metrics()` of the E2B SDKs, on Sandlot's samples.

The SDKs send `start`/`end` as whole Unix seconds and parse each sample into
their own `SandboxMetrics` (cpuCount, cpuUsedPct, memUsed, memTotal, memCache,
diskUsed, diskTotal, timestamp); what Sandlot samples beyond that (network,
processes, limit kills) is in its own API (`GET /sandboxes/{id}/metrics`).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from sandlot.api.deps import SandboxId, Svc, Who
from sandlot.models import SandboxMetric

__all__ = ["router"]

router = APIRouter(prefix="/e2b", tags=["e2b"], include_in_schema=False)


def e2b_metric(m: SandboxMetric) -> dict[str, object]:
    """One sample in E2B's shape (`SandboxMetric` of E2B's OpenAPI)."""
    return {
        "timestamp": dt.datetime.fromtimestamp(m.timestamp, dt.UTC).isoformat().replace("+00:00", "Z"),
        "timestampUnix": int(m.timestamp),
        # E2B counts whole cores; a fractional limit shows as the cores it touches
        "cpuCount": max(1, math.ceil(m.cpu_count)),
        "cpuUsedPct": m.cpu_used_pct,
        "memUsed": m.mem_used,
        "memTotal": m.mem_total,
        "memCache": m.mem_cache,
        "diskUsed": m.disk_used,
        "diskTotal": m.disk_total,
    }


@router.get("/sandboxes/{sandbox_id}/metrics")
async def get_metrics(
    sandbox_id: SandboxId,
    who: Who,
    svc: Svc,
    start: Annotated[int | None, Query(ge=0, le=1 << 40)] = None,
    end: Annotated[int | None, Query(ge=0, le=1 << 40)] = None,
) -> JSONResponse:
    # E2B's bounds are whole seconds: `end` covers the samples of its last second.
    samples = await svc.metrics(who, sandbox_id, start, None if end is None else end + 0.999)
    return JSONResponse([e2b_metric(m) for m in samples])
