"""Another team, with its own key and its own sandbox's access tokens, goes for a victim team's things.

The victim has a sandbox serving a private port, a checkpoint, a volume and a
template of its own. Every attack below gets a refusal (its status listed),
and afterwards the victim's things are all still there, unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.harness import Server, tar_of
from tests.security.conftest import create, sh, team_of

SECRET = "victim-only-4f2a"


@pytest.fixture(scope="module")
def ids(victim: httpx.Client, attacker: httpx.Client, admin: httpx.Client) -> Iterator[dict[str, str]]:
    assert victim.post("/volumes", json={"name": "vault", "size_mb": 16}).status_code == 201
    v = create(victim, template="debian", volumes=[{"name": "vault", "path": "/vault"}])["sandbox_id"]
    sh(victim, v, f"echo {SECRET} > /vault/s && echo {SECRET} > /root/s")
    serve = "cd /root && exec python3 -m http.server 8000"
    assert victim.post(f"/sandboxes/{v}/commands", json={"cmd": serve, "background": True}).status_code == 200
    ck = victim.post(f"/sandboxes/{v}/checkpoints", json={"name": "mine"}).json()["checkpoint_id"]
    tpl = f"victim-tpl-{v[-6:]}"
    dockerfile = f"FROM busybox\nRUN echo {SECRET} > /s\n".encode()
    r = victim.post("/templates/build", params={"name": tpl}, content=tar_of({"Dockerfile": dockerfile}), timeout=300)
    assert '"type":"template"' in r.text.replace(" ", ""), r.text
    e2b = attacker.post("/e2b/sandboxes", json={"templateID": "busybox"}).json()  # the attacker's own, via E2B
    a = e2b["sandboxID"]
    out = {
        "v": v,
        "ck": ck,
        "tpl": tpl,
        "a": a,
        "a_token": attacker.get(f"/sandboxes/{a}/network").json()["access_token"],
        "a_envd": e2b["envdAccessToken"],
    }
    deadline = time.monotonic() + 30
    while victim.get(f"/sandboxes/{v}/ports/8000/s").status_code != 200:
        assert time.monotonic() < deadline, "the victim's server did not start"
        time.sleep(0.3)
    yield out
    admin.delete(f"/templates/{tpl}")
    victim.delete(f"/checkpoints/{ck}")


NF, DENIED, NO_AUTH, TAKEN = {404}, {403}, {401}, {409}

# (what, method, path, request keyword arguments, statuses that mean "refused")
ATTACKS: list[tuple[str, str, str, dict[str, Any], set[int]]] = [
    ("read its sandbox", "GET", "/sandboxes/{v}", {}, NF),
    ("kill its sandbox", "DELETE", "/sandboxes/{v}", {}, NF),
    ("run a command in it", "POST", "/sandboxes/{v}/commands", {"json": {"cmd": "cat /root/s"}}, NF),
    ("read its files", "GET", "/sandboxes/{v}/files", {"params": {"path": "/root/s"}}, NF),
    ("write its files", "PUT", "/sandboxes/{v}/files", {"params": {"path": "/root/x"}, "content": b"x"}, NF),
    ("list its processes", "GET", "/sandboxes/{v}/processes", {}, NF),
    ("pause it", "POST", "/sandboxes/{v}/pause", {"json": {}}, NF),
    ("extend its timeout", "POST", "/sandboxes/{v}/timeout", {"json": {"timeout": 9999}}, NF),
    ("open its network", "PUT", "/sandboxes/{v}/network", {"json": {"mode": "full"}}, NF),
    ("make its port public", "PUT", "/sandboxes/{v}/public-ports/8000", {}, NF),
    ("export its filesystem", "GET", "/sandboxes/{v}/export", {}, NF),
    ("run code in it", "POST", "/sandboxes/{v}/code", {"json": {"code": "1"}}, NF),
    ("read its checkpoint", "GET", "/checkpoints/{ck}", {}, NF),
    ("fork its checkpoint", "POST", "/checkpoints/{ck}/fork", {"json": {"count": 1}}, NF),
    ("delete its checkpoint", "DELETE", "/checkpoints/{ck}", {}, NF),
    ("list its checkpoints", "GET", "/sandboxes/{v}/checkpoints", {}, NF),
    ("checkpoint its sandbox", "POST", "/sandboxes/{v}/checkpoints", {"json": {"name": "x"}}, NF),
    (
        "restore its checkpoint into one's own",
        "POST",
        "/sandboxes/{a}/restore",
        {"json": {"checkpoint_id": "{ck}"}},
        NF,
    ),
    ("delete its volume", "DELETE", "/volumes/vault", {}, NF),
    ("mount its volume", "POST", "/sandboxes", {"json": {"volumes": [{"name": "vault", "path": "/v"}]}}, NF),
    ("read its template", "GET", "/templates/{tpl}", {}, NF),
    ("start its template", "POST", "/sandboxes", {"json": {"template": "{tpl}"}}, NF),
    ("export its template", "GET", "/templates/{tpl}/export", {}, NF),
    ("delete its template", "DELETE", "/templates/{tpl}", {}, DENIED),
    ("give its template a start command", "PUT", "/templates/{tpl}/start", {"json": {"cmd": "true"}}, DENIED),
    (
        "replace its template by a pull",
        "POST",
        "/images/pull",
        {"json": {"ref": "127.0.0.1:1/x:1", "name": "{tpl}"}},
        TAKEN,
    ),
    (
        "replace its template by a build",
        "POST",
        "/templates/build",
        {"params": {"name": "{tpl}"}, "content": "TAR"},
        TAKEN,
    ),
    (
        "replace its template by an import",
        "POST",
        "/templates/import",
        {"params": {"name": "{tpl}"}, "content": "TAR"},
        TAKEN,
    ),
    ("its port, with one's key", "GET", "/sandboxes/{v}/ports/8000/s", {}, NF),
    ("its port, with one's sandbox's token", "GET", "/sandboxes/{v}/ports/8000/s", {"token": "header"}, NO_AUTH),
    ("its port, token in the query", "GET", "/sandboxes/{v}/ports/8000/s", {"token": "query"}, NO_AUTH),
    ("its port by host name, one's key", "GET", "/s", {"host": "8000-{v}.localhost"}, NF),
    ("its port by host name, one's token", "GET", "/s", {"host": "8000-{v}.localhost", "token": "header"}, NO_AUTH),
    ("E2B: read its sandbox", "GET", "/e2b/sandboxes/{v}", {}, NF),
    ("E2B: connect to it", "POST", "/e2b/sandboxes/{v}/connect", {"json": {"timeout": 60}}, NF),
    ("E2B: snapshot it", "POST", "/e2b/sandboxes/{v}/snapshots", {"json": {}}, NF),
    ("E2B: its files, one's key", "GET", "/files", {"params": {"path": "/root/s"}, "e2b": "key"}, NF),
    ("E2B: its files, one's envd token", "GET", "/files", {"params": {"path": "/root/s"}, "e2b": "token"}, NO_AUTH),
    ("make oneself a key", "POST", "/keys", {"json": {"team": "victim"}}, DENIED),
    ("raise one's own quota", "PATCH", "/teams/{team}/quota", {"json": {"max_sandboxes": 100000}}, DENIED),
    ("read its team", "GET", "/teams/{victim_team}", {}, DENIED),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


@pytest.mark.parametrize(("what", "method", "path", "kw", "refused"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_another_teams_things_are_out_of_reach(
    what: str,
    method: str,
    path: str,
    kw: dict[str, Any],
    refused: set[int],
    ids: dict[str, str],
    attacker: httpx.Client,
    victim: httpx.Client,
    api_server: Server,
) -> None:
    names = {**ids, "team": team_of(attacker), "victim_team": team_of(victim)}
    kw, path = _fill(dict(kw), names), _fill(path, names)
    assert "{" not in path
    headers = {"X-API-Key": attacker.headers["X-API-Key"]}
    token = kw.pop("token", None)
    if token is not None:  # the attacker's own sandbox's access token instead of its key
        del headers["X-API-Key"]
        if token == "header":
            headers["X-Sandlot-Access-Token"] = ids["a_token"]
        else:
            kw["params"] = {"sandlot_access_token": ids["a_token"]}
    if host := kw.pop("host", None):
        headers["Host"] = f"{host}:{api_server.port}"
    if (e2b := kw.pop("e2b", None)) is not None:
        headers["E2b-Sandbox-Id"] = ids["v"]
        if e2b == "token":
            del headers["X-API-Key"]
            headers["X-Access-Token"] = ids["a_envd"]
    if kw.get("content") == "TAR":
        kw["content"] = tar_of({"Dockerfile": b"FROM busybox\n"})
    r = httpx.request(method, api_server.url + path, headers=headers, timeout=120, **kw)
    assert r.status_code in refused, f"{what}: {r.status_code} {r.text[:300]}"
    assert SECRET not in r.text


def test_the_victims_things_are_intact(ids: dict[str, str], victim: httpx.Client) -> None:
    """Run last in the module: after every attack above, all is as the victim left it."""
    v = ids["v"]
    assert victim.get(f"/sandboxes/{v}").json()["state"] == "running"
    assert sh(victim, v, "cat /vault/s /root/s")[0] == f"{SECRET}\n{SECRET}\n"
    assert victim.get(f"/sandboxes/{v}/network").json()["public_ports"] == []
    assert victim.get(f"/checkpoints/{ids['ck']}").status_code == 200
    assert [x["name"] for x in victim.get("/volumes").json()["volumes"]] == ["vault"]
    tpl = victim.get(f"/templates/{ids['tpl']}").json()
    assert tpl["owner"] == team_of(victim) and "build of" in tpl["source"]
    assert ids["tpl"] in json.dumps(victim.get("/templates").json())
    r = victim.post("/sandboxes", json={"template": ids["tpl"]})  # its own team may use it
    assert r.status_code == 201, r.text
    assert sh(victim, r.json()["sandbox_id"], "cat /s")[0] == f"{SECRET}\n"
    victim.delete(f"/sandboxes/{r.json()['sandbox_id']}")


def test_building_from_its_template_is_not_found(ids: dict[str, str], attacker: httpx.Client) -> None:
    dockerfile = f"FROM {ids['tpl']}\nRUN cat /s\n".encode()
    r = attacker.post("/templates/build", params={"name": "from-theirs"}, content=tar_of({"Dockerfile": dockerfile}))
    assert '"type":"error"' in r.text.replace(" ", "") and "not found" in r.text and SECRET not in r.text, r.text
    assert ids["tpl"] not in json.dumps(attacker.get("/templates").json())
