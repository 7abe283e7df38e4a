"""`sbx.run_code`: the stateful code interpreter (Jupyter kernels, or bash) in a sandbox.

The sandbox needs python3 with ipykernel: create it from the `code-interpreter`
template. State (variables, imports, `cd`) persists per context between calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandlot import errors
from sandlot.sdk._transport import iter_events

if TYPE_CHECKING:
    from sandlot.sdk.sandbox import AsyncSandbox

__all__ = ["CodeContext", "Execution", "ExecutionError", "Result", "create_code_context", "run_code"]

#: Called with each piece of output text, result or error as it arrives (a coroutine function is awaited).
Handler = Callable[[Any], Any] | Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class CodeContext:
    """An execution context: its own kernel (state) and working directory."""

    id: str
    language: str
    cwd: str


@dataclass(frozen=True)
class ExecutionError:
    """An exception the code raised (data, not an SDK error)."""

    name: str
    value: str
    traceback: str


@dataclass(frozen=True)
class Result:
    """A displayed value: the last expression (`is_main_result`) or a display (a figure, ...)."""

    is_main_result: bool
    text: str | None = None
    html: str | None = None
    markdown: str | None = None
    svg: str | None = None
    png: str | None = None  # base64
    jpeg: str | None = None  # base64
    latex: str | None = None
    json: Any = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Execution:
    """Everything one `run_code` produced."""

    results: list[Result] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    error: ExecutionError | None = None
    execution_count: int | None = None

    @property
    def text(self) -> str | None:
        """The last expression's text, if the code ended with one."""
        return next((r.text for r in self.results if r.is_main_result), None)


_RESULT_FIELDS = ("text", "html", "markdown", "svg", "png", "jpeg", "latex", "json")


async def _call(handler: Handler | None, value: Any) -> None:
    if handler is not None:
        res = handler(value)
        if asyncio.iscoroutine(res):
            await res


async def run_code(
    sbx: AsyncSandbox,
    code: str,
    *,
    language: str | None = None,
    context: CodeContext | str | None = None,
    on_stdout: Handler | None = None,
    on_stderr: Handler | None = None,
    on_result: Handler | None = None,
    on_error: Handler | None = None,
    env: dict[str, str] | None = None,
) -> Execution:
    if language is not None and context is not None:
        raise errors.InvalidArgumentError("give a language or a context, not both", field="language")
    body: dict[str, Any] = {"code": code, "env": env or {}}
    if language is not None:
        body["language"] = language
    if context is not None:
        body["context"] = context.id if isinstance(context, CodeContext) else context
    ex = Execution()
    response = await sbx._transport.open_stream("POST", f"/sandboxes/{sbx.sandbox_id}/code", json=body)
    try:
        async for ev in iter_events(response):
            kind = ev.get("type")
            if kind == "stdout":
                ex.stdout.append(str(ev["text"]))
                await _call(on_stdout, str(ev["text"]))
            elif kind == "stderr":
                ex.stderr.append(str(ev["text"]))
                await _call(on_stderr, str(ev["text"]))
            elif kind == "result":
                known = {k: ev.get(k) for k in _RESULT_FIELDS}
                res = Result(is_main_result=bool(ev.get("is_main_result")), raw=ev, **known)
                ex.results.append(res)
                await _call(on_result, res)
            elif kind == "exception":
                ex.error = ExecutionError(str(ev["name"]), str(ev["value"]), str(ev.get("traceback", "")))
                await _call(on_error, ex.error)
            elif kind == "number_of_executions":
                ex.execution_count = int(ev["execution_count"])
            elif kind == "end":
                return ex
    finally:
        await sbx._transport.close_stream(response)
    raise errors.InternalError("the code's output stream ended before the execution did")


async def create_code_context(sbx: AsyncSandbox, *, language: str = "python", cwd: str | None = None) -> CodeContext:
    body: dict[str, Any] = {"language": language}
    if cwd is not None:
        body["cwd"] = cwd
    raw = await sbx._transport.json("POST", f"/sandboxes/{sbx.sandbox_id}/code/contexts", json=body)
    return CodeContext(id=str(raw["id"]), language=str(raw["language"]), cwd=str(raw["cwd"]))
