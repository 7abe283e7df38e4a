"""The MCP tools: create, list and kill sandboxes, run commands and code, files, ports, checkpoints.

Every tool validates its arguments (pydantic, from the annotations below) and
answers a Sandlot error as a tool error naming what was wrong (`is_error`,
with the message), never a traceback. Which server and key a call uses:
over HTTP, the caller's own API key against the server it called (`Caller`);
over stdio, what `build_server` was given (else the SDK's defaults).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ContentBlock, ImageContent, InputRequiredResult, TextContent
from pydantic import Field, ValidationError

from sandlot import errors
from sandlot.models import SandboxInfo
from sandlot.sdk import AsyncSandbox, CommandResult

__all__ = ["Caller", "build_server"]

log = logging.getLogger("sandlot.mcp")

P = ParamSpec("P")
T = TypeVar("T")

SandboxId = Annotated[str, Field(pattern=r"^sb-[0-9a-z]{16}$", description="the sandbox's id (sb-...)")]
CheckpointId = Annotated[str, Field(pattern=r"^ck-[0-9A-Za-z_-]{1,60}$", description="a checkpoint's id (ck-...)")]
SandboxPath = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^/[^\x00]*$", description="absolute path")]
Timeout = Annotated[float, Field(gt=0, le=3600, description="seconds before the command is killed")]
#: the most bytes read_file returns (the rest is cut, and it says so)
READ_LIMIT = 1 << 20
INSTRUCTIONS = (
    "Sandlot runs untrusted code in isolated sandboxes (gVisor by default). Create a sandbox, run commands "
    "or code in it, move files in and out, then kill it. Sandboxes have no network unless created with one."
)


@dataclass(frozen=True)
class Caller:
    """Where the tools send their SDK calls, and with which key."""

    api_url: str | None = None
    api_key: str | None = None


#: the scope keys under which the API's /mcp route passes the caller's server URL and key
SCOPE_URL, SCOPE_KEY = "sandlot.api_url", "sandlot.api_key"


def _caller(ctx: Context, default: Caller) -> Caller:
    request = getattr(ctx.request_context, "request", None) if ctx is not None else None
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict) and scope.get(SCOPE_KEY):
        return Caller(scope.get(SCOPE_URL), scope[SCOPE_KEY])
    return default


def _tool_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A Sandlot error becomes a ToolError with its message (and the field it names), for the model to read."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except errors.SandlotError as exc:
            field = f" (field: {exc.field})" if exc.field else ""
            raise ToolError(f"{exc.code}: {exc.message}{field}") from None
        except ToolError:
            raise
        except Exception as exc:  # a bug: logged with its traceback here, a plain message there
            log.exception("MCP tool %s failed", fn.__name__)
            raise ToolError(f"internal error in {fn.__name__}: {type(exc).__name__}: {exc}") from None

    return wrapper


class _Server(MCPServer):
    """MCPServer whose argument errors read `field: what is wrong`, one per line, with no pydantic links."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ValidationError):
                raise
            problems = [f"{'.'.join(str(x) for x in e['loc']) or 'arguments'}: {e['msg']}" for e in cause.errors()]
            raise ToolError(f"invalid arguments for {name}: " + "; ".join(problems)) from cause


def _sandbox(info: SandboxInfo) -> dict[str, Any]:
    return info.model_dump(mode="json", include={"sandbox_id", "template", "runtime", "state", "ends_at", "metadata"})


def _result(res: CommandResult) -> dict[str, Any]:
    return {
        "exit_code": res.exit_code,
        "stdout": res.stdout,
        "stderr": res.stderr,
        "signal": res.signal,
        "timed_out": res.timed_out,
        "oom_killed": res.oom_killed,
    }


