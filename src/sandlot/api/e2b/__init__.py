"""The E2B facade: the official `e2b` and `e2b-code-interpreter` SDKs, unchanged, drive Sandlot.

- `control`: E2B's REST control plane under `/e2b` (`E2B_API_URL`).
- `routing`: which sandbox and port an in-sandbox request is for
  (`E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers, or `{port}-{id}.{domain}` hosts).
- `envd_process`, `envd_filesystem`: envd's Connect services, `/files`, `/health`.
- `interpreter`: the code interpreter's `/execute` and `/contexts`.

`install(app)` adds all of it to the API app. `env_exports` (from
`sandlot.e2b_env`, client-side) gives the settings that point the SDKs here.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandlot.e2b_env import env_exports

__all__ = ["env_exports", "install"]


def install(app: FastAPI) -> None:
    """Add the facade's routes; E2B's in-sandbox requests join the API's host router (installed first)."""
    from sandlot.api.e2b import control, envd_filesystem, envd_process, interpreter, routing

    for module in (control, envd_process, envd_filesystem, interpreter):
        app.include_router(module.router)
    routing.install(app.state.host_routes)
    _control_plane_errors(app)


_BODY_HEADERS = ("content-length", "content-type")


def _control_plane_errors(app: FastAPI) -> None:
    """Errors under /e2b/ in E2B's own shape, `{"code": <HTTP status>, "message"}`.

    E2B's JavaScript SDK tells outcomes apart by that numeric `code` (`Sandbox.kill`
    answers false on `code === 404`); the Python SDK reads the status. Every
    handler the app has (installed before this) is wrapped, so both shapes come
    from one set of handlers.
    """
    for exc_type, handler in list(app.exception_handlers.items()):

        async def e2b_shaped(request: Request, exc: Exception, handler: Any = handler) -> Response:
            response: Response = await handler(request, exc)
            if not request.url.path.startswith("/e2b/"):
                return response
            try:
                message = str(json.loads(bytes(response.body)).get("message", ""))
            except (ValueError, AttributeError):
                return response
            return JSONResponse(
                {"code": response.status_code, "message": message},
                status_code=response.status_code,
                headers={
                    k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")
                },
            )

        app.exception_handlers[exc_type] = e2b_shaped
