"""/ui serves the dashboard's page and assets without a key; the API it calls still needs one,
and a terminal opens with a single-use ticket instead of a key in its URL."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sandlot.api.ui import STATIC
from tests.api.harness import Server

pytestmark = pytest.mark.integration


def test_page_and_assets_without_a_key(api_server: Server) -> None:
    with httpx.Client(base_url=api_server.url, timeout=30) as c:
        r = c.get("/ui")
        assert r.status_code in (307, 308) and r.headers["location"].endswith("/ui/")
        page = c.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        # every asset the page and its modules name is served, with a type a browser accepts for it
        assets = re.findall(r'(?:href|src)="([^"]+\.(?:css|js))"', page.text)
        assert "js/app.js" in assets and "vendor/xterm/xterm.css" in assets
        for js in (STATIC / "js").glob("*.js"):
            assets += [f"js/{js.name}"]
            for imp in re.findall(r'from "\./([^"]+)"|from "\.\./([^"]+)"', js.read_text()):
                assets.append("js/" + imp[0] if imp[0] else imp[1])
        for asset in set(assets):
            r = c.get(f"/ui/{asset}")
            assert r.status_code == 200, asset
            want = "text/css" if asset.endswith(".css") else "javascript"
            assert want in r.headers["content-type"], (asset, r.headers["content-type"])
        assert c.get("/ui/vendor/xterm/LICENSE").status_code == 200
        assert c.get("/ui/no-such-file.js").status_code == 404
        # nothing from elsewhere: no CDN at runtime
        for f in STATIC.rglob("*.*"):
            if f.suffix in (".html", ".js", ".css") and "vendor" not in f.parts:
                assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", f.read_text()), f


def test_the_wheel_ships_every_asset() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["sandlot.api.ui"]
    for f in STATIC.rglob("*"):
        if f.is_file():
            rel = f.relative_to(STATIC.parent).as_posix()
            assert any(fnmatch.fnmatch(rel, g) and "/" not in rel[len(g.rsplit("/", 1)[0]) + 1 :] for g in globs), rel


def test_the_api_still_needs_a_key(api_server: Server) -> None:
    with httpx.Client(base_url=api_server.url, timeout=30) as c:
        for method, path in (("GET", "/sandboxes"), ("GET", "/templates"), ("POST", "/ws-tickets"), ("GET", "/events")):
            r = c.request(method, path)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["code"] == "unauthenticated" or "key" in r.json()["message"]


def _pty(api_server: Server, sandbox_id: str, query: str) -> dict[str, object]:
    url = api_server.url.replace("http://", "ws://") + f"/sandboxes/{sandbox_id}/pty?{query}"
    with connect(url, open_timeout=30) as ws:
        first = ws.recv(timeout=30)
        assert isinstance(first, str)
        msg: dict[str, object] = json.loads(first)
        if msg["type"] == "start":
            ws.send(json.dumps({"type": "input", "data": "exit\n"}))
            try:
                while True:
                    ws.recv(timeout=30)
            except ConnectionClosed:
                pass
        return msg


def test_a_ticket_opens_one_terminal(api_server: Server, team: httpx.Client) -> None:
    r = team.post("/sandboxes", json={})
    assert r.status_code == 201, r.text
    sid = r.json()["sandbox_id"]
    r = team.post("/ws-tickets")
    assert r.status_code == 201, r.text
    ticket = r.json()["ticket"]
    assert r.json()["expires_in"] > 0
    assert _pty(api_server, sid, f"ticket={ticket}")["type"] == "start"
    again = _pty(api_server, sid, f"ticket={ticket}")  # used: a second socket is refused
    assert again["type"] == "error" and again["code"] == "unauthenticated", again
    assert _pty(api_server, sid, "ticket=wst_forged")["type"] == "error"
    # a ticket carries its team: another team's sandbox stays out of reach
    other = httpx.post(api_server.url + "/keys", headers={"X-API-Key": api_server.admin_key}, json={"team": "ui-other"})
    stranger = httpx.post(api_server.url + "/ws-tickets", headers={"X-API-Key": other.json()["key"]}).json()["ticket"]
    denied = _pty(api_server, sid, f"ticket={stranger}")
    assert denied["type"] == "error" and str(denied["code"]).endswith("not_found"), denied
