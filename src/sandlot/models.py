"""The SDK <-> API wire protocol: one typed model per request and response.

Both ends import this module (the server validates requests with it, the SDK
parses responses with it), so it depends on pydantic only: never on FastAPI,
the node or the database.

Streams (command output, process output, file watches) are NDJSON: one JSON
object per line, each tagged by `type` (see `StreamEvent`). The same objects
travel as Server-Sent Events when a client asks for `text/event-stream`.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandlot.agent import protocol as p

__all__ = [
    "EVENT_TYPES",
    "MAX_TIMEOUT_S",
    "METRICS_INTERVAL_S",
    "NDJSON",
    "SSE",
    "CheckpointCreate",
    "CheckpointInfo",
    "CheckpointList",
    "ErrorBody",
    "ErrorEvent",
    "EventInfo",
    "EventList",
    "EventType",
    "ExistsResponse",
    "ExitEvent",
    "FileEntry",
    "FileList",
    "ForkRequest",
    "KeyCreate",
    "KeyCreated",
    "KeyInfo",
    "KeyList",
    "MkdirRequest",
    "MkdirResponse",
    "OutputEvent",
    "PauseRequest",
    "ProcessInfo",
    "ProcessList",
    "ProcessStarted",
    "PtyClientMessage",
    "PtySize",
    "RenameRequest",
    "ResizeRequest",
    "RestoreRequest",
    "SandboxCreate",
    "SandboxInfo",
    "SandboxList",
    "SandboxMetric",
    "SandboxMetrics",
    "SandboxState",
    "SignalRequest",
    "SshKeyCreate",
    "SshKeyInfo",
    "SshKeyList",
    "StartEvent",
    "StreamEvent",
    "TarResult",
    "TeamInfo",
    "TeamList",
    "TeamQuota",
    "TeamQuotaUpdate",
    "TeamUsage",
    "TimeoutUpdate",
    "VolumeCreate",
    "VolumeInfo",
    "VolumeList",
    "VolumeMountRequest",
    "WatchEventOut",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookDelivery",
    "WebhookDeliveryList",
    "WebhookInfo",
    "WebhookList",
    "WsTicket",
]

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
#: A sandbox lives at most 30 days unless its timeout is extended again.
MAX_TIMEOUT_S = 30 * 24 * 3600


def _no_nul(value: str, what: str) -> str:
    if "\0" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    return value


class _Request(BaseModel):
    # Requests are strict about unknown fields: a typo must not pass silently.
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    # Responses tolerate new fields, so an older SDK can talk to a newer server.
    model_config = ConfigDict(extra="ignore")


class ErrorBody(_Response):
    """Every error response: `code` maps to an exception in sandlot.errors.ERROR_CODES."""

    code: str
    message: str
    field: str | None = None


# ---------------------------------------------------------------- sandboxes


class SandboxState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    HIBERNATED = "hibernated"
    KILLED = "killed"
    #: its node stopped answering (a fleet): it may still run, and is reported again once the node is back
    UNKNOWN = "unknown"


EnvDict = dict[Annotated[str, Field(min_length=1, max_length=1024)], Annotated[str, Field(max_length=65536)]]
MetaDict = dict[Annotated[str, Field(min_length=1, max_length=256)], Annotated[str, Field(max_length=4096)]]


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for key, value in env.items():
        if "=" in key:
            raise ValueError(f"environment variable name {key!r} must not contain '='")
        _no_nul(key, "environment variable names")
        _no_nul(value, "environment variable values")
    return env


class RegistryAuth(_Request):
    """Credentials for the image's registry (used for this request only, never stored)."""

    username: str = Field(min_length=1, max_length=256)
    password: str = Field(max_length=4096)


NetworkMode = Literal["none", "egress", "full"]
NetEntry = Annotated[str, Field(min_length=1, max_length=253, description="an IPv4 CIDR or a host name")]


class NetworkSettings(_Request):
    """A sandbox's network policy: POST /sandboxes `network`, PUT /sandboxes/{id}/network.

    `none`: no network. `egress`: only `allow` (minus `deny`). `full`: anything
    but `deny` and what is always blocked (the host, other sandboxes, private
    ranges, 169.254.0.0/16) unless `allow` names it. `deny` wins.
    """

    mode: NetworkMode = "none"
    allow: list[NetEntry] = Field(default_factory=list, max_length=256)
    deny: list[NetEntry] = Field(default_factory=list, max_length=256)
    egress_bytes_per_s: int | None = Field(default=None, ge=1024, le=1 << 40, description="bandwidth cap")
    max_connections: int = Field(default=256, ge=1, le=65536, description="open connections at most")


