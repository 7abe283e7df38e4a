"""`RemoteNode`: the API's seam (`NodeClient`, node/client.py) over HTTP to a node daemon.

Each method is one request to the daemon's `/v1` (node/daemon.py), carrying the
fleet's node token. An error answer `{code, message, field}` is raised as the
exception the node raised; a node that cannot be reached raises
`NodeUnreachableError` (a fleet marks it unreachable and places elsewhere).

`agent` answers a `SandboxAgent` whose `AgentClient` runs over a WebSocket to the
daemon (agent/relay.py); one per sandbox, kept until the sandbox is killed.
While that WebSocket is up, `status` answers the status it last read until the
daemon says the sandbox changed (or this client changes it): the API reads a
sandbox's status before each data-plane call, and this keeps that off the wire.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any, Literal
from urllib.parse import quote

import httpx

from sandlot import errors
from sandlot.agent.client import AgentClient
from sandlot.agent.handle import SandboxAgent
from sandlot.agent.relay import WebSocketConnection
from sandlot.node.client import NodeClient, TemplateEvents
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
    spec_to_dict,
)

__all__ = ["RemoteNode"]

#: control calls that should be quick (a dead node must not hold a create for long)
QUICK = httpx.Timeout(10.0, connect=3.0)
#: creates, builds, pulls: as long as they take
SLOW = httpx.Timeout(None, connect=3.0)


def _raise_for(resp: httpx.Response, body: bytes) -> None:
    if resp.status_code < 400:
        return
    try:
        err = json.loads(body)
        code, message, field = str(err["code"]), str(err["message"]), err.get("field")
    except (ValueError, KeyError, TypeError):
        raise errors.InternalError(f"node answered HTTP {resp.status_code}: {body[:200]!r}") from None
    exc = errors.error_from_code(code, message)
    exc.field = field if isinstance(field, str) else None
    raise exc


class RemoteNode(NodeClient):
    """A node daemon at `url` (http://host:port), as the API sees it."""

    def __init__(self, name: str, url: str, token: str, *, default_runtime: str = "gvisor") -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.default_runtime = default_runtime
        self._headers = {"authorization": f"Bearer {token}"}
        self._http = httpx.AsyncClient(base_url=self.url + "/v1", headers=self._headers, timeout=QUICK)
        self._agents: dict[str, SandboxAgent] = {}
        self._conns: dict[str, WebSocketConnection] = {}
        self._killed: set[str] = set()
        # sandbox id -> (its connection's epoch when read, the status read): see `status`
        self._statuses: dict[str, tuple[int, SandboxStatus]] = {}

    def __repr__(self) -> str:
        return f"<RemoteNode {self.name} at {self.url}>"

    async def _request(self, method: str, path: str, *, timeout: httpx.Timeout = QUICK, **kw: Any) -> Any:
        try:
            resp = await self._http.request(method, path, timeout=timeout, **kw)
        except httpx.TransportError as exc:
            raise errors.NodeUnreachableError(f"node {self.name} ({self.url}) cannot be reached: {exc!r}") from None
        _raise_for(resp, resp.content)
        return resp.json() if resp.content else None

    async def _stream(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """A response whose body is read later (checked first: an error is raised here)."""
        req = self._http.build_request(method, path, timeout=SLOW, **kw)
        try:
            resp = await self._http.send(req, stream=True)
        except httpx.TransportError as exc:
            raise errors.NodeUnreachableError(f"node {self.name} ({self.url}) cannot be reached: {exc!r}") from None
        if resp.status_code >= 400:
            body = await resp.aread()
            await resp.aclose()
            _raise_for(resp, body)
        return resp

    async def _bytes(self, method: str, path: str, **kw: Any) -> AsyncIterator[bytes]:
        resp = await self._stream(method, path, **kw)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_bytes(1 << 20):
                    yield chunk
            except httpx.TransportError as exc:
                raise errors.NodeUnreachableError(f"node {self.name}: the transfer broke: {exc!r}") from None
            finally:
                await resp.aclose()

        return body()

    async def _events(self, method: str, path: str, **kw: Any) -> TemplateEvents:
        resp = await self._stream(method, path, **kw)

        async def events() -> TemplateEvents:
            try:
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "error":
                        raise errors.error_from_code(str(event.get("code")), str(event.get("message")))
                    if event.get("type") == "template":
                        yield TemplateEvent.model_validate(event)
                    else:
                        yield ProgressEvent.model_validate(event)
            except httpx.TransportError as exc:
                raise errors.NodeUnreachableError(f"node {self.name}: the stream broke: {exc!r}") from None
            finally:
                await resp.aclose()

        return events()

    # ------------------------------------------------------------ the node

    async def info(self) -> NodeInfo:
        return NodeInfo.model_validate(await self._request("GET", "/info"))

    async def runtimes(self) -> dict[str, dict[str, Any]]:
        answer: dict[str, dict[str, Any]] = await self._request("GET", "/runtimes", timeout=SLOW)
        return answer

    async def prepare(self, template: str | None) -> None:
        await self._request("POST", "/prepare", json={"template": template}, timeout=SLOW)

    async def recover(self, wanted: Mapping[str, SandboxSpec]) -> RecoveryReport:
        body = {sid: spec_to_dict(spec) for sid, spec in wanted.items()}
        return RecoveryReport.model_validate(await self._request("POST", "/recover", json=body, timeout=SLOW))

    async def close(self, *, kill_sandboxes: bool) -> None:
        """Drop this client's connections (the daemon and its sandboxes run on)."""
        for conn in list(self._conns.values()):
            await conn.close()
        self._conns.clear()
        await self._http.aclose()

    # ------------------------------------------------------------ sandboxes

    def _sid(self, sandbox_id: str) -> str:
        return quote(sandbox_id, safe="")

    async def create(self, spec: SandboxSpec) -> SandboxStatus:
        return SandboxStatus.model_validate(
            await self._request("POST", "/sandboxes", json=spec_to_dict(spec), timeout=SLOW)
        )

    async def status(self, sandbox_id: str) -> SandboxStatus | None:
        """The sandbox's status: the one last read while its relay connection has been up and the
        daemon has not said since that it changed (`CHANGED`, agent/relay.py); else asked for."""
        current = self._current(sandbox_id)
        if current is not None:
            return current.model_copy(deep=True)
        conn = self._conns.get(sandbox_id)
        epoch = conn.epoch if conn is not None and conn.connected else None
        try:
            st = SandboxStatus.model_validate(await self._request("GET", f"/sandboxes/{self._sid(sandbox_id)}"))
        except errors.SandboxNotFoundError:
            await self._forget(sandbox_id)
            return None
        if conn is not None and epoch is not None and conn.connected and conn.epoch == epoch:
            self._statuses[sandbox_id] = (epoch, st.model_copy(deep=True))  # nothing changed meanwhile
        return st

    async def state(self, sandbox_id: str) -> tuple[str, str | None] | None:
        current = self._current(sandbox_id)  # (read, not copied: nothing of it is handed out)
        if current is not None:
            return current.state, current.exit_reason
        return await super().state(sandbox_id)

    def _current(self, sandbox_id: str) -> SandboxStatus | None:
        """The status last read, while it is current (see `status`); None when it must be asked for."""
        conn = self._conns.get(sandbox_id)
        cached = self._statuses.get(sandbox_id)
        if cached is not None and conn is not None and conn.connected and cached[0] == conn.epoch:
            return cached[1]
        return None

    def _stale(self, sandbox_id: str) -> None:
        """This client is changing the sandbox: the status it read is not current any more."""
        self._statuses.pop(sandbox_id, None)
        conn = self._conns.get(sandbox_id)
        if conn is not None:
            conn.stale()

    async def kill(self, sandbox_id: str) -> None:
        try:
            await self._request("DELETE", f"/sandboxes/{self._sid(sandbox_id)}", timeout=SLOW)
        finally:
            await self._forget(sandbox_id)

    async def _forget(self, sandbox_id: str) -> None:
        self._killed.add(sandbox_id)
        self._agents.pop(sandbox_id, None)
        self._statuses.pop(sandbox_id, None)
        conn = self._conns.pop(sandbox_id, None)
        if conn is not None:
            await conn.close()

    async def _act(self, sandbox_id: str, action: str, body: dict[str, Any] | None = None) -> Any:
        self._stale(sandbox_id)
        try:
            return await self._request(
                "POST", f"/sandboxes/{self._sid(sandbox_id)}/{action}", json=body or {}, timeout=SLOW
            )
        finally:
            self._stale(sandbox_id)

    async def pause(self, sandbox_id: str, *, memory: bool = False) -> None:
        await self._act(sandbox_id, "pause", {"memory": memory})

    async def resume(self, sandbox_id: str) -> None:
        await self._act(sandbox_id, "resume")

    async def hibernate(self, sandbox_id: str, *, memory: bool = True) -> None:
        await self._act(sandbox_id, "hibernate", {"memory": memory})

    async def exit_reason(self, sandbox_id: str) -> str | None:
        try:
            answer = await self._request("GET", f"/ended/{self._sid(sandbox_id)}")
        except errors.SandboxNotFoundError:
            return None
        return str(answer["reason"])

    async def exited(self) -> dict[str, str]:
        answer: dict[str, str] = await self._request("POST", "/exited")
        for sid in answer:
            await self._forget(sid)
        return answer

    async def metrics(
        self, sandbox_id: str, start: float | None = None, end: float | None = None
    ) -> list[SandboxMetric]:
        params = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
        answer = await self._request("GET", f"/sandboxes/{self._sid(sandbox_id)}/metrics", params=params)
        return [SandboxMetric.model_validate(m) for m in answer]

    async def file_metadata(self, sandbox_id: str, paths: list[str]) -> dict[str, dict[str, str] | None]:
        path = f"/sandboxes/{self._sid(sandbox_id)}/file-metadata"  # a read: the status stays current
        answer: dict[str, dict[str, str] | None] = await self._request("POST", path, json={"paths": paths})
        return answer

    async def set_file_metadata(self, sandbox_id: str, path: str, metadata: dict[str, str]) -> None:
        body = {"path": path, "metadata": metadata}
        await self._request("PUT", f"/sandboxes/{self._sid(sandbox_id)}/file-metadata", json=body)

    async def wake(self, sandbox_id: str) -> None:
        await self._act(sandbox_id, "wake")

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxStatus:
        path = f"/sandboxes/{self._sid(sandbox_id)}/network"
        self._stale(sandbox_id)
        try:
            return SandboxStatus.model_validate(await self._request("PUT", path, json=policy.to_dict(), timeout=SLOW))
        finally:
            self._stale(sandbox_id)

    async def agent(self, sandbox_id: str) -> SandboxAgent:
        handle = self._agents.get(sandbox_id)
        if handle is None:
            ws_url = "ws" + self.url[len("http") :] + f"/v1/sandboxes/{self._sid(sandbox_id)}/agent"
            conn = WebSocketConnection(ws_url, self._headers, sandbox_id)
            client = AgentClient(conn)
            self._killed.discard(sandbox_id)
            handle = SandboxAgent(
                sandbox_id, lambda: client, env=dict, gone=lambda: sandbox_id in self._killed
            )  # the daemon adds the sandbox's environment to each process (agent/relay.py)
            self._agents[sandbox_id], self._conns[sandbox_id] = handle, conn
        return handle

    async def export_sandbox(self, sandbox_id: str, tag: str) -> AsyncIterator[bytes]:
        return await self._bytes("GET", f"/sandboxes/{self._sid(sandbox_id)}/export", params={"tag": tag})

    async def export_disk(self, sandbox_id: str) -> AsyncIterator[bytes]:
        return await self._bytes("GET", f"/sandboxes/{self._sid(sandbox_id)}/disk")

    async def import_disk(self, sandbox_id: str, disk: AsyncIterable[bytes]) -> SandboxStatus:
        path = f"/sandboxes/{self._sid(sandbox_id)}/disk"
        return SandboxStatus.model_validate(await self._request("PUT", path, content=disk, timeout=SLOW))

    # ------------------------------------------------------------ checkpoints

    async def checkpoint(self, sandbox_id: str, name: str, *, memory: bool = False) -> CheckpointInfo:
        return CheckpointInfo.model_validate(
            await self._act(sandbox_id, "checkpoints", {"name": name, "memory": memory})
        )

    async def restore(self, sandbox_id: str, checkpoint_id: str) -> None:
        await self._act(sandbox_id, "restore", {"checkpoint_id": checkpoint_id})

    async def fork(self, checkpoint_id: str, count: int) -> list[SandboxStatus]:
        answer = await self._request(
            "POST", f"/checkpoints/{quote(checkpoint_id)}/fork", json={"count": count}, timeout=SLOW
        )
        return [SandboxStatus.model_validate(s) for s in answer]

    async def get_checkpoint(self, checkpoint_id: str) -> CheckpointInfo:
        return CheckpointInfo.model_validate(await self._request("GET", f"/checkpoints/{quote(checkpoint_id)}"))

    async def list_checkpoints(self, sandbox_id: str | None = None) -> list[CheckpointInfo]:
        params = {"sandbox_id": sandbox_id} if sandbox_id else {}
        return [CheckpointInfo.model_validate(c) for c in await self._request("GET", "/checkpoints", params=params)]

    async def delete_checkpoint(self, checkpoint_id: str) -> None:
        await self._request("DELETE", f"/checkpoints/{quote(checkpoint_id)}", timeout=SLOW)

    # ------------------------------------------------------------ volumes

    def _vol(self, team: str, name: str = "") -> str:
        path = f"/teams/{quote(team, safe='')}/volumes"
        return f"{path}/{quote(name, safe='')}" if name else path

    async def create_volume(self, team: str, name: str, size_mb: int = 1024) -> VolumeInfo:
        return VolumeInfo.model_validate(await self._request("POST", self._vol(team, name), json={"size_mb": size_mb}))

    async def find_volume(self, team: str, name: str) -> VolumeInfo:
        return VolumeInfo.model_validate(await self._request("GET", self._vol(team, name)))

    async def list_volumes(self, team: str) -> list[VolumeInfo]:
        return [VolumeInfo.model_validate(v) for v in await self._request("GET", self._vol(team))]

    async def delete_volume(self, team: str, name: str) -> None:
        await self._request("DELETE", self._vol(team, name), timeout=SLOW)

    # ------------------------------------------------------------ templates

    async def get_template(self, name: str) -> TemplateInfo | None:
        try:
            return TemplateInfo.model_validate(await self._request("GET", f"/templates/{quote(name, safe='')}"))
        except errors.ImageNotFoundError:
            return None

    async def list_templates(self) -> list[TemplateInfo]:
        return [TemplateInfo.model_validate(t) for t in await self._request("GET", "/templates")]

    async def fetch_template(self, ref: str, auth: RegistryAuth, *, team: str | None = None) -> None:
        body = {"ref": ref, "auth": auth.model_dump(), "team": team}
        await self._request("POST", "/templates/fetch", json=body, timeout=SLOW)

    async def pull_template(
        self,
        ref: str,
        *,
        name: str | None = None,
        platform: str | None = None,
        auth: RegistryAuth | None = None,
        team: str | None = None,
    ) -> TemplateEvents:
        body = {
            "ref": ref,
            "name": name,
            "platform": platform,
            "auth": auth.model_dump() if auth else None,
            "team": team,
        }
        return await self._events("POST", "/templates/pull", json=body)

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
        params = {"name": name, "dockerfile": dockerfile, "network": network, **({"team": team} if team else {})}
        headers = {"x-build-args": json.dumps(dict(build_args or {}))}
        return await self._events("POST", "/templates/build", params=params, headers=headers, content=context)

    async def import_template(
        self, name: str, archive: AsyncIterable[bytes], *, tag: str | None = None, team: str | None = None
    ) -> TemplateEvents:
        params = {"name": name, **({"tag": tag} if tag else {}), **({"team": team} if team else {})}
        return await self._events("POST", "/templates/import", params=params, content=archive)

    async def export_template(self, name: str, tag: str) -> AsyncIterator[bytes]:
        return await self._bytes("GET", f"/templates/{quote(name, safe='')}/export", params={"tag": tag})

    async def set_template_start(self, name: str, start: TemplateStart | None) -> TemplateInfo:
        body = start.model_dump() if start else None
        path = f"/templates/{quote(name, safe='')}/start"
        return TemplateInfo.model_validate(await self._request("PUT", path, json=body))

    async def delete_template(self, name: str) -> None:
        await self._request("DELETE", f"/templates/{quote(name, safe='')}", timeout=SLOW)

    # ------------------------------------------------------------ warm pools

    async def list_pools(self) -> list[PoolInfo]:
        return [PoolInfo.model_validate(p) for p in await self._request("GET", "/pools")]

    async def set_pool(self, template: str, runtime: str | None, size: int) -> PoolInfo:
        body = {"runtime": runtime, "size": size}
        return PoolInfo.model_validate(
            await self._request("PUT", f"/pools/{quote(template, safe='')}", json=body, timeout=SLOW)
        )
