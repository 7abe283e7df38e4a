"""E2B's error form for the control plane (`/e2b/...`).

E2B's `Error` is `{"code": <HTTP status>, "message": ...}`, and the SDKs compare `code` with
statuses (the JS SDK's pause answers false on 409). The API's own handlers (installed first)
answer `{code, message, field}` with Sandlot's string codes; under `/e2b` their answers are
rewritten: `code` becomes the status, Sandlot's code and field come along as `error` and `field`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

__all__ = ["install_error_form"]

PREFIX = "/e2b/"


def install_error_form(app: FastAPI) -> None:
    """Errors of the control plane in E2B's form: `code` is the HTTP status (the SDKs compare it with
    404, 409, ...); Sandlot's own code and field come along as `error` and `field`."""

    def wrap(original: Callable[[Request, Any], Response | Awaitable[Response]]) -> Any:
        async def handler(request: Request, exc: Exception) -> Response:
            resp = original(request, exc)
            if inspect.isawaitable(resp):
                resp = await resp
            if not request.url.path.startswith(PREFIX) or not isinstance(resp, JSONResponse):
                return resp
            body = json.loads(bytes(resp.body))
            e2b = {"code": resp.status_code, "message": body.get("message", ""), "error": body.get("code")}
            if body.get("field"):
                e2b["field"] = body["field"]
            out = JSONResponse(e2b, status_code=resp.status_code)
            for key, value in resp.headers.items():
                if key.lower() not in ("content-length", "content-type"):
                    out.headers[key] = value
            return out

        return handler

    for exc_class, original in list(app.exception_handlers.items()):
        app.add_exception_handler(exc_class, wrap(original))
