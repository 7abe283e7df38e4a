"""E2B's REST control plane (`E2B_API_URL`), mapped onto Sandlot's sandboxes.

Mounted under `/e2b`, beside Sandlot's own `/sandboxes`: the SDK joins its
paths (`/sandboxes`, `/v2/sandboxes`, ...) to the API URL, so pointing
`E2B_API_URL` at `http://HOST:PORT/e2b` is all it takes. Authentication is the
SDK's `X-API-KEY` header with a Sandlot API key; errors are Sandlot's
`{code, message}` bodies with the statuses the SDK maps (401, 404, 409, ...).
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
import urllib.parse
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sandlot import errors
from sandlot.api import checkpoints
from sandlot.api.auth import Principal
from sandlot.api.deps import SandboxId, Svc, Who
from sandlot.api.e2b.access import access_token
from sandlot.api.port_access import port_registry
from sandlot.api.service import SandboxService
from sandlot.api.store import ACTIVE_STATES, SandboxRecord
from sandlot.models import (
    MAX_TIMEOUT_S,
    CheckpointInfo,
    EnvDict,
    ForkRequest,
    MetaDict,
    NetEntry,
    NetworkSettings,
    SandboxCreate,
)
from sandlot.node.protocol import CHECKPOINT_ID_RE, MAX_FORK

__all__ = ["ENVD_VERSION", "router"]

#: The envd version we answer as: the SDKs pick wire features by it (octet-stream uploads
#: from 0.5.7, file metadata from 0.6.2, watch events with entries from 0.6.3, the
#: network-mount flag of watches from 0.6.4: all served).
ENVD_VERSION = "0.6.4"

router = APIRouter(prefix="/e2b", tags=["e2b"], include_in_schema=False)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class NetworkBody(_Body):
    allow_public_traffic: bool = Field(default=True, alias="allowPublicTraffic")
    allow_out: list[NetEntry] = Field(default_factory=list, alias="allowOut", max_length=256)
    deny_out: list[NetEntry] = Field(default_factory=list, alias="denyOut", max_length=256)


class AutoResumeBody(_Body):
    enabled: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: object) -> object:
        return {"enabled": value} if isinstance(value, bool) else value  # an older form: a plain flag


class NewSandbox(_Body):
    template_id: str = Field(alias="templateID", min_length=1, max_length=256)
    timeout: int = Field(default=300, ge=1, le=MAX_TIMEOUT_S)
    metadata: MetaDict | None = None
    env_vars: EnvDict | None = Field(default=None, alias="envVars")
    #: the SDKs send it as `allow_internet_access` (Python 2.5x-2.6x) or `allowInternetAccess`; both work
    allow_internet_access: bool = Field(default=True, alias="allowInternetAccess")
    auto_pause: bool = Field(default=False, alias="autoPause")
    #: what an auto-pause keeps: memory and files (default), or files only (resuming boots afresh)
    auto_pause_memory: bool = Field(default=True, alias="autoPauseMemory")
    auto_resume: AutoResumeBody = Field(default_factory=AutoResumeBody, alias="autoResume")
    network: NetworkBody = Field(default_factory=NetworkBody)

    def on_timeout(self) -> Literal["kill", "pause", "hibernate"]:
        """E2B's lifecycle as Sandlot's: a pause that keeps the memory is Sandlot's pause (with the memory
        where the runtime can save it); a filesystem-only one is Sandlot's hibernation without memory."""
        if not self.auto_pause:
            if self.auto_resume.enabled:
                raise errors.InvalidArgumentError(
                    "autoResume needs autoPause: only a sandbox paused at its timeout can resume on traffic",
                    field="autoResume",
                )
            return "kill"
        if self.auto_pause_memory:
            return "pause"
        if self.auto_resume.enabled:
            raise errors.InvalidArgumentError(
                "autoResume cannot be combined with autoPauseMemory=false: a filesystem-only pause has no "
                "memory to resume into, so it is resumed with connect()",
                field="autoResume",
            )
        return "hibernate"

    def sandlot_network(self) -> NetworkSettings:
        """E2B's network options as a Sandlot policy: internet by default, `allowOut` only without it."""
        net = self.network
        if self.allow_internet_access:
            return NetworkSettings(mode="full", allow=net.allow_out, deny=net.deny_out)
        if net.allow_out:
            return NetworkSettings(mode="egress", allow=net.allow_out, deny=net.deny_out)
        return NetworkSettings(mode="none")