class NetworkInfo(_Response):
    """A sandbox's network and exposed-port access (its team sees the access token)."""

    mode: str
    allow: list[str] = []
    deny: list[str] = []
    egress_bytes_per_s: int | None = None
    max_connections: int = 256
    address: str | None = Field(default=None, description="the sandbox's IPv4 address (none for mode 'none')")
    resolved: dict[str, list[str]] = Field(default_factory=dict, description="host names of the policy, as resolved")
    access_token: str = Field(description="opens its private ports: header X-Sandlot-Access-Token")
    public_ports: list[int] = []
    port_host: str = Field(description="host name pattern of its ports: '{port}-<sandbox id>.<domain>'")


class VolumeMountRequest(_Request):
    """A volume of the team, by name, mounted at `path` inside the sandbox."""

    name: str = Field(min_length=1, max_length=64)
    path: str = Field(min_length=1, max_length=1024)
    read_only: bool = False


class SandboxCreate(_Request):
    """POST /sandboxes."""

    template: str | None = Field(
        default=None, min_length=1, max_length=256, description="image name; default: the server's ('base': Debian)"
    )
    runtime: str | None = Field(
        default=None, min_length=1, max_length=64, description="gvisor (default), microvm or container"
    )
    cpu: float = Field(default=1.0, allow_inf_nan=False, description="cores")
    memory_mb: int = 512
    disk_mb: int = 1024
    env: EnvDict = Field(default_factory=dict)
    metadata: MetaDict = Field(default_factory=dict, max_length=64)
    timeout: int = Field(default=300, ge=1, le=MAX_TIMEOUT_S, description="seconds until the server kills it")
    registry_auth: RegistryAuth | None = Field(
        default=None, description="credentials to pull `template` when it is an image reference not yet here"
    )
    network: NetworkMode | NetworkSettings = Field(default="none", description="a mode, or a policy")
    persistent: bool = Field(
        default=False, description="never killed by its timeout; hibernates when idle and wakes on the next request"
    )
    on_timeout: Literal["kill", "pause", "hibernate"] = Field(
        default="kill",
        description="what its timeout does to it: kill it; pause it (with its memory where the runtime can); "
        "or hibernate it (processes stopped, filesystem kept: resuming boots it afresh)",
    )
    auto_resume: bool = Field(
        default=False, description="paused or hibernated, it resumes on the next request to it (its ports included)"
    )
    volumes: list[VolumeMountRequest] = Field(default_factory=list, max_length=32)
    node_labels: dict[Annotated[str, Field(min_length=1, max_length=63)], Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=16, description="a fleet places it on a node with these labels"
    )

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v)

    @field_validator("template", "runtime")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else _no_nul(v, "names")

    @field_validator("metadata")
    @classmethod
    def _meta(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            _no_nul(key, "metadata keys")
            _no_nul(value, "metadata values")
        return v


class SandboxInfo(_Response):
    sandbox_id: str
    team: str
    template: str
    runtime: str
    cpu: float
    memory_mb: int
    disk_mb: int
    metadata: dict[str, str]
    state: SandboxState
    created_at: float
    ends_at: float
    exit_reason: str | None = None
    #: filled in by GET /sandboxes/{id} and POST /sandboxes (not in lists)
    network: NetworkInfo | None = None
    persistent: bool = False
    on_timeout: str = "kill"
    auto_resume: bool = False
    node: str = Field(default="local", description="the node it runs on ('local': the server's own)")


class SandboxList(_Response):
    sandboxes: list[SandboxInfo]
    next_cursor: str | None = None


class PauseRequest(_Request):
    """POST /sandboxes/{id}/pause (the body is optional)."""

    memory: bool = Field(
        default=False,
        description="write the processes and their memory to disk and release them (gvisor); "
        "without it the processes are frozen in place",
    )


class TimeoutUpdate(_Request):
    """POST /sandboxes/{id}/timeout: the sandbox now ends `timeout` seconds from now."""

    timeout: int = Field(ge=1, le=MAX_TIMEOUT_S)


# ---------------------------------------------------------------- processes


class PtySize(_Request):
    rows: int = Field(default=24, ge=1, le=1000)
    cols: int = Field(default=80, ge=1, le=1000)


class CommandRequest(_Request):
    """POST /sandboxes/{id}/commands: a shell string (run by /bin/sh -c) or an argv list."""

    cmd: (
        Annotated[str, Field(min_length=1, max_length=1 << 20)]
        | Annotated[list[Annotated[str, Field(max_length=1 << 20)]], Field(min_length=1, max_length=4096)]
    )
    env: EnvDict = Field(default_factory=dict)
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)
    user: str | None = Field(default=None, min_length=1, max_length=256)
    timeout: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False, description="kill after this many seconds"
    )
    stdin: str | None = Field(default=None, max_length=1 << 24, description="foreground only: fed, then closed")
    background: bool = Field(default=False, description="answer {pid} at once; stdin stays open")
    pty: PtySize | None = None
    tag: str | None = Field(default=None, max_length=256)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v)

    @field_validator("cmd")
    @classmethod
    def _cmd(cls, v: str | list[str]) -> str | list[str]:
        for arg in [v] if isinstance(v, str) else v:
            _no_nul(arg, "cmd")
        return v

    @field_validator("cwd", "user", "tag")
    @classmethod
    def _strings(cls, v: str | None) -> str | None:
        return None if v is None else _no_nul(v, "this field")


