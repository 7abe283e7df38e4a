"""`AsyncSandbox`: the SDK's source of truth (the sync `Sandbox` wraps it)."""

from __future__ import annotations

import builtins
import datetime
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from sandlot import errors
from sandlot.models import CheckpointInfo, SandboxInfo, SandboxList, SandboxMetric, SandboxMetrics, VolumeMountRequest
from sandlot.sdk import checkpoints as _ck
from sandlot.sdk import code as _code
from sandlot.sdk._transport import Transport
from sandlot.sdk.commands import AsyncCommands
from sandlot.sdk.files import AsyncFiles
from sandlot.sdk.network import AsyncNetwork, policy_body
from sandlot.sdk.pty import AsyncPty

__all__ = ["AsyncSandbox"]


class AsyncSandbox:
    """A sandbox on a Sandlot server.

    Example:
        >>> async with await AsyncSandbox.create(template="base") as sbx:
        ...     res = await sbx.commands.run("python3 -c 'print(6*7)'")
        ...     res.stdout
        '42\\n'
    """

    def __init__(self, info: SandboxInfo, transport: Transport) -> None:
        self._transport = transport
        self._info = info
        self.sandbox_id: str = info.sandbox_id
        self.commands = AsyncCommands(self)
        self.files = AsyncFiles(self)
        self.pty = AsyncPty(self)
        self.network = AsyncNetwork(self)

    def __repr__(self) -> str:
        return f"<AsyncSandbox {self.sandbox_id}>"

    @classmethod
    async def create(
        cls,
        template: str | None = None,
        *,
        image: str | None = None,
        registry_auth: tuple[str, str] | None = None,
        timeout: int = 300,
        runtime: str | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        env: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
        network: str | dict[str, Any] | None = None,
        persistent: bool = False,
        on_timeout: str = "kill",
        auto_resume: bool = False,
        volumes: Sequence[VolumeMountRequest] | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
        request_timeout: float | None = None,
    ) -> AsyncSandbox:
        """Start a new sandbox.

        Args:
            template: template name (default: the server's, "base" = Debian with python3).
            image: an image reference instead (`host:port/repo:tag`), pulled on first use.
            registry_auth: (username, password) for `image`'s registry, if the server has none configured.
            timeout: seconds until the server kills it (extend with `set_timeout`).
            runtime: "gvisor" (default), "microvm" (a QEMU VM with its own kernel) or "container".
            cpu: cores.
            memory_mb: memory limit.
            disk_mb: size of its writable disk.
            env: environment of every command.
            metadata: free-form labels, to find it again with `list(metadata=...)`.
            network: "none" (default), "egress" or "full", or a policy such as
                `{"mode": "egress", "allow": ["pypi.org"], "deny": [...]}` (see `network.update`).
                Its ports are reachable through the server in every mode (`get_url`).
            persistent: never killed by its timeout; after the server's idle period it
                hibernates (compute and memory released, files kept) and the next request wakes it.
            on_timeout: "kill" (default), "pause" (kept paused, with its memory where possible) or
                "hibernate" (processes stopped, files kept; resuming boots it afresh).
            auto_resume: paused or hibernated, the next request to it (its ports too) resumes it.
            volumes: the team's volumes to mount (`VolumeMount(name=, path=, read_only=)`).
            api_url: the API (default $SANDLOT_API_URL, else http://127.0.0.1:7770).
            api_key: the key (default $SANDLOT_API_KEY, else a local server's admin key).
            request_timeout: HTTP timeout of each request (not of commands).

        Returns:
            The running sandbox.

        Raises:
            ImageNotFoundError: unknown template, or no such image in the registry.
            RegistryAuthError: the image's registry wants credentials, or refused them.
            InvalidArgumentError: a bad limit (the `field` attribute names it).
            LimitReachedError: the team runs as many sandboxes as it may.
            PermissionDeniedError: no valid API key.
        """
        if image is not None and template is not None:
            raise errors.InvalidArgumentError("give template or image, not both", field="image")
        template = image if image is not None else template
        body: dict[str, Any] = {"timeout": timeout, "env": env or {}, "metadata": metadata or {}}
        if registry_auth is not None:
            body["registry_auth"] = {"username": registry_auth[0], "password": registry_auth[1]}
        if persistent:
            body["persistent"] = True
        if on_timeout != "kill":
            body["on_timeout"] = on_timeout
        if auto_resume:
            body["auto_resume"] = True
        if volumes:
            body["volumes"] = [v.model_dump() for v in volumes]
        for key, value in (
            ("template", template),
            ("runtime", runtime),
            ("cpu", cpu),
            ("memory_mb", memory_mb),
            ("disk_mb", disk_mb),
            ("network", policy_body(network) if network is not None else None),
        ):
            if value is not None:
                body[key] = value
        transport = Transport(api_url, api_key, request_timeout)
        try:
            info = SandboxInfo.model_validate(await transport.json("POST", "/sandboxes", json=body))
        except BaseException:
            await transport.close()
            raise
        return cls(info, transport)

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        request_timeout: float | None = None,
    ) -> AsyncSandbox:
        """Attach to an existing sandbox.

        Raises:
            SandboxNotFoundError: no such sandbox (or another team's).
            SandboxStateError: it is no longer running.
        """
        transport = Transport(api_url, api_key, request_timeout)
        try:
            info = SandboxInfo.model_validate(await transport.json("GET", f"/sandboxes/{sandbox_id}"))
            if info.state.value == "killed":
                reason = f" ({info.exit_reason})" if info.exit_reason else ""
                raise errors.SandboxStateError(f"sandbox {sandbox_id} is killed{reason}")
        except BaseException:
            await transport.close()
            raise
        return cls(info, transport)

    @classmethod
    async def list(
        cls,
        *,
        metadata: dict[str, str] | None = None,
        state: Sequence[str] | None = None,
        limit: int | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[SandboxInfo]:
        """The team's sandboxes (by default the live ones), following every page.

        Args:
            metadata: only sandboxes with all these labels.
            state: only these states ("running", "killed", ...).
            limit: stop after this many.
        """
        transport = Transport(api_url, api_key, None)
        out: builtins.list[SandboxInfo] = []
        cursor: str | None = None
        try:
            while True:
                params: builtins.list[tuple[str, str]] = [("metadata", f"{k}={v}") for k, v in (metadata or {}).items()]
                params += [("state", s) for s in state or ()]
                params.append(("limit", str(min(limit - len(out), 1000) if limit else 1000)))
                if cursor:
                    params.append(("cursor", cursor))
                page = SandboxList.model_validate(await transport.json("GET", "/sandboxes", params=params))
                out += page.sandboxes
                cursor = page.next_cursor
                if not cursor or (limit and len(out) >= limit):
                    return out
        finally:
            await transport.close()

    @property
    def access_token(self) -> str | None:
        """Opens the sandbox's private ports: send it as the X-Sandlot-Access-Token header."""
        return self._info.network.access_token if self._info.network else None

    def get_host(self, port: int) -> str:
        """The host name (and the server's port) at which `port` of this sandbox answers.

        `{port}-{sandbox id}.{domain}[:server port]`: point a wildcard DNS name at the
        server (the default domain, `localhost`, resolves to it on this machine).

        Example:
            >>> f"http://{sbx.get_host(8000)}/"
            'http://8000-sb-....localhost:7770/'
        """
        if self._info.network is None:
            raise errors.InternalError("the server did not say how its sandbox ports are named")
        host = self._info.network.port_host.replace("{port}", str(int(port)))
        server = urlsplit(self._transport.api_url)
        return f"{host}:{server.port}" if server.port else host

    def get_url(self, port: int, path: str = "/") -> str:
        """A URL of `port` of this sandbox through the server (path form; works without DNS).

        Private ports need the access token (`access_token`) or a key of the team.
        """
        return f"{self._transport.api_url}/sandboxes/{self.sandbox_id}/ports/{int(port)}/{path.lstrip('/')}"

    async def get_info(self) -> SandboxInfo:
        """The sandbox's current record (state, limits, metadata, `ends_at`)."""
        self._info = SandboxInfo.model_validate(await self._transport.json("GET", f"/sandboxes/{self.sandbox_id}"))
        return self._info

    async def is_running(self) -> bool:
        return (await self.get_info()).state.value == "running"

    async def get_metrics(
        self, start: datetime.datetime | float | None = None, end: datetime.datetime | float | None = None
    ) -> builtins.list[SandboxMetric]:
        """Its resource use, sampled every 5 s on its node without waking it: CPU %, memory,
        disk, network bytes, processes and limit kills, oldest first.

        Kept while it lives (its last hour) and for an hour after it ended.

        Args:
            start: the oldest sample wanted (a datetime, or Unix seconds); default: the first kept.
            end: the newest sample wanted; default: now.

        Returns:
            The samples taken between `start` and `end` ([] before the first one, about 5 s after start).

        Raises:
            InvalidArgumentError: `start` is after `end`.
            SandboxNotFoundError: no such sandbox (or another team's).

        Example:
            >>> [round(m.cpu_used_pct) for m in sbx.get_metrics()]
            [0, 97, 100]
        """
        params = {k: _unix(v) for k, v in (("start", start), ("end", end)) if v is not None}
        raw = await self._transport.json("GET", f"/sandboxes/{self.sandbox_id}/metrics", params=params)
        return SandboxMetrics.model_validate(raw).metrics

    async def set_timeout(self, timeout: int) -> None:
        """The server kills the sandbox `timeout` seconds from now (replacing the previous deadline).

        Raises:
            SandboxStateError: it is no longer running.
        """
        raw = await self._transport.json("POST", f"/sandboxes/{self.sandbox_id}/timeout", json={"timeout": timeout})
        self._info = SandboxInfo.model_validate(raw)

    async def pause(self, memory: bool = False) -> None:
        """Freeze every process in the sandbox (no CPU used); `resume()` continues them.

        Args:
            memory: also write the processes and their memory to disk and release them
                (runtime gvisor); `resume()` restores them where they stopped.

        Raises:
            SandboxStateError: it is not running.
            InvalidArgumentError: `memory` with a runtime that cannot save memory here.

        Example:
            >>> sbx.pause(); sbx.resume()
        """
        body = {"memory": True} if memory else None
        raw = await self._transport.json("POST", f"/sandboxes/{self.sandbox_id}/pause", json=body)
        self._info = SandboxInfo.model_validate(raw)

    async def resume(self) -> None:
        """Continue a paused sandbox exactly where it stopped.

        Raises:
            SandboxStateError: it is not paused.
        """
        raw = await self._transport.json("POST", f"/sandboxes/{self.sandbox_id}/resume")
        self._info = SandboxInfo.model_validate(raw)

    async def checkpoint(self, name: str, memory: bool = False) -> CheckpointInfo:
        """Checkpoint the sandbox's filesystem (the sandbox is frozen for the copy, then continues).

        Args:
            name: unique among this sandbox's checkpoints (letters, digits, '.', '_', '-').
            memory: also save the processes and their memory (gvisor): `restore` brings them
                back as they were; a fork still starts from the filesystem only.

        Returns:
            The checkpoint, to `restore` this sandbox to or to `fork` new ones from.

        Raises:
            ConflictError: the sandbox already has a checkpoint of that name.
            SandboxStateError: the sandbox is not running or paused.
            NoSpaceError: the server's disk store is full.

        Example:
            >>> ck = sbx.checkpoint("clean"); ...; sbx.restore(ck)
        """
        return await _ck.take(self, name, memory)

    async def list_checkpoints(self) -> builtins.list[CheckpointInfo]:
        """This sandbox's checkpoints, oldest first."""
        return await _ck.list_checkpoints(self)

    async def restore(self, checkpoint: CheckpointInfo | str) -> None:
        """Roll the filesystem back to one of this sandbox's checkpoints; its processes start afresh.

        Raises:
            CheckpointNotFoundError: no such checkpoint (or another team's).
            InvalidArgumentError: the checkpoint is of another sandbox (fork it instead).
        """
        await _ck.restore(self, checkpoint)
        await self.get_info()

    @classmethod
    async def fork(
        cls,
        checkpoint: CheckpointInfo | str,
        count: int = 1,
        *,
        timeout: int = 300,
        metadata: dict[str, str] | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
        request_timeout: float | None = None,
    ) -> builtins.list[AsyncSandbox]:
        """Start `count` new sandboxes, each on its own copy of the checkpoint's filesystem.

        Args:
            checkpoint: a checkpoint (or its id), of a live sandbox or of one since killed.
            count: how many (1-64).
            timeout: seconds until the server kills each.
            metadata: labels for each new sandbox.

        Raises:
            CheckpointNotFoundError: no such checkpoint (or another team's).
            LimitReachedError: the team may not run that many more sandboxes.

        Example:
            >>> kids = Sandbox.fork(sbx.checkpoint("ready"), 10)
        """
        return await _ck.fork(
            cls,
            checkpoint,
            count,
            timeout=timeout,
            metadata=metadata,
            api_url=api_url,
            api_key=api_key,
            request_timeout=request_timeout,
        )

    @staticmethod
    async def delete_checkpoint(
        checkpoint: CheckpointInfo | str, *, api_url: str | None = None, api_key: str | None = None
    ) -> None:
        """Delete a checkpoint and free its disk.

        Raises:
            CheckpointNotFoundError: no such checkpoint (or another team's).
        """
        await _ck.delete(checkpoint, api_url=api_url, api_key=api_key)

    async def run_code(
        self,
        code: str,
        language: str | None = None,
        *,
        context: _code.CodeContext | str | None = None,
        on_stdout: _code.Handler | None = None,
        on_stderr: _code.Handler | None = None,
        on_result: _code.Handler | None = None,
        on_error: _code.Handler | None = None,
        env: dict[str, str] | None = None,
    ) -> _code.Execution:
        """Run code in the sandbox's stateful interpreter (a Jupyter kernel; the `code-interpreter` template).

        Args:
            code: the code; its last expression becomes the main result's text.
            language: "python" (default) or "bash"; each has its own default context.
            context: a context from `create_code_context` (own state and cwd); not with `language`.
            on_stdout, on_stderr: called with output text as it arrives.
            on_result, on_error: called with each Result (a figure, the last value) and the ExecutionError.
            env: environment variables for this run.

        Returns:
            The Execution: results, stdout, stderr, error (the code's exception, if any), execution_count.

        Raises:
            InvalidArgumentError: no interpreter in this sandbox's image, or an unknown language.
            NotFoundError: an unknown context.

        Example:
            >>> sbx.run_code("x = 6 * 7"); sbx.run_code("x").text
            '42'
        """
        return await _code.run_code(
            self,
            code,
            language=language,
            context=context,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            on_result=on_result,
            on_error=on_error,
            env=env,
        )

    async def create_code_context(self, language: str = "python", *, cwd: str | None = None) -> _code.CodeContext:
        """A new interpreter context with its own state and working directory (for `run_code(context=...)`)."""
        return await _code.create_code_context(self, language=language, cwd=cwd)

    async def kill(self) -> None:
        """Kill the sandbox and free everything it holds (idempotent)."""
        await self._transport.request("DELETE", f"/sandboxes/{self.sandbox_id}")

    async def close(self) -> None:
        """Close this handle's connections (the sandbox keeps running)."""
        await self._transport.close()

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.kill()
        finally:
            await self.close()


def _unix(t: datetime.datetime | float) -> float:
    return t.timestamp() if isinstance(t, datetime.datetime) else float(t)