class TimeoutBody(_Body):
    timeout: int = Field(ge=0, le=MAX_TIMEOUT_S)


class ConnectBody(_Body):
    timeout: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_S)
    #: False: E2B's `on_resume="reboot"` (accepted; a sandbox paused with its memory comes back with it)
    memory: bool | None = None


class RefreshBody(_Body):
    duration: int | None = Field(default=None, ge=0, le=3600)


class PauseBody(_Body):
    #: None: E2B's default full pause; True: its memory to disk where the runtime can; False: files only
    memory: bool | None = None


class SnapshotBody(_Body):
    name: str | None = Field(default=None, max_length=64)


class ForkBody(_Body):
    #: E2B's defaults (its API spec)
    timeout: int = Field(default=15, ge=1, le=MAX_TIMEOUT_S)
    count: int = Field(default=1, ge=1, le=MAX_FORK)


#: The E2B SDK has no runtime option: `metadata={"sandlot.runtime": "microvm"}` chooses one.
RUNTIME_METADATA = "sandlot.runtime"

#: Memory for sandboxes of these templates (the E2B SDK cannot ask for any): a few
#: Jupyter kernels with pandas and matplotlib outgrow the default 512 MB.
TEMPLATE_MEMORY_MB = {"code-interpreter": 2048, "code-interpreter-v1": 2048}

#: E2B template names that mean another Sandlot template: E2B's default `base` (what E2B code
#: gets when it names none) is the E2B-compatible image, not Sandlot's own `base` (the node's
#: built-in `e2b-base`, node/image_e2b.py; the API knows templates only by name).
E2B_TEMPLATES = {"base": "e2b-base"}
_E2B_NAMES = {v: k for k, v in E2B_TEMPLATES.items()}

#: Sandlot states as E2B's two: a hibernated sandbox (E2B's filesystem-only pause) is paused too.
_STATES = {"running": ("starting", "running"), "paused": ("paused", "hibernated")}


def e2b_template(template: str) -> str:
    """The name E2B clients know a Sandlot template by."""
    return _E2B_NAMES.get(template, template)


def _e2b_state(rec: SandboxRecord) -> str:
    return "paused" if rec.state in _STATES["paused"] else "running"


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _domain(request: Request) -> str:
    """What the SDK's `get_host(port)` appends to `{port}-{id}.`: the server's ports domain, and
    this server's port when it is not the scheme's default (so a local server works as is)."""
    domain: str = request.app.state.host_routes.domain
    port = request.url.port
    return (
        domain if port is None or (request.url.scheme, port) in (("http", 80), ("https", 443)) else f"{domain}:{port}"
    )


def _sandbox(request: Request, rec: SandboxRecord) -> dict[str, object]:
    """E2B's `Sandbox` (what create, connect and resume answer)."""
    token = access_token(request, rec.sandbox_id)
    return {
        "templateID": e2b_template(rec.template),
        "sandboxID": rec.sandbox_id,
        "clientID": "sandlot",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": token,
        "trafficAccessToken": token,
        "domain": _domain(request),
    }


def _listed(rec: SandboxRecord) -> dict[str, object]:
    """E2B's `ListedSandbox` (and, with the token, `SandboxDetail`)."""
    return {
        "templateID": e2b_template(rec.template),
        "sandboxID": rec.sandbox_id,
        "clientID": "sandlot",
        "startedAt": _iso(rec.created_at),
        "endAt": _iso(rec.ends_at),
        "cpuCount": max(1, round(rec.cpu)),
        "memoryMB": rec.memory_mb,
        "diskSizeMB": rec.disk_mb,
        "state": _e2b_state(rec),
        "envdVersion": ENVD_VERSION,
        "metadata": rec.metadata,
    }