class ProcessStarted(_Response):
    pid: int


class ProcessExitInfo(_Response):
    pid: int
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    pids_limit_hit: bool = False


class ProcessInfo(_Response):
    pid: int
    argv: list[str]
    cmd: str | None = None
    cwd: str
    user: str
    tag: str | None = None
    pty: bool = False
    running: bool = True
    started_at_ms: int = 0
    exit: ProcessExitInfo | None = None

    @classmethod
    def from_agent(cls, info: p.ProcessInfo) -> ProcessInfo:
        return cls.model_validate(info.model_dump())


class ProcessList(_Response):
    processes: list[ProcessInfo]


class SignalRequest(_Request):
    signal: int = Field(default=15, ge=1, le=64)
    group: bool = True


class ResizeRequest(_Request):
    rows: int = Field(ge=1, le=1000)
    cols: int = Field(ge=1, le=1000)


# Stream events: the lines of an NDJSON output stream.


class StartEvent(_Response):
    type: Literal["start"] = "start"
    pid: int


class OutputEvent(_Response):
    type: Literal["stdout", "stderr"]
    data: str


class ExitEvent(_Response):
    type: Literal["exit"] = "exit"
    pid: int
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    pids_limit_hit: bool = False

    @classmethod
    def from_agent(cls, ex: p.ProcessExit) -> ExitEvent:
        """The agent's exit report as an event, every field carried over."""
        return cls.model_validate(ex.model_dump())


class ErrorEvent(_Response):
    """The stream broke after it started (the sandbox died, ...): the error, as a line."""

    type: Literal["error"] = "error"
    code: str
    message: str


class WatchEventOut(_Response):
    type: Literal["fs"] = "fs"
    op: str
    path: str


StreamEvent = Annotated[StartEvent | OutputEvent | ExitEvent | ErrorEvent | WatchEventOut, Field(discriminator="type")]


class PtyClientMessage(_Request):
    """A text message from a terminal client over the WebSocket (binary messages are input)."""

    type: Literal["input", "resize"]
    data: str | None = None
    rows: int | None = Field(default=None, ge=1, le=1000)
    cols: int | None = Field(default=None, ge=1, le=1000)


# ---------------------------------------------------------------- files


class FileEntry(_Response):
    name: str
    path: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    uid: int
    gid: int
    owner: str = ""
    group: str = ""
    mtime_ms: int
    symlink_target: str | None = None

    @classmethod
    def from_agent(cls, entry: p.FileEntry) -> FileEntry:
        return cls.model_validate(entry.model_dump())


class FileList(_Response):
    entries: list[FileEntry]


class ExistsResponse(_Response):
    exists: bool


class MkdirRequest(_Request):
    path: str = Field(min_length=1, max_length=4096)
    parents: bool = True
    mode: int = Field(default=0o755, ge=0, le=0o7777)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _no_nul(v, "path")


class MkdirResponse(_Response):
    created: bool


class RenameRequest(_Request):
    src: str = Field(min_length=1, max_length=4096)
    dst: str = Field(min_length=1, max_length=4096)

    @field_validator("src", "dst")
    @classmethod
    def _paths(cls, v: str) -> str:
        return _no_nul(v, "paths")


