"""The one seam between the API and a node: `NodeClient`.

Everything in `api/` (routes, service, lifecycle, checkpoints, volumes, images,
pools, ports, the E2B facade, the code interpreter) reaches a node through this
interface and nothing else. `LocalNode` (node/local.py) implements it over the
`Node` that `sandlot serve` embeds; a fleet adds an implementation that speaks
HTTP to a node daemon, and the API code stays as it is.

Why this cut (CONVENTIONS.md 2: where it runs is not how you talk to it):

- The control plane (lifecycle, checkpoints, volumes, templates, pools,
  health) is a few dozen request/answer calls. Each takes and returns plain
  data (ids, `SandboxSpec`, the pydantic models of node/protocol.py), never a
  `Node` or node `Sandbox`, so each is one HTTP request to a node daemon.
  Errors are `sandlot.errors` exceptions, which already map to wire codes in
  one table (api/http_errors.py) and back (the SDK's table), so they cross
  HTTP as `{code, message, field}` unchanged.
- The data plane (commands, PTYs, files, watches, ports, the code
  interpreter) already speaks one protocol, the agent's, through an
  `AgentClient`. Wrapping each agent method in a node method would double
  that protocol and add a hop of translation per call; instead the node hands
  back a `SandboxAgent` (agent/handle.py) whose `AgentClient` the API drives
  directly. In-process it is the node's own connection to the agent (no cost
  added); remotely it will be an `AgentClient` over a WebSocket to the node
  daemon, which bridges frames to the agent's socket unchanged. Streams stay
  the agent's multiplexed streams either way.
- Long operations that report progress (pull, build, import) return an async
  iterator of events; bytes in (a build context, an image tarball) are an
  async iterable of chunks; bytes out (exports) an async iterator of chunks.
  Each is awaited first and answers its iterator only after the request was
  checked, so a bad request is an error before any stream starts (a 4xx, not
  a broken stream), and over HTTP the status line says which.

How each maps to HTTP (for the node daemon; paths under its `/v1`):

    info                  GET    /info
    runtimes              GET    /runtimes
    prepare               POST   /prepare                      {template}
    recover               POST   /recover                      {id: spec}
    close                 (the daemon's own shutdown; not a request)
    create                POST   /sandboxes                    spec -> SandboxStatus
    status                GET    /sandboxes/{id}               (404 -> None)
    exit_reason           GET    /ended/{id}                   (404 -> None)
    kill                  DELETE /sandboxes/{id}
    exited                POST   /exited                       (takes them: one API per node)
    pause/resume          POST   /sandboxes/{id}/pause|resume  {memory}
    hibernate/wake        POST   /sandboxes/{id}/hibernate|wake  {memory}
    set_network           PUT    /sandboxes/{id}/network       policy dict
    agent                 WS     /sandboxes/{id}/agent         agent frames, bridged
    metrics               GET    /sandboxes/{id}/metrics?start=&end=  [SandboxMetric]
    file_metadata         POST   /sandboxes/{id}/file-metadata {paths} -> {path: metadata|null}
    set_file_metadata     PUT    /sandboxes/{id}/file-metadata {path, metadata}
    export_sandbox        GET    /sandboxes/{id}/export?tag=   tar stream
    export_disk           GET    /sandboxes/{id}/disk          disk stream (node/sandbox_move.py)
    import_disk           PUT    /sandboxes/{id}/disk          disk stream -> SandboxStatus
    checkpoint            POST   /sandboxes/{id}/checkpoints   {name, memory}
    restore               POST   /sandboxes/{id}/restore       {checkpoint_id}
    fork                  POST   /checkpoints/{id}/fork        {count}
    get/list/delete_checkpoint  GET|DELETE /checkpoints[/{id}][?sandbox_id=]
    create/find/list/delete_volume  /teams/{team}/volumes[/{name}]
    get/list_templates    GET    /templates[/{name}]
    fetch_template        POST   /templates/fetch              {ref, auth}
    pull_template         POST   /templates/pull               NDJSON events
    build_template        POST   /templates/build?name=...     tar body -> NDJSON events
    import_template       POST   /templates/import?name=&tag=  tar body -> NDJSON events
    export_template       GET    /templates/{name}/export      tar stream
    set_template_start    PUT    /templates/{name}/start       (null body: clear)
    delete_template       DELETE /templates/{name}
    list_pools/set_pool   GET /pools, PUT /pools/{template}   {runtime, size}

Templates have owners (`TemplateInfo.owner`: a team, or None for shared
ones). The calls that make one (fetch, pull, build, import) take `team`, the
team acting (None: the server or an admin): what they make is its own, a name
another team or the server holds is refused (ConflictError) before anything
streams, and a build's FROM sees only the team's own and shared templates. Who
may see or use a template otherwise is the API's to decide (api/template_access.py).

Placement (which node gets a create) sits above this interface: the API holds
one `NodeClient` per node and each sandbox's record names its node
(`SandboxInfo.node`); today there is exactly one, `LocalNode`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any, Literal

from sandlot.agent.handle import SandboxAgent
from sandlot.node.protocol import (
    CheckpointInfo,
    NetworkPolicy,
    NodeInfo,
    PoolInfo,
    ProgressEvent,
    RecoveryReport,
    RegistryAuth,
    SandboxMetric,
    SandboxSpec,
    SandboxStatus,
    TemplateEvent,
    TemplateInfo,
    TemplateStart,
    VolumeInfo,
)

__all__ = ["NodeClient", "TemplateEvents"]

#: `progress` lines, then the template made (a failure is raised from the iterator).
TemplateEvents = AsyncIterator[ProgressEvent | TemplateEvent]


class NodeClient(abc.ABC):
    """One node, as the API sees it. Every method may raise `sandlot.errors` exceptions."""

    #: the node's name (what `SandboxInfo.node` shows)
    name: str
    #: the runtime of a sandbox whose create names none
    default_runtime: str

    # ------------------------------------------------------------ the node

    @abc.abstractmethod
    async def info(self) -> NodeInfo:
        """Health and free capacity."""

    @abc.abstractmethod
    async def runtimes(self) -> dict[str, dict[str, Any]]:
        """Each isolation runtime: whether this node can run it (else why not), and what it says
        of itself (microvm: its accelerator). The first call may boot a probe guest (seconds)."""

    @abc.abstractmethod
    async def prepare(self, template: str | None) -> None:
        """Get ready to create sandboxes (agent bundle, default runtime; `template` cached, if given)."""

    @abc.abstractmethod
    async def recover(self, wanted: Mapping[str, SandboxSpec]) -> RecoveryReport:
        """After a restart: re-adopt the live sandboxes in `wanted`, destroy every other one found."""

    @abc.abstractmethod
    async def close(self, *, kill_sandboxes: bool) -> None:
        """Stop the warm pools; kill every sandbox, or leave them running for the next start to adopt."""

    # ------------------------------------------------------------ sandboxes

    @abc.abstractmethod
    async def create(self, spec: SandboxSpec) -> SandboxStatus:
        """A running sandbox (from a warm pool when one matches)."""

    @abc.abstractmethod
    async def status(self, sandbox_id: str) -> SandboxStatus | None:
        """The sandbox now; None when the node does not hold it (never made, or killed and gone)."""

    async def state(self, sandbox_id: str) -> tuple[str, str | None] | None:
        """The sandbox's state and exit reason, as `status` gives them; None where it gives None.

        For paths that ask on every request (the port proxy authorizes each one): a node that
        holds its sandboxes in this process answers without building their whole status."""
        status = await self.status(sandbox_id)
        return None if status is None else (status.state, status.exit_reason)

    @abc.abstractmethod
    async def exit_reason(self, sandbox_id: str) -> str | None:
        """Why a sandbox the node held but holds no more ended (its agent died, ...); None if it does not know."""

    @abc.abstractmethod
    async def kill(self, sandbox_id: str) -> None:
        """Kill it and free everything it holds (SandboxNotFoundError when the node does not hold it)."""

    @abc.abstractmethod
    async def exited(self) -> dict[str, str]:
        """The sandboxes that died on their own (not killed) since the last call, with why.

        What the API's reaper reconciles each tick, so that a tick costs the
        same with 1 sandbox or 1000 (it asks about every sandbox only rarely).
        """

    @abc.abstractmethod
    async def pause(self, sandbox_id: str, *, memory: bool = False) -> None:
        """Freeze its processes; with `memory`, write them to disk and release them."""

    @abc.abstractmethod
    async def resume(self, sandbox_id: str) -> None: ...

    @abc.abstractmethod
    async def hibernate(self, sandbox_id: str, *, memory: bool = True) -> None:
        """Release its compute and memory, keep its filesystem. With `memory` its processes are saved
        where the runtime can and come back on `wake`; without, `wake` boots it afresh on its files."""

    @abc.abstractmethod
    async def wake(self, sandbox_id: str) -> None: ...

    @abc.abstractmethod
    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxStatus:
        """Apply a new network policy at once (no restart)."""

    @abc.abstractmethod
    async def agent(self, sandbox_id: str) -> SandboxAgent:
        """The sandbox's data plane: its agent client (which refuses calls unless the sandbox runs)."""

    @abc.abstractmethod
    async def metrics(
        self, sandbox_id: str, start: float | None = None, end: float | None = None
    ) -> list[SandboxMetric]:
        """Its resource use sampled every 5 s in [start, end] (Unix seconds), oldest first: while it
        runs and for a while after it ended (node/metrics.py); [] when the node has none."""

    @abc.abstractmethod
    async def file_metadata(self, sandbox_id: str, paths: list[str]) -> dict[str, dict[str, str] | None]:
        """E2B user metadata of files whose filesystem in the sandbox holds no xattrs (gVisor's 9p;
        the agent says so: `FileEntry.metadata_unsupported`), kept on the node's copy, by sandbox path."""

    @abc.abstractmethod
    async def set_file_metadata(self, sandbox_id: str, path: str, metadata: dict[str, str]) -> None:
        """Make `metadata` the whole E2B metadata of such a file ({} clears it)."""

    @abc.abstractmethod
    async def export_sandbox(self, sandbox_id: str, tag: str) -> AsyncIterator[bytes]:
        """Its filesystem as an OCI image layout, in a tar (made before the first chunk is answered)."""

    @abc.abstractmethod
    async def export_disk(self, sandbox_id: str) -> AsyncIterator[bytes]:
        """The disk of a hibernated sandbox, to move it to another node (`import_disk` there): a
        stream of its data extents and their digest (node/sandbox_move.py), checked before it starts."""

    @abc.abstractmethod
    async def import_disk(self, sandbox_id: str, disk: AsyncIterable[bytes]) -> SandboxStatus:
        """Hold sandbox `sandbox_id`, hibernated, on the disk another node's `export_disk` streams
        (ConflictError if this node holds it already); a bad or broken stream leaves nothing behind."""

    # ------------------------------------------------------------ checkpoints

    @abc.abstractmethod
    async def checkpoint(self, sandbox_id: str, name: str, *, memory: bool = False) -> CheckpointInfo: ...

    @abc.abstractmethod
    async def restore(self, sandbox_id: str, checkpoint_id: str) -> None:
        """Roll its filesystem back to the checkpoint (on failure the sandbox is killed)."""

    @abc.abstractmethod
    async def fork(self, checkpoint_id: str, count: int) -> list[SandboxStatus]:
        """`count` new sandboxes from the checkpoint: all of them, or none."""

    @abc.abstractmethod
    async def get_checkpoint(self, checkpoint_id: str) -> CheckpointInfo: ...

    @abc.abstractmethod
    async def list_checkpoints(self, sandbox_id: str | None = None) -> list[CheckpointInfo]: ...

    @abc.abstractmethod
    async def delete_checkpoint(self, checkpoint_id: str) -> None: ...

    # ------------------------------------------------------------ volumes

    @abc.abstractmethod
    async def create_volume(self, team: str, name: str, size_mb: int = 1024) -> VolumeInfo:
        """A volume of the team, a filesystem of `size_mb` (full: ENOSPC inside)."""

    @abc.abstractmethod
    async def find_volume(self, team: str, name: str) -> VolumeInfo:
        """The team's volume of that name (VolumeNotFoundError names a missing one)."""

    @abc.abstractmethod
    async def list_volumes(self, team: str) -> list[VolumeInfo]: ...

    @abc.abstractmethod
    async def delete_volume(self, team: str, name: str) -> None:
        """Delete it and its files; refused while a sandbox mounts it."""

    # ------------------------------------------------------------ templates

    @abc.abstractmethod
    async def get_template(self, name: str) -> TemplateInfo | None: ...

    @abc.abstractmethod
    async def list_templates(self) -> list[TemplateInfo]: ...

    @abc.abstractmethod
    async def fetch_template(self, ref: str, auth: RegistryAuth, *, team: str | None = None) -> None:
        """Pull `ref` with these credentials unless the node has it already (it is then `team`'s)."""

    @abc.abstractmethod
    async def pull_template(
        self,
        ref: str,
        *,
        name: str | None = None,
        platform: str | None = None,
        auth: RegistryAuth | None = None,
        team: str | None = None,
    ) -> TemplateEvents:
        """Pull `ref` into `name`: shared under its own reference without credentials, else `team`'s."""

    @abc.abstractmethod
    async def build_template(
        self,
        name: str,
        context: AsyncIterable[bytes],
        *,
        dockerfile: str = "Dockerfile",
        build_args: Mapping[str, str] | None = None,
        network: Literal["full", "none"] = "full",
        team: str | None = None,
    ) -> TemplateEvents:
        """Build `team`'s template from a Dockerfile in `context` (a tar, streamed in)."""

    @abc.abstractmethod
    async def import_template(
        self, name: str, archive: AsyncIterable[bytes], *, tag: str | None = None, team: str | None = None
    ) -> TemplateEvents:
        """Import a `docker save` tarball or an OCI layout tar (streamed in) as `team`'s template."""

    @abc.abstractmethod
    async def export_template(self, name: str, tag: str) -> AsyncIterator[bytes]:
        """The template as an OCI image layout, in a tar."""

    @abc.abstractmethod
    async def set_template_start(self, name: str, start: TemplateStart | None) -> TemplateInfo: ...

    @abc.abstractmethod
    async def delete_template(self, name: str) -> None:
        """Delete it and free its layers (refused while sandboxes or a warm pool use it)."""

    # ------------------------------------------------------------ warm pools

    @abc.abstractmethod
    async def list_pools(self) -> list[PoolInfo]: ...

    @abc.abstractmethod
    async def set_pool(self, template: str, runtime: str | None, size: int) -> PoolInfo:
        """Keep `size` started sandboxes of the template (default limits) ready for creates."""