@router.post("/sandboxes", status_code=201)
@router.post("/v2/sandboxes", status_code=201)
async def create(body: NewSandbox, request: Request, who: Who, svc: Svc) -> JSONResponse:
    if CHECKPOINT_ID_RE.match(body.template_id):
        return JSONResponse(await _create_from_snapshot(body, request, who, svc), status_code=201)
    req = SandboxCreate(
        template=E2B_TEMPLATES.get(body.template_id, body.template_id),
        runtime=(body.metadata or {}).get(RUNTIME_METADATA),
        timeout=body.timeout,
        env=body.env_vars or {},
        metadata=body.metadata or {},
        network=body.sandlot_network(),
        on_timeout=body.on_timeout(),
        auto_resume=body.auto_resume.enabled,
    )
    if body.template_id in TEMPLATE_MEMORY_MB:
        req.memory_mb = TEMPLATE_MEMORY_MB[body.template_id]
    rec = await svc.create(who, req)
    return JSONResponse(await _started(request, rec, all_public=body.network.allow_public_traffic), status_code=201)


async def _started(request: Request, rec: SandboxRecord, *, all_public: bool) -> dict[str, object]:
    """A new sandbox's E2B `Sandbox`: its ports take the same token as envd (E2B's trafficAccessToken)."""
    await port_registry(request.app).configure(
        rec.sandbox_id, token=access_token(request, rec.sandbox_id), all_public=all_public
    )
    return _sandbox(request, rec)


async def _create_from_snapshot(
    body: NewSandbox, request: Request, who: Principal, svc: SandboxService
) -> dict[str, object]:
    """E2B's `Sandbox.create(snapshot_id)`: Sandlot forks one sandbox from the checkpoint, which keeps
    the snapshot's environment, network policy and limits; only timeout and metadata are the request's."""
    refused = [
        name
        for name, asked in (
            ("envVars", bool(body.env_vars)),
            ("autoPause", body.auto_pause),
            ("autoResume", body.auto_resume.enabled),
            ("allowInternetAccess", not body.allow_internet_access),
            ("network", bool(body.network.allow_out or body.network.deny_out)),
        )
        if asked
    ]
    if refused:
        raise errors.InvalidArgumentError(
            f"a sandbox made from snapshot {body.template_id} keeps the snapshot's environment and network "
            f"policy; {', '.join(refused)} cannot be set on it",
            field=refused[0],
        )
    req = ForkRequest(count=1, timeout=body.timeout, metadata=body.metadata or {})
    (rec,) = await checkpoints.fork(svc, who, body.template_id, req)
    return await _started(request, rec, all_public=body.network.allow_public_traffic)


def _metadata_query(value: str | None) -> dict[str, str]:
    """The SDK sends `metadata=urlencode({quote(k): quote(v)})`: decode both layers."""
    if not value:
        return {}
    try:
        pairs = urllib.parse.parse_qsl(value, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        message = f"metadata filter must be k=v&k2=v2, got {value!r}"
        raise errors.InvalidArgumentError(message, field="metadata") from None
    return {urllib.parse.unquote(k): urllib.parse.unquote(v) for k, v in pairs}


def _started_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        message = f"startedAfter must be an ISO 8601 date and time, got {value!r}"
        raise errors.InvalidArgumentError(message, field="startedAfter") from None
    # Start times are shown rounded to the microsecond: one read from a listing still selects that sandbox.
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp() - 1e-6


@router.get("/sandboxes")
@router.get("/v2/sandboxes")
async def list_sandboxes(
    who: Who,
    svc: Svc,
    metadata: Annotated[str | None, Query(max_length=8192)] = None,
    state: Annotated[str | None, Query(max_length=64)] = None,
    template: Annotated[str | None, Query(max_length=256)] = None,
    started_after: Annotated[str | None, Query(alias="startedAfter", max_length=64)] = None,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    next_token: Annotated[str | None, Query(alias="nextToken", max_length=512)] = None,
) -> JSONResponse:
    """E2B's listing: running and paused sandboxes in one list, newest first (`order=asc`: oldest first),
    paginated with `x-next-token` across both states."""
    wanted = [s for s in (state or "running,paused").split(",") if s]
    for s in wanted:
        if s not in _STATES:
            raise errors.InvalidArgumentError(f"state must be running or paused, got {s!r}", field="state")
    states = [sandlot for s in wanted for sandlot in _STATES[s]]
    templates = [template, E2B_TEMPLATES.get(template, template)] if template else []
    recs, nxt = await svc.list(
        who,
        states=states,
        metadata=_metadata_query(metadata),
        limit=limit,
        cursor=next_token,
        newest_first=order == "desc",
        created_after=_started_after(started_after),
        templates=templates,
    )
    headers = {"x-next-token": nxt} if nxt else {}
    return JSONResponse([_listed(r) for r in recs if r.state in states], headers=headers)


async def _active(who: Principal, svc: SandboxService, sandbox_id: str) -> SandboxRecord:
    """The record of a sandbox that still exists (running, paused or hibernated), or E2B's not-found."""
    rec = await svc.get(who, sandbox_id)
    if rec.state not in ACTIVE_STATES:
        raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} is {rec.state}")
    return rec