class TarResult(_Response):
    entries: int
    bytes: int


# ---------------------------------------------------------------- keys


class KeyCreate(_Request):
    team: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    name: str = Field(default="", max_length=256)
    admin: bool = False


class KeyInfo(_Response):
    key_id: str
    team: str
    name: str
    admin: bool
    created_at: float
    revoked: bool = False


class KeyCreated(KeyInfo):
    """Answer to POST /keys: the only time the secret is shown."""

    key: str
    #: the same key in the form the E2B SDKs accept (`e2b_` + hex; either form works everywhere)
    e2b_key: str = ""


class KeyList(_Response):
    keys: list[KeyInfo]


class WsTicket(_Response):
    """Answer to POST /ws-tickets: a single-use stand-in for the API key in a WebSocket's URL."""

    ticket: str
    #: seconds it stays valid (it works once)
    expires_in: float


class PoolSize(_Request):
    size: int = Field(ge=0, le=256, description="idle started sandboxes to keep (0 empties the pool)")
    runtime: str | None = Field(default=None, min_length=1, max_length=64, description="default: the server's")


class PoolInfo(_Response):
    template: str
    runtime: str
    size: int
    idle: int


class PoolList(_Response):
    pools: list[PoolInfo]


# ---------------------------------------------------------------- metrics


#: seconds between two samples of a sandbox's metrics (E2B's interval)
METRICS_INTERVAL_S = 5.0


class SandboxMetric(_Response):
    """One sample of a sandbox's resource use, read on its node from the host side every 5 s
    (cgroups, its disk, its network interface): taking it never wakes the sandbox."""

    #: when it was taken (Unix seconds)
    timestamp: float
    #: the cores it may use (its cpu limit)
    cpu_count: float
    #: CPU used since the previous sample, in % of `cpu_count` (0-100)
    cpu_used_pct: float
    #: memory in use (page cache that could be dropped left out), and its limit, in bytes
    mem_used: int
    mem_total: int
    #: page cache counted in the cgroup's usage, in bytes
    mem_cache: int = 0
    #: bytes in use on its writable disk, and the disk's size
    disk_used: int = 0
    disk_total: int = 0
    #: bytes it received and sent on its network interface since it started
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0
    #: host tasks of its cgroup (its processes; under gVisor also the sentry's threads)
    pids: int = 0
    #: processes killed for exceeding its memory limit, and process trees killed for exceeding
    #: its pids limit, since it started
    oom_kills: int = 0
    pids_limit_hits: int = 0


class SandboxMetrics(_Response):
    sandbox_id: str
    #: seconds between two samples
    interval_s: float
    #: oldest first
    metrics: list[SandboxMetric]


# ---------------------------------------------------------------- lifecycle events

#: every kind of lifecycle event (GET /events?type=..., webhooks' `events`)
EVENT_TYPES = (
    "created",
    "paused",
    "resumed",
    "hibernated",
    "woken",
    "checkpointed",
    "restored",
    "forked",
    "killed",
    "oom",
)
EventType = Literal[
    "created", "paused", "resumed", "hibernated", "woken", "checkpointed", "restored", "forked", "killed", "oom"
]


class EventInfo(_Response):
    """One lifecycle event of a sandbox (GET /events, its SSE stream, webhooks' bodies)."""

    #: grows with each event: the cursor of `after` and of an SSE stream's Last-Event-ID
    event_id: int
    #: when (Unix seconds)
    at: float
    team: str
    sandbox_id: str
    type: str
    #: killed, oom: why; checkpointed, restored, forked: the checkpoint's id (and forks: the new ids)
    detail: str | None = None


class EventList(_Response):
    #: oldest first
    events: list[EventInfo]
    #: pass as `after` for the next page (None: no more now)
    next_after: int | None = None


class WebhookCreate(_Request):
    """POST /webhooks: where the team's lifecycle events are POSTed, and which."""

    url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://", description="http:// or https://")
    events: list[EventType] = Field(default_factory=list, description="types to deliver (empty: every type)")


class WebhookInfo(_Response):
    webhook_id: str
    team: str
    url: str
    events: list[str]
    created_at: float


class WebhookCreated(WebhookInfo):
    """Answer to POST /webhooks: the only time the signing secret is shown."""

    #: signs each delivery: header `X-Sandlot-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
    secret: str


class WebhookList(_Response):
    webhooks: list[WebhookInfo]


