"""Images over the API, the SDK and the CLI, against a live server and the test registries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandlot import errors
from tests.api.harness import ROOT, Server
from tests.images.registry import PASSWORD, USER, Registry

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(registry: Registry, auth_registry: Registry) -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.skip("a real node needs root")
    d = Path(tempfile.mkdtemp(prefix="sandlot-images-api-", dir="/var/tmp"))
    (d / "data").mkdir()
    # How an operator says which registries speak plain HTTP (and may hold credentials).
    (d / "data" / "registries.json").write_text(
        json.dumps(
            {
                registry.host: {"insecure": True},
                auth_registry.host: {"insecure": True},
                "127.0.0.1:1": {"insecure": True},
            }
        )
    )
    srv = Server(d / "data").start()
    yield srv
    srv.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin_key}, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def env(server: Server) -> dict[str, str]:
    return {**os.environ, "SANDLOT_API_URL": server.url, "SANDLOT_API_KEY": server.admin_key,
            "PYTHONPATH": str(ROOT / "src")}  # fmt: skip


def sandlot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandlot.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_pull_streams_progress_then_the_template(admin: httpx.Client, registry: Registry) -> None:
    ref = f"{registry.host}/t/app:1"
    with admin.stream("POST", "/images/pull", json={"ref": ref, "name": "api-app"}) as r:
        assert r.status_code == 200
        events = [json.loads(line) for line in r.iter_lines() if line.strip()]
    assert {e["type"] for e in events[:-1]} == {"progress"} and len(events) > 2
    last = events[-1]
    assert last["type"] == "template" and last["template"]["name"] == "api-app"
    assert last["template"]["layers"] == 2 and last["template"]["env"]["GREETING"] == "hi"
    got = admin.get("/templates/api-app").json()
    assert got["digest"] == last["template"]["digest"] and got["source"] == ref
    assert "api-app" in [t["name"] for t in admin.get("/templates").json()["templates"]]
    # Errors: a 400 before the stream for a malformed reference, an error line for a missing image.
    bad = admin.post("/images/pull", json={"ref": "Not A Ref"})
    assert bad.status_code == 400 and "bad image reference" in bad.json()["message"]
    with admin.stream("POST", "/images/pull", json={"ref": f"{registry.host}/t/app:missing"}) as r:
        last = [json.loads(line) for line in r.iter_lines() if line.strip()][-1]
    assert last["type"] == "error" and last["code"] == "image_not_found"
    assert admin.get("/templates/nope").json()["code"] == "image_not_found"


def test_sdk_pull_create_and_delete(server: Server, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandlot.sdk import Sandbox, Templates

    monkeypatch.setenv("SANDLOT_API_URL", server.url)
    monkeypatch.setenv("SANDLOT_API_KEY", server.admin_key)
    ref = f"{registry.host}/t/appz:1"
    lines: list[str] = []
    info = Templates.pull(ref, on_progress=lines.append)
    assert info.name == ref and info.layers == 2 and lines
    with Sandbox.create(image=ref) as sbx:
        assert sbx.commands.run("cat /app/data.txt").stdout == "hello from the app layer\n"
        with pytest.raises(errors.ConflictError, match="used by running sandboxes"):
            Templates.delete(ref)
    Templates.delete(ref)
    with pytest.raises(errors.ImageNotFoundError):
        Templates.get(ref)
    # Straight from an image never pulled before: pulled on first use.
    with Sandbox.create(image=f"{registry.host}/t/multi:1") as sbx:
        assert sbx.commands.run("cat /platform").stdout == "amd64\n"


def test_sdk_registry_credentials(server: Server, auth_registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandlot.sdk import Sandbox, Templates

    monkeypatch.setenv("SANDLOT_API_URL", server.url)
    monkeypatch.setenv("SANDLOT_API_KEY", server.admin_key)
    ref = f"{auth_registry.host}/t/private:1"
    with pytest.raises(errors.RegistryAuthError, match="wants a username and password"):
        Sandbox.create(image=ref)
    with pytest.raises(errors.RegistryAuthError, match="refused"):
        Templates.pull(ref, username=USER, password="nope")
    with Sandbox.create(image=ref, registry_auth=(USER, PASSWORD)) as sbx:
        assert sbx.commands.run("cat /platform").stdout == "amd64\n"


def test_cli_image_pull_template_ls_inspect_rm_and_create(env: dict[str, str], registry: Registry) -> None:
    ref = f"{registry.host}/t/app:1"
    res = sandlot(env, "image", "pull", ref, "--name", "cli-app")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("cli-app sha256:") and "resolving" in res.stderr
    res = sandlot(env, "template", "ls")
    assert res.returncode == 0 and "cli-app" in res.stdout
    assert json.loads(sandlot(env, "template", "inspect", "cli-app").stdout)["cwd"] == "/etc"
    res = sandlot(env, "create", "--image", ref)
    assert res.returncode == 0, res.stderr
    sid = res.stdout.strip()
    out = sandlot(env, "exec", sid, "--", "cat", "/app/data.txt")
    assert out.stdout == "hello from the app layer\n"
    sandlot(env, "kill", sid)
    assert sandlot(env, "template", "rm", "cli-app").returncode == 0
    res = sandlot(env, "template", "inspect", "cli-app")
    assert res.returncode == 2 and "template 'cli-app' not found" in res.stderr
    res = sandlot(env, "image", "pull", "127.0.0.1:1/t/app:1")
    assert res.returncode == 2 and "cannot reach registry 127.0.0.1:1" in res.stderr
    # This server pulls only from the registries it is configured with.
    res = sandlot(env, "image", "pull", "example.invalid/t/app:1")
    assert res.returncode == 2 and "pulls only from its configured registries" in res.stderr


def test_cli_template_build_and_sdk_build_errors(
    env: dict[str, str], server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandlot.sdk import Sandbox, Templates

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    token = uuid.uuid4().hex  # the step cache lives in the shared test store: make these steps new
    (ctx / "greeting.txt").write_text(f"built over the API {token}\n")
    df = tmp_path / "build.Dockerfile"  # outside the context, as -f allows
    df.write_text("FROM busybox\nARG N=1\nCOPY greeting.txt /g.txt\nRUN echo n=$N && cp /g.txt /g2.txt\n")
    res = sandlot(env, "template", "build", "-f", str(df), "-t", "cli-built", "--build-arg", "N=7", str(ctx))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("cli-built (") and "n=7" in res.stderr and "Step 4/4 : RUN" in res.stderr
    monkeypatch.setenv("SANDLOT_API_URL", server.url)
    monkeypatch.setenv("SANDLOT_API_KEY", server.admin_key)
    with Sandbox.create("cli-built") as sbx:
        assert sbx.commands.run("cat /g2.txt").stdout == f"built over the API {token}\n"
    df.write_text(f"FROM busybox\nRUN echo about to fail {token}; exit 42\n")
    with pytest.raises(errors.BuildError, match=r"(?s)line 2: RUN .* exit code 42.*about to fail"):
        Templates.build(ctx, "cli-broken", dockerfile=df)
    df.write_text("FROM busybox\nCOPY\n")
    with pytest.raises(errors.DockerfileError, match="line 2"):
        Templates.build(ctx, "cli-broken", dockerfile=df)
    with pytest.raises(errors.ImageNotFoundError):
        Templates.get("cli-broken")
    Templates.delete("cli-built")


def test_start_command_over_cli_and_sdk(
    env: dict[str, str], server: Server, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandlot.sdk import Sandbox, Templates

    monkeypatch.setenv("SANDLOT_API_URL", server.url)
    monkeypatch.setenv("SANDLOT_API_KEY", server.admin_key)
    Templates.pull(f"{registry.host}/t/app:1", name="api-server")
    res = sandlot(
        env, "template", "start", "api-server", "--cmd", "sleep 1; echo ok > /app/ready; exec sleep 1000",
        "--ready-cmd", "test -f /app/ready",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    info = Templates.get("api-server")
    assert info.start is not None and info.start.ready_cmd == "test -f /app/ready"
    with Sandbox.create("api-server") as sbx:
        assert sbx.commands.run("cat /app/ready").stdout == "ok\n"
    assert Templates.set_start("api-server", None).start is None
    Templates.delete("api-server")


def test_import_and_export_over_cli_and_sdk(
    env: dict[str, str], server: Server, registry: Registry, layouts: Any, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from sandlot.sdk import Sandbox, Templates

    monkeypatch.setenv("SANDLOT_API_URL", server.url)
    monkeypatch.setenv("SANDLOT_API_KEY", server.admin_key)
    archive = tmp_path / "app.tar"
    subprocess.run(["skopeo", "copy", f"oci:{layouts.layout}:app", f"docker-archive:{archive}:t/app:1"], check=True)
    res = sandlot(env, "image", "import", str(archive), "--name", "api-imported")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("api-imported sha256:")
    with Sandbox.create("api-imported") as sbx:
        sbx.commands.run("echo changed > /app/data.txt; rm /etc/keep")
        out = tmp_path / "snap"
        res = sandlot(env, "image", "export", str(out), "--sandbox", sbx.sandbox_id, "--tag", "snap")
        assert res.returncode == 0, res.stderr
    subprocess.run(["skopeo", "inspect", f"oci:{out}:snap"], check=True, capture_output=True)
    Templates.import_image(out, "api-snap", tag="snap")  # a layout directory, sent as a tar
    with Sandbox.create("api-snap") as sbx:
        assert sbx.commands.run("cat /app/data.txt").stdout == "changed\n"
        assert sbx.commands.run("test -e /etc/keep").exit_code != 0
    tpl = Templates.export(tmp_path / "tpl", name="api-snap", tag="v1")
    subprocess.run(["umoci", "unpack", "--image", f"{tpl}:v1", str(tmp_path / "bundle")], check=True)
    assert (tmp_path / "bundle/rootfs/app/data.txt").read_text() == "changed\n"
    res = sandlot(env, "image", "import", str(tmp_path / "bundle/config.json"), "--name", "api-bad")
    assert res.returncode == 2 and "not a tar archive" in res.stderr
    for name in ("api-imported", "api-snap"):
        Templates.delete(name)
