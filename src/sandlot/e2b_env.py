"""The settings that point the official E2B SDKs at a Sandlot server (`sandlot e2b-env`).

Plain data, no server code: the CLI (a client) prints them, the tests set them.
"""

from __future__ import annotations

from sandlot.apikeys import e2b_form

__all__ = ["env_exports"]


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