class WebhookDelivery(_Response):
    """One event sent (or being sent) to a webhook: its attempts and how the last one went."""

    webhook_id: str
    event_id: int
    type: str
    #: pending (retrying with backoff), delivered, or failed (gave up after its attempts)
    status: str
    attempts: int
    #: HTTP status of the last attempt (None: no answer)
    last_status_code: int | None = None
    last_error: str | None = None
    last_attempt_at: float | None = None
    #: when it is tried again (pending only)
    next_attempt_at: float | None = None


class WebhookDeliveryList(_Response):
    #: newest first
    deliveries: list[WebhookDelivery]


# ---------------------------------------------------------------- fleet nodes


class NodeSummary(_Response):
    """One node daemon of a fleet (`sandlot nodes ls`)."""

    name: str
    #: active, draining (no new placements) or unreachable (no heartbeat within the fleet's timeout)
    state: str
    address: str
    labels: dict[str, str] = Field(default_factory=dict)
    #: active sandboxes the records place on it
    sandboxes: int
    cpus: int = 0
    memory_available_bytes: int = 0
    disk_free_bytes: int = 0
    #: the cpu and memory limits of its sandboxes that hold compute (not hibernated ones), creates
    #: being placed there included; placement stops at the `_max` (its cores and memory times the
    #: replica's --cpu-overcommit and --memory-overcommit)
    committed_cpu: float = 0.0
    committed_cpu_max: float = 0.0
    committed_memory_bytes: int = 0
    committed_memory_max_bytes: int = 0
    version: str = ""
    runtimes: list[str] = Field(default_factory=list)
    #: what a runtime runs on, once chosen (microvm: "kvm", or "tcg" where KVM does not work)
    accelerators: dict[str, str] = Field(default_factory=dict)
    last_seen: float


class NodeList(_Response):
    nodes: list[NodeSummary]


class DrainResult(NodeSummary):
    """A drained node, and what became of its persistent sandboxes."""

    #: sandbox id -> the node it moved to
    moved: dict[str, str] = Field(default_factory=dict)
    #: sandbox id -> why it stayed (no other node with room or with its labels; a failed copy)
    stayed: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------- checkpoints


class CheckpointCreate(_Request):
    """POST /sandboxes/{id}/checkpoints: freeze the sandbox's filesystem under `name`."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    memory: bool = Field(
        default=False, description="also the processes and their memory (gvisor; restore brings them back)"
    )


class CheckpointInfo(_Response):
    checkpoint_id: str
    name: str
    sandbox_id: str
    created_at: float
    size_bytes: int = Field(description="what the checkpoint's disk holds: what the sandbox had written")
    memory: bool = False


class CheckpointList(_Response):
    checkpoints: list[CheckpointInfo]


class RestoreRequest(_Request):
    """POST /sandboxes/{id}/restore: roll the filesystem back; the processes start afresh."""

    checkpoint_id: str = Field(min_length=1, max_length=64)


class ForkRequest(_Request):
    """POST /checkpoints/{id}/fork: start `count` new sandboxes from the checkpoint."""

    count: int = Field(default=1, ge=1, le=64)
    metadata: MetaDict = Field(default_factory=dict, max_length=64)
    timeout: int = Field(default=300, ge=1, le=MAX_TIMEOUT_S, description="seconds until the server kills each")

    @field_validator("metadata")
    @classmethod
    def _meta(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            _no_nul(key, "metadata keys")
            _no_nul(value, "metadata values")
        return v


# Images and templates.


class ImagePull(_Request):
    """POST /images/pull: make (or refresh) a template from an image in a registry."""

    ref: str = Field(min_length=1, max_length=512, description="host[:port]/repository[:tag][@sha256:...]")
    name: str | None = Field(default=None, min_length=1, max_length=512, description="template name (default: ref)")
    platform: str | None = Field(
        default=None, pattern=r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$", description="os/arch[/variant] of an index"
    )
    auth: RegistryAuth | None = None


class TemplateStart(_Request):
    """PUT /templates/{name}/start: what every new sandbox of the template starts, and when it is ready."""

    cmd: str = Field(min_length=1, max_length=65536, description="a shell command, left running")
    ready_cmd: str | None = Field(default=None, max_length=65536, description="ready once this exits 0")
    ready_port: int | None = Field(default=None, ge=1, le=65535, description="ready once this TCP port listens")
    timeout: float = Field(default=60.0, gt=0, le=3600, allow_inf_nan=False, description="seconds to wait")


class TemplateInfo(_Response):
    name: str
    source: str = Field(description="the image reference, or how it was made")
    digest: str = Field(description="the manifest's digest ('' for built templates)")
    layers: int
    size: int = Field(description="bytes of unpacked files")
    created_at: float
    env: dict[str, str]
    cwd: str
    user: str
    entrypoint: list[str]
    cmd: list[str]
    start: TemplateStart | None = Field(default=None, description="start command and readiness check")
    owner: str | None = Field(default=None, description="the team whose it is; None: shared by every team")


class TemplateList(_Response):
    templates: list[TemplateInfo]


class ProgressEvent(_Response):
    """A line of progress of a long operation (a pull, a build)."""

    type: Literal["progress"] = "progress"
    message: str


class TemplateEvent(_Response):
    """The last line of a pull or build that worked: the template made."""

    type: Literal["template"] = "template"
    template: TemplateInfo


# ---------------------------------------------------------------- volumes


class VolumeCreate(_Request):
    """POST /volumes: a named filesystem that outlives sandboxes."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    size_mb: int = Field(
        default=1024, ge=16, le=1 << 22, description="its size: writes beyond it fail with ENOSPC in the sandbox"
    )