@router.get("/sandboxes/{sandbox_id}")
async def get(sandbox_id: SandboxId, request: Request, who: Who, svc: Svc) -> JSONResponse:
    rec = await _active(who, svc, sandbox_id)
    token = access_token(request, sandbox_id)
    lifecycle = {"onTimeout": "kill" if rec.on_timeout == "kill" else "pause", "autoResume": rec.auto_resume}
    return JSONResponse({**_listed(rec), "envdAccessToken": token, "domain": _domain(request), "lifecycle": lifecycle})


@router.delete("/sandboxes/{sandbox_id}", status_code=204)
async def kill(sandbox_id: SandboxId, who: Who, svc: Svc) -> Response:
    await _active(who, svc, sandbox_id)
    await svc.kill(who, sandbox_id)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/timeout", status_code=204)
async def set_timeout(sandbox_id: SandboxId, body: TimeoutBody, who: Who, svc: Svc) -> Response:
    await svc.set_timeout(who, sandbox_id, body.timeout)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/refreshes", status_code=204)
async def refresh(sandbox_id: SandboxId, who: Who, svc: Svc, body: RefreshBody | None = None) -> Response:
    rec = await svc.get(who, sandbox_id)
    duration = (body.duration if body else None) or 60
    if rec.ends_at < time.time() + duration:
        await svc.set_timeout(who, sandbox_id, duration)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/pause", status_code=204)
async def pause(sandbox_id: SandboxId, who: Who, svc: Svc, body: PauseBody | None = None) -> Response:
    """E2B's pause. Default (a full pause): a freeze, memory resident. `memory=true`: Sandlot's memory
    pause, which releases the memory, where the runtime can (gVisor refuses it while the sandbox has
    TCP connections: then a freeze). `memory=false` (`mode="filesystem"`): processes stopped, files
    kept, and resuming boots the sandbox afresh (Sandlot's hibernation without memory)."""
    rec = await _active(who, svc, sandbox_id)
    if rec.state != "running":
        raise errors.SandboxStateError(f"sandbox {sandbox_id} is already paused")
    memory = body.memory if body is not None else None
    if memory is False:
        await svc.hibernate(who, sandbox_id)
        return Response(status_code=204)
    if memory and (await svc.live_status(who, sandbox_id)).saves_memory:
        try:
            await svc.pause(who, sandbox_id, memory=True)
            return Response(status_code=204)
        except errors.SandboxStateError:
            pass
    await svc.pause(who, sandbox_id)
    return Response(status_code=204)


def _snapshot(ck: CheckpointInfo) -> dict[str, object]:
    """E2B's `SnapshotInfo`: a snapshot is a Sandlot checkpoint (of the filesystem), named by its id."""
    return {"snapshotID": ck.checkpoint_id, "names": [ck.name]}


@router.post("/sandboxes/{sandbox_id}/snapshots", status_code=201)
async def create_snapshot(sandbox_id: SandboxId, who: Who, svc: Svc, body: SnapshotBody | None = None) -> JSONResponse:
    """A filesystem checkpoint (E2B's `mode="filesystem"`, whatever was asked): sandboxes made from it
    boot afresh on its files, as Sandlot's fork does."""
    name = (body.name if body else None) or f"snapshot-{secrets.token_hex(4)}"
    ck = await checkpoints.checkpoint(svc, who, sandbox_id, name)
    return JSONResponse(_snapshot(ck), status_code=201)


