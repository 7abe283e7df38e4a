"""The E2B facade: the official `e2b` and `e2b-code-interpreter` SDKs, unchanged, drive Sandlot.

- `control`: E2B's REST control plane under `/e2b` (`E2B_API_URL`); `metrics` its `get_metrics`.
- `routing`: which sandbox and port an in-sandbox request is for
  (`E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers, or `{port}-{id}.{domain}` hosts).
- `envd_process`, `envd_filesystem`: envd's Connect services, `/files`, `/health`.
- `interpreter`: the code interpreter's `/execute` and `/contexts`.
- `error_form`: the control plane's errors in E2B's shape.

`install(app)` adds all of it to the API app. `env_exports` (from
`sandlot.e2b_env`, client-side) gives the settings that point the SDKs here.
"""

from __future__ import annotations

from fastapi import FastAPI

from sandlot.e2b_env import env_exports

__all__ = ["env_exports", "install"]


def install(app: FastAPI) -> None:
    """Add the facade's routes; E2B's in-sandbox requests join the API's host router (installed first).
    The API's error handlers (installed first too) answer the control plane in E2B's error form."""
    from sandlot.api.e2b import control, envd_filesystem, envd_process, error_form, interpreter, metrics, routing

    for module in (control, metrics, envd_process, envd_filesystem, interpreter):
        app.include_router(module.router)
    routing.install(app.state.host_routes)
    error_form.install_error_form(app)
