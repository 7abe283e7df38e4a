"""Errors as HTTP answers: one table from exception class to status, one body shape.

Every error the API returns is JSON `{"code", "message", "field"}`; `code` is a
key of `sandlot.errors.ERROR_CODES`, so the SDK rebuilds the same exception.
A class not in `HTTP_STATUS` takes its nearest listed base class's status.
Bad input is always a 4xx: request validation, unknown routes and methods
included; only an InternalError (a bug or a broken host) is a 5xx, a 502
when a sandbox's exposed port has nothing listening on it, and a 503 with
Retry-After when the node's queue of sandbox starts is full (ServerBusyError).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandlot import errors

__all__ = ["HTTP_STATUS", "error_response", "install_handlers", "status_of"]

log = logging.getLogger("sandlot.api")


#: exception class -> HTTP status; the only place statuses are chosen.
HTTP_STATUS: dict[type[errors.SandlotError], int] = {
    errors.NotFoundError: 404,
    errors.InvalidArgumentError: 400,
    errors.ConflictError: 409,
    errors.SandboxStateError: 409,
    errors.AgentUnresponsiveError: 503,
    errors.AuthenticationError: 401,
    errors.PermissionDeniedError: 403,
    errors.QuotaError: 429,
    errors.NoSpaceError: 507,
    errors.TimeoutError_: 504,
    errors.CommandExitError: 400,
    errors.BuildError: 400,
    errors.RuntimeUnavailableError: 503,
    errors.NodeUnreachableError: 503,
    errors.DatabaseUnavailableError: 503,
    errors.ServerBusyError: 503,
    errors.RegistryError: 502,
    errors.PortNotListeningError: 502,
    errors.InternalError: 500,
}

# Starlette's own errors (no route, wrong method, ...) by status.
_HTTP_CODES = {401: errors.PermissionDeniedError.code, 403: errors.PermissionDeniedError.code, 404: "not_found"}


def status_of(exc: errors.SandlotError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "field": field}, status_code=status)


# Pydantic names the member of a union it tried inside `loc` ("cmd", "constrained-str"): not a field.
_UNION_TAG = re.compile(r"^(constrained-\w+|str|int|float|bool|none|(list|dict|function-\w+|json-or-python)\[.*\])$")


def _field_of(loc: tuple[Any, ...]) -> str:
    # ("body", "env", "A") -> "env.A"; ("query", "path") -> "path"; ("body",) -> "body"
    parts = [str(x) for x in loc[1:]] if len(loc) > 1 else [str(x) for x in loc]
    return ".".join(p for p in parts if not _UNION_TAG.match(p))


async def _sandlot_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.SandlotError)
    status = status_of(exc)
    if isinstance(exc, errors.ServerBusyError):  # overload is expected, not an error of ours: no log
        resp = error_response(status, exc.code, exc.message, exc.field)
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    if status >= 500:
        log.error("%s: %s", type(exc).__name__, exc)
    return error_response(status, exc.code, exc.message, exc.field)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = list(exc.errors())
    if not problems:
        return error_response(422, errors.InvalidArgumentError.code, "the request is malformed")
    first = problems[0]
    loc = tuple(first.get("loc", ()))
    field = _field_of(loc) or None
    msg = str(first.get("msg", "is invalid"))
    where = f"{loc[0]} field {field!r}" if len(loc) > 1 else (field or "the request")
    message = f"{where}: {msg}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return error_response(422, errors.InvalidArgumentError.code, message, field)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, errors.InvalidArgumentError.code)
    resp = error_response(exc.status_code, code, str(exc.detail))
    for key, value in (exc.headers or {}).items():
        resp.headers[key] = value
    return resp


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, errors.InternalError.code, f"internal error: {type(exc).__name__}")


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.SandlotError, _sandlot_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
