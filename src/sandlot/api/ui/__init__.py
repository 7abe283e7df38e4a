"""The web dashboard: static files at `/ui/`, served without a key.

The page holds nothing secret: it signs in with an API key kept in the browser's
sessionStorage and calls the same HTTP API as the SDK, with the key in the
`Authorization` header; terminals open with a single-use ticket (`POST /ws-tickets`),
so the key never appears in a URL. No build step and no CDN: plain HTML, CSS and ES
modules, with xterm.js vendored under `static/vendor/xterm/` (its VERSION says which).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["STATIC", "install"]

STATIC = Path(__file__).parent / "static"

#: the page talks only to its own origin (the API, and its WebSockets: CSP 3 counts ws: to the same host as 'self')
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: an upgraded server's page is seen at once
}


class _Static(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_HEADERS)
        return response


def install(app: FastAPI) -> None:
    """Serve the dashboard at /ui/ (and /ui redirects there)."""

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", _Static(directory=STATIC, html=True), name="ui")
