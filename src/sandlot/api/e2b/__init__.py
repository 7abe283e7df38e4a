"""The E2B facade: the official `e2b` and `e2b-code-interpreter` SDKs, unchanged, drive Sandlot.

- `control`: E2B's REST control plane under `/e2b` (`E2B_API_URL`).
- `routing`: which sandbox and port an in-sandbox request is for
  (`E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers, or `{port}-{id}.{domain}` hosts).
- `envd_process`, `envd_filesystem`: envd's Connect services, `/files`, `/health`.
- `interpreter`: the code interpreter's `/execute` and `/contexts`.

`install(app)` adds all of it to the API app. `env_exports` gives the settings
that point the SDKs here (`sandlot e2b-env`).
"""

from __future__ import annotations

from fastapi import FastAPI

from sandlot.apikeys import e2b_form

__all__ = ["env_exports", "install"]


def install(app: FastAPI) -> None:
    """Add the facade's routes; E2B's in-sandbox requests join the API's host router (installed first).
    The API's error handlers (installed first too) answer the control plane in E2B's error form."""
    from sandlot.api.e2b import control, envd_filesystem, envd_process, error_form, interpreter, routing

    for module in (control, envd_process, envd_filesystem, interpreter):
        app.include_router(module.router)
    routing.install(app.state.host_routes)
    error_form.install_error_form(app)


def env_exports(api_url: str, api_key: str, domain: str | None = None) -> dict[str, str]:
    """The E2B SDK settings that point it at the Sandlot server at `api_url`.

    Without `domain`, everything goes to that one host and port: the control
    plane under `/e2b`, in-sandbox calls to `E2B_SANDBOX_URL` with the sandbox
    named in headers (a loopback or single-host setup). With `domain`, the SDK
    reaches sandboxes as `https://{port}-{id}.{domain}`: a deployment with
    wildcard DNS for `*.{domain}` and TLS (a reverse proxy) in front of Sandlot.

    The key is given in its E2B form (`e2b_` + hex, `sandlot.apikeys`): the E2B
    SDKs refuse other forms before sending anything.
    """
    base = api_url.rstrip("/")
    env = {"E2B_API_KEY": e2b_form(api_key), "E2B_API_URL": f"{base}/e2b"}
    if domain:
        env["E2B_DOMAIN"] = domain
        return env
    env["E2B_SANDBOX_URL"] = base
    # uvicorn speaks HTTP/1.1; the SDK's default is HTTP/2 (prior knowledge on http://).
    env["E2B_HTTP_VERSION"] = "1.1"
    return env
