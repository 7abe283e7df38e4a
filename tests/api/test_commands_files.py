"""Commands, processes, terminals and files over HTTP."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from typing import Any

import httpx
import pytest

from tests.api.harness import agent_available

pytestmark = pytest.mark.integration
real_agent = pytest.mark.skipif(not agent_available(), reason="needs the real agent (pty, tar, watch)")


@pytest.fixture
def sid(team: httpx.Client) -> str:
    r = team.post("/sandboxes", json={})
    assert r.status_code == 201, r.text
    return str(r.json()["sandbox_id"])


def _events(r: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in r.text.splitlines() if line]


def test_output_streams_as_produced(team: httpx.Client, sid: str) -> None:
    t0 = time.monotonic()
    seen: list[tuple[float, dict[str, Any]]] = []
    body = {"cmd": "echo first; sleep 1.5; echo second"}
    with team.stream("POST", f"/sandboxes/{sid}/commands", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        for line in r.iter_lines():
            seen.append((time.monotonic() - t0, json.loads(line)))
    first = next(t for t, e in seen if e.get("data") == "first\n")
    assert first < 1.2, seen
    assert seen[-1][1]["type"] == "exit" and seen[-1][1]["exit_code"] == 0


def test_sse_stdin_env_cwd_and_timeout(team: httpx.Client, sid: str) -> None:
    r = team.post(f"/sandboxes/{sid}/commands", json={"cmd": "echo $FOO; cat"}, headers={"Accept": "text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream") and "event: exit" in r.text
    r = team.post(f"/sandboxes/{sid}/commands", json={"cmd": ["cat"], "stdin": "piped\n"})
    assert [e["data"] for e in _events(r) if e["type"] == "stdout"] == ["piped\n"]
    r = team.post(
        f"/sandboxes/{sid}/commands", json={"cmd": "echo $FOO; basename $(pwd)", "env": {"FOO": "bar"}, "cwd": "/tmp"}
    )
    assert "".join(e["data"] for e in _events(r) if e["type"] == "stdout") == "bar\ntmp\n"
    r = team.post(f"/sandboxes/{sid}/commands", json={"cmd": "sleep 30", "timeout": 1})
    assert _events(r)[-1]["timed_out"] is True


def test_command_errors_are_4xx(team: httpx.Client, sid: str) -> None:
    r = team.post(f"/sandboxes/{sid}/commands", json={"cmd": ["no-such-cmd"]})
    assert r.status_code == 400 and r.json()["code"] == "command_not_found"
    r = team.post(f"/sandboxes/{sid}/commands", json={"cmd": "true", "cwd": "/nope"})
    assert r.status_code == 404 and r.json()["code"] == "file_not_found"
    r = team.post(f"/sandboxes/{sid}/commands", json={"cmd": []})
    assert r.status_code == 422 and r.json()["field"] == "cmd"
    r = team.post(f"/sandboxes/{sid}/commands", json={"cmd": "a\u0000b"})
    assert r.status_code == 422


def test_background_list_connect_stdin_signal(team: httpx.Client, sid: str) -> None:
    base = f"/sandboxes/{sid}"
    r = team.post(f"{base}/commands", json={"cmd": "echo ready; while read l; do echo got:$l; done", "background": True,
                                            "tag": "worker"})  # fmt: skip
    assert r.status_code == 200, r.text
    pid = r.json()["pid"]
    procs = team.get(f"{base}/processes").json()["processes"]
    assert any(p["pid"] == pid and p["running"] and p["tag"] == "worker" for p in procs)
    assert team.post(f"{base}/processes/{pid}/stdin", content=b"one\n").status_code == 204
    with team.stream("GET", f"{base}/processes/{pid}/output") as stream:
        out = ""
        for line in stream.iter_lines():
            ev = json.loads(line)
            out += ev.get("data", "")
            if "got:one" in out and ev["type"] == "stdout":
                assert team.post(f"{base}/processes/{pid}/signal", json={"signal": 15}).status_code == 204
            if ev["type"] == "exit":
                assert ev["signal"] == 15
    assert "ready\n" in out and "got:one\n" in out
    assert team.post(f"{base}/processes/999999/signal", json={}).json()["code"] == "process_not_found"
    assert team.delete(f"{base}/processes/999999").status_code == 404
    assert team.get(f"{base}/processes/999999/output").status_code == 404


def test_file_upload_download_and_friends(team: httpx.Client, sid: str) -> None:
    base = f"/sandboxes/{sid}/files"
    blob = os.urandom(3 << 20)

    def chunks() -> Any:
        for i in range(0, len(blob), 100_000):
            yield blob[i : i + 100_000]

    r = team.put(base, params={"path": "/tmp/d/blob.bin"}, content=chunks())
    assert r.status_code == 200, r.text
    assert r.json()["size"] == len(blob) and r.json()["type"] == "file"
    got = bytearray()
    with team.stream("GET", base, params={"path": "/tmp/d/blob.bin"}) as resp:
        for chunk in resp.iter_bytes():
            got += chunk
    assert bytes(got) == blob
    assert team.get(f"{base}/stat", params={"path": "/tmp/d"}).json()["type"] == "dir"
    assert team.get(f"{base}/exists", params={"path": "/tmp/d/nope"}).json() == {"exists": False}
    assert team.post(f"{base}/mkdir", json={"path": "/tmp/d/sub/deeper"}).json() == {"created": True}
    assert team.post(f"{base}/mkdir", json={"path": "/tmp/d/sub/deeper"}).json() == {"created": False}
    r = team.post(f"{base}/rename", json={"src": "/tmp/d/blob.bin", "dst": "/tmp/d/sub/b.bin"})
    assert r.status_code == 200 and r.json()["path"] == "/tmp/d/sub/b.bin"
    names = [e["name"] for e in team.get(f"{base}/list", params={"path": "/tmp/d/sub"}).json()["entries"]]
    assert sorted(names) == ["b.bin", "deeper"]
    assert team.delete(base, params={"path": "/tmp/d/sub"}).status_code == 204
    r = team.get(base, params={"path": "/tmp/d/sub/b.bin"})
    assert r.status_code == 404 and r.json()["code"] == "file_not_found"
    r = team.get(base, params={"path": "/tmp"})
    assert r.status_code == 400 and r.json()["code"] == "is_a_directory"
    assert team.get(base, params={"path": ""}).status_code == 422


@real_agent
def test_tar_roundtrip_and_watch(team: httpx.Client, sid: str) -> None:
    base = f"/sandboxes/{sid}/files"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("a.txt", b"A"), ("sub/b.txt", b"BB")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = team.put(f"{base}/tar", params={"path": "/tmp/t"}, content=buf.getvalue())
    assert r.status_code == 200, r.text
    assert team.get(base, params={"path": "/tmp/t/sub/b.txt"}).content == b"BB"
    back = tarfile.open(fileobj=io.BytesIO(team.get(f"{base}/tar", params={"path": "/tmp/t"}).content))
    assert {"a.txt", "sub/b.txt"} <= {m.name.lstrip("./") for m in back.getmembers()}
    with team.stream("GET", f"{base}/watch", params={"path": "/tmp/t"}) as stream:
        team.put(base, params={"path": "/tmp/t/new.txt"}, content=b"x")
        for line in stream.iter_lines():
            ev = json.loads(line)
            if ev["path"].endswith("new.txt"):
                break
    assert ev["type"] == "fs"


@real_agent
def test_pty_over_websocket(api_server: Any, team: httpx.Client, sid: str) -> None:
    from websockets.sync.client import connect

    url = api_server.url.replace("http://", "ws://") + f"/sandboxes/{sid}/pty?rows=30&cols=100&cmd=/bin/sh"
    with connect(url, additional_headers={"X-API-Key": team.headers["X-API-Key"]}) as ws:
        start = json.loads(ws.recv(10))
        assert start["type"] == "start"
        ws.send(b"stty size; tty\n")
        out = b""
        while b"/dev/pts" not in out:
            msg = ws.recv(10)
            out += msg if isinstance(msg, bytes) else b""
        assert b"30 100" in out
        ws.send(json.dumps({"type": "resize", "rows": 50, "cols": 120}))
        ws.send(b"stty size; exit 0\n")
        while True:
            msg = ws.recv(10)
            if isinstance(msg, str) and json.loads(msg)["type"] == "exit":
                break
            out += msg if isinstance(msg, bytes) else b""
        assert b"50 120" in out