def build_server(api_url: str | None = None, api_key: str | None = None) -> MCPServer:
    """The MCP server with every Sandlot tool; stdio calls use `api_url` / `api_key` (else the SDK's defaults)."""
    # log_level: the SDK calls logging.basicConfig with it; INFO would make a host app chatty
    server = _Server("sandlot", instructions=INSTRUCTIONS, version="0.1.0", log_level="WARNING")
    default = Caller(api_url, api_key)

    @contextlib.asynccontextmanager
    async def opened(ctx: Context, sandbox_id: str) -> AsyncIterator[AsyncSandbox]:
        """A handle on the caller's sandbox, closed (not killed) afterwards."""
        who = _caller(ctx, default)
        sbx = await AsyncSandbox.connect(sandbox_id, api_url=who.api_url, api_key=who.api_key)
        try:
            yield sbx
        finally:
            await sbx.close()

    @server.tool()
    @_tool_errors
    async def create_sandbox(
        ctx: Context,
        template: Annotated[str | None, Field(max_length=256, description="template (default: the server's)")] = None,
        image: Annotated[str | None, Field(max_length=512, description="an image reference instead")] = None,
        runtime: Literal["gvisor", "container"] | None = None,
        network: Literal["none", "egress", "full"] = "none",
        allow: Annotated[list[str], Field(max_length=256, description="hosts/CIDRs egress may reach")] = [],  # noqa: B006
        timeout: Annotated[int, Field(ge=1, le=86400, description="seconds until it is killed")] = 300,
        memory_mb: Annotated[int | None, Field(ge=16, le=1 << 20)] = None,
        cpu: Annotated[float | None, Field(gt=0, le=256)] = None,
        metadata: dict[str, str] = {},  # noqa: B006
    ) -> dict[str, Any]:
        """Start a new sandbox and return its id. No network unless `network` says so."""
        who = _caller(ctx, default)
        policy: str | dict[str, Any] = {"mode": network, "allow": allow} if allow else network
        sbx = await AsyncSandbox.create(
            template,
            image=image,
            runtime=runtime,
            network=policy,
            timeout=timeout,
            memory_mb=memory_mb,
            cpu=cpu,
            metadata=metadata,
            api_url=who.api_url,
            api_key=who.api_key,
        )
        try:
            return _sandbox(await sbx.get_info())
        finally:
            await sbx.close()

    @server.tool()
    @_tool_errors
    async def list_sandboxes(
        ctx: Context,
        state: list[Literal["running", "paused", "hibernated", "killed"]] = [],  # noqa: B006
    ) -> dict[str, Any]:
        """The caller's sandboxes (by default the live ones)."""
        who = _caller(ctx, default)
        infos = await AsyncSandbox.list(state=state or None, api_url=who.api_url, api_key=who.api_key)
        return {"sandboxes": [_sandbox(i) for i in infos]}

    @server.tool()
    @_tool_errors
    async def kill_sandbox(ctx: Context, sandbox_id: SandboxId) -> dict[str, Any]:
        """Kill a sandbox and free everything it holds."""
        async with opened(ctx, sandbox_id) as sbx:
            await sbx.kill()
        return {"sandbox_id": sandbox_id, "killed": True}

    @server.tool()
    @_tool_errors
    async def run_command(
        ctx: Context,
        sandbox_id: SandboxId,
        command: Annotated[str, Field(min_length=1, max_length=65536, description="run by /bin/sh -c")],
        timeout: Timeout = 60.0,
        cwd: SandboxPath | None = None,
        env: dict[str, str] = {},  # noqa: B006
        background: Annotated[bool, Field(description="return the pid at once; the command keeps running")] = False,
    ) -> dict[str, Any]:
        """Run a shell command; returns its exit code and output (or, in the background, its pid)."""
        async with opened(ctx, sandbox_id) as sbx:
            if background:
                handle = await sbx.commands.run(command, background=True, timeout=None, cwd=cwd, env=env)
                await handle.disconnect()
                return {"pid": handle.pid}
            try:
                return _result(await sbx.commands.run(command, timeout=timeout, cwd=cwd, env=env))
            except errors.TimeoutError_ as exc:
                if exc.result is None:
                    raise
                return _result(exc.result)

    @server.tool()
    @_tool_errors
    async def run_code(
        ctx: Context,
        sandbox_id: SandboxId,
        code: Annotated[str, Field(min_length=1, max_length=1 << 20)],
        language: Literal["python", "bash"] = "python",
    ) -> list[ContentBlock]:
        """Run code in the sandbox's stateful interpreter (the `code-interpreter` template); figures come as images."""
        async with opened(ctx, sandbox_id) as sbx:
            ex = await sbx.run_code(code, language)
        results = ex.results
        summary: dict[str, Any] = {
            "text": ex.text,
            "stdout": "".join(ex.stdout),
            "stderr": "".join(ex.stderr),
            "error": {"name": ex.error.name, "value": ex.error.value, "traceback": ex.error.traceback}
            if ex.error
            else None,
            "results": [
                {k: v for k, v in (("text", r.text), ("html", r.html), ("json", r.json)) if v} for r in results
            ],
        }
        blocks: list[ContentBlock] = [TextContent(type="text", text=json.dumps(summary))]
        for r in ex.results:
            for data, mime in ((r.png, "image/png"), (r.jpeg, "image/jpeg")):
                if data:
                    blocks.append(ImageContent(type="image", data=data, mime_type=mime))
        return blocks

    @server.tool()
    @_tool_errors
    async def read_file(
        ctx: Context,
        sandbox_id: SandboxId,
        path: SandboxPath,
        encoding: Literal["text", "base64"] = "text",
    ) -> dict[str, Any]:
        """Read a file (the first 1 MiB): as UTF-8 text, or base64 for binary content."""
        async with opened(ctx, sandbox_id) as sbx:
            data = b""
            async for chunk in sbx.files.read_stream(path):
                data += chunk
                if len(data) > READ_LIMIT:
                    break
        truncated = len(data) > READ_LIMIT
        data = data[:READ_LIMIT]
        if encoding == "text":
            try:
                return {"path": path, "content": data.decode(), "truncated": truncated}
            except UnicodeDecodeError:
                raise ToolError(f"{path} is not UTF-8 text: read it with encoding='base64'") from None
        return {"path": path, "content": base64.b64encode(data).decode(), "truncated": truncated}

    @server.tool()
    @_tool_errors
    async def write_file(
        ctx: Context,
        sandbox_id: SandboxId,
        path: SandboxPath,
        content: Annotated[str, Field(max_length=16 << 20)],
        encoding: Literal["text", "base64"] = "text",
    ) -> dict[str, Any]:
        """Write a file (parents are made): text, or base64 for binary content."""
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise ToolError("content is not valid base64 (field: content)") from None
        else:
            data = content.encode()
        async with opened(ctx, sandbox_id) as sbx:
            entry = await sbx.files.write(path, data)
        return {"path": entry.path, "size": entry.size}

    @server.tool()
    @_tool_errors
    async def list_files(
        ctx: Context,
        sandbox_id: SandboxId,
        path: SandboxPath = "/",
        depth: Annotated[int, Field(ge=1, le=8)] = 1,
    ) -> dict[str, Any]:
        """Entries under a directory: name, type, size, path."""
        async with opened(ctx, sandbox_id) as sbx:
            entries = await sbx.files.list(path, depth=depth)
        return {"entries": [e.model_dump(mode="json", include={"name", "path", "type", "size"}) for e in entries]}

    @server.tool()
    @_tool_errors
    async def upload_from_url(
        ctx: Context,
        sandbox_id: SandboxId,
        url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=4096)],
        path: SandboxPath,
        timeout: Timeout = 120.0,
    ) -> dict[str, Any]:
        """Download a URL to a file, from inside the sandbox: its network policy decides what it may reach."""
        # The URL and path are arguments of the script, never spliced into it.
        script = (
            'mkdir -p "$(dirname "$2")" && '
            'if command -v curl >/dev/null; then exec curl -fsSL -o "$2" -- "$1"; '
            'elif command -v wget >/dev/null; then exec wget -q -O "$2" -- "$1"; '
            "else echo 'no curl or wget in this sandbox' >&2; exit 127; fi"
        )
        async with opened(ctx, sandbox_id) as sbx:
            res = await sbx.commands.run(["/bin/sh", "-c", script, "sh", url, path], timeout=timeout)
            if res.exit_code != 0:
                detail = res.stderr.strip()[-500:] or f"exit code {res.exit_code}"
                raise ToolError(f"downloading {url} in sandbox {sandbox_id} failed: {detail}")
            entry = await sbx.files.stat(path)
        return {"path": path, "size": entry.size}

    @server.tool()
    @_tool_errors
    async def expose_port(
        ctx: Context,
        sandbox_id: SandboxId,
        port: Annotated[int, Field(ge=1, le=65535)],
        public: Annotated[bool, Field(description="reachable without the access token")] = False,
    ) -> dict[str, Any]:
        """The URL of a server listening on `port` in the sandbox (send the access token unless public)."""
        async with opened(ctx, sandbox_id) as sbx:
            if public:
                await sbx.network.set_public(port)
            return {
                "url": sbx.get_url(port),
                "host": sbx.get_host(port),
                "access_token": None if public else sbx.access_token,
                "header": "X-Sandlot-Access-Token",
            }

    @server.tool()
    @_tool_errors
    async def checkpoint(
        ctx: Context,
        sandbox_id: SandboxId,
        name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")],
        memory: bool = False,
    ) -> dict[str, Any]:
        """Checkpoint the sandbox's filesystem (and with `memory`, its processes) to restore or fork later."""
        async with opened(ctx, sandbox_id) as sbx:
            ck = await sbx.checkpoint(name, memory=memory)
        return ck.model_dump(mode="json")

    @server.tool()
    @_tool_errors
    async def restore(ctx: Context, sandbox_id: SandboxId, checkpoint_id: CheckpointId) -> dict[str, Any]:
        """Roll a sandbox back to one of its checkpoints."""
        async with opened(ctx, sandbox_id) as sbx:
            await sbx.restore(checkpoint_id)
            return _sandbox(await sbx.get_info())

    @server.tool()
    @_tool_errors
    async def fork(
        ctx: Context,
        checkpoint_id: CheckpointId,
        count: Annotated[int, Field(ge=1, le=64)] = 1,
        timeout: Annotated[int, Field(ge=1, le=86400)] = 300,
    ) -> dict[str, Any]:
        """Start `count` new sandboxes from a checkpoint."""
        who = _caller(ctx, default)
        kids = await AsyncSandbox.fork(checkpoint_id, count, timeout=timeout, api_url=who.api_url, api_key=who.api_key)
        for kid in kids:
            await kid.close()
        return {"sandbox_ids": [k.sandbox_id for k in kids]}

    return server