class VolumeInfo(_Response):
    name: str
    volume_id: str
    created_at: float
    size_mb: int | None = Field(default=None, description="None: a volume made before sizes, without a limit")
    node: str | None = Field(
        default=None, description="the node that holds it (a fleet runs every sandbox that mounts it there)"
    )
    reachable: bool = Field(
        default=True,
        description="whether its node answers now; false: listed from the node's last heartbeat, and usable "
        "(or deletable) once that node is back",
    )


class VolumeList(_Response):
    volumes: list[VolumeInfo]


# ---------------------------------------------------------------- teams (quotas)

_SANDBOXES = "live sandboxes (running, paused or hibernated) at once"
_DISK = "MiB of disk: live sandboxes' disk limits + volumes' sizes + what checkpoints hold"
_LIFETIME = "seconds from creation a timeout may reach (persistent sandboxes excepted); 0: no limit"
_RETENTION = "seconds the checkpoints of a killed sandbox are kept after it ended; 0: kept until deleted"


class TeamQuota(_Response):
    """A team's limits, as they apply (the team's own, else the server's defaults)."""

    max_sandboxes: int = Field(description=_SANDBOXES)
    max_disk_mb: int = Field(description=_DISK)
    max_lifetime_s: int = Field(description=_LIFETIME)
    checkpoint_retention_s: int = Field(description=_RETENTION)


class TeamQuotaUpdate(_Request):
    """PATCH /teams/{team}/quota: the fields given change; `null` returns one to the server's default."""

    max_sandboxes: int | None = Field(default=None, ge=0, le=1 << 20, description=_SANDBOXES)
    max_disk_mb: int | None = Field(default=None, ge=0, le=1 << 40, description=_DISK)
    max_lifetime_s: int | None = Field(default=None, ge=0, le=10 * MAX_TIMEOUT_S, description=_LIFETIME)
    checkpoint_retention_s: int | None = Field(default=None, ge=0, le=1 << 34, description=_RETENTION)


class TeamUsage(_Response):
    sandboxes: int
    disk_mb: int = Field(description="sandboxes' disk limits + volumes' sizes + checkpoints, in MiB (rounded up)")


class TeamInfo(_Response):
    team: str
    quota: TeamQuota
    #: the fields the team sets itself (the others are the server's defaults)
    overrides: list[str] = []
    usage: TeamUsage


class TeamList(_Response):
    teams: list[TeamInfo]


# ---------------------------------------------------------------- SSH keys (the SSH gateway)


class SshKeyCreate(BaseModel):
    """`POST /ssh-keys`: register a public key; it then logs in over SSH as the team."""

    model_config = ConfigDict(extra="forbid")
    public_key: str = Field(min_length=1, max_length=16384, description="one OpenSSH public key line")
    name: str = Field(default="", max_length=256)
    team: str | None = Field(default=None, max_length=128, description="another team's (admin keys only)")


class SshKeyInfo(BaseModel):
    key_id: str
    team: str
    name: str
    fingerprint: str
    algorithm: str
    created_at: float


class SshKeyList(BaseModel):
    keys: list[SshKeyInfo]