@router.get("/snapshots")
async def list_snapshots(
    who: Who,
    svc: Svc,
    sandbox_id: Annotated[str | None, Query(alias="sandboxID", max_length=64)] = None,
    name: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    next_token: Annotated[str | None, Query(alias="nextToken", max_length=64)] = None,
) -> JSONResponse:
    """The team's snapshots, oldest first; `nextToken` is the id of the last one of the previous page."""
    if sandbox_id:
        cks = await checkpoints.list_checkpoints(svc, who, sandbox_id)
    else:
        cks = [c for c in await svc.node.list_checkpoints() if await svc.store.get_sandbox(c.sandbox_id, who.team)]
    if name:
        cks = [c for c in cks if name in (c.checkpoint_id, c.name)]
    if next_token:
        ids = [c.checkpoint_id for c in cks]
        if next_token not in ids:
            message = f"nextToken {next_token!r} is no snapshot of this list"
            raise errors.InvalidArgumentError(message, field="nextToken")
        cks = cks[ids.index(next_token) + 1 :]
    page = cks[:limit]
    headers = {"x-next-token": page[-1].checkpoint_id} if len(cks) > limit else {}
    return JSONResponse([_snapshot(c) for c in page], headers=headers)


@router.delete("/templates/{template_id}", status_code=204)
async def delete_snapshot(template_id: Annotated[str, Path(max_length=256)], who: Who, svc: Svc) -> Response:
    if not CHECKPOINT_ID_RE.match(template_id):
        raise errors.InvalidArgumentError(
            f"{template_id!r} is not a snapshot id (ck-...): the E2B facade deletes snapshots only; "
            "templates are deleted through Sandlot's own DELETE /templates/{name} (admin keys)",
            field="templateID",
        )
    await checkpoints.delete(svc, who, template_id)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/fork", status_code=201)
async def fork(
    sandbox_id: SandboxId, request: Request, who: Who, svc: Svc, body: ForkBody | None = None
) -> JSONResponse:
    """Checkpoint the sandbox's filesystem, fork `count` sandboxes from it (they boot afresh on its files,
    with the parent's environment, network policy and metadata), then drop the checkpoint. All or none."""
    body = body or ForkBody()
    await svc.live_status(who, sandbox_id)  # the caller's, and alive
    all_public = (await port_registry(request.app).get(sandbox_id)).all_public
    rec = await svc.get(who, sandbox_id)
    ck = await checkpoints.checkpoint(svc, who, sandbox_id, f"e2b-fork-{secrets.token_hex(4)}")
    try:
        recs = await checkpoints.fork(
            svc, who, ck.checkpoint_id, ForkRequest(count=body.count, timeout=body.timeout, metadata=rec.metadata)
        )
    finally:  # the forks' disks are clones: the checkpoint is not needed past their start
        await checkpoints.delete(svc, who, ck.checkpoint_id)
    return JSONResponse([{"sandbox": await _started(request, r, all_public=all_public)} for r in recs], status_code=201)


@router.post("/sandboxes/{sandbox_id}/resume", status_code=201)
@router.post("/sandboxes/{sandbox_id}/connect")
@router.post("/v2/sandboxes/{sandbox_id}/connect")
async def connect(
    sandbox_id: SandboxId, request: Request, who: Who, svc: Svc, body: ConnectBody | None = None
) -> JSONResponse:
    """Resume a paused sandbox (201) or attach to a running one (200); a timeout only ever extends it.
    A filesystem-only pause (hibernated) boots afresh on its files."""
    rec = await _active(who, svc, sandbox_id)
    status = 200
    if rec.state in ("paused", "hibernated"):
        rec = await svc.resume(who, sandbox_id)
        status = 201
    if body is not None and body.timeout is not None and rec.ends_at < time.time() + body.timeout:
        rec = await svc.set_timeout(who, sandbox_id, body.timeout)
    return JSONResponse(_sandbox(request, rec), status_code=status)
