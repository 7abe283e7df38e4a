"""Templates built from Dockerfiles: every instruction, RUN inside gVisor, the step cache, clear errors."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandlot import errors
from sandlot.node.dockerfile.builder import BuildOptions, build

pytestmark = pytest.mark.timeout(600)

DOCKERFILE = """\
# a comment, then an ARG before FROM
ARG BASE=busybox
FROM $BASE
ARG WHO=world
ENV APP_HOME=/srv/app \\
    MODE=test
WORKDIR $APP_HOME
COPY hello.txt ./
COPY data/ data/
ADD {url}/remote.txt /srv/remote.txt
ADD archive.tar /srv/unpacked/
RUN echo "built for $WHO in $MODE" > built.txt && echo step-output && uname -r
USER 1000
RUN echo uid=$(id -u)
EXPOSE 8080
LABEL org.example.test=yes
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
"""


@pytest.fixture(scope="module")
def web(work_dir: Path) -> Iterator[str]:
    root = work_dir / "web"
    root.mkdir(exist_ok=True)
    (root / "remote.txt").write_text("fetched over http\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def context(tmp_path: Path, web: str) -> Path:
    # New content each run: the step cache lives in the shared test store.
    (tmp_path / "hello.txt").write_text("hello from the context\n")
    (tmp_path / "data/run-id").parent.mkdir()
    (tmp_path / "data/run-id").write_text(uuid.uuid4().hex)
    (tmp_path / "data/sub").mkdir()
    (tmp_path / "data/sub/deep.txt").write_text("deep\n")
    with tarfile.open(tmp_path / "archive.tar", "w") as tar:
        info = tarfile.TarInfo("inside.txt")
        info.size = 7
        tar.addfile(info, io.BytesIO(b"inside\n"))
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.format(url=web))
    return tmp_path


def _build(inode: Any, aio: Any, ctx: Path, name: str, text: str | None = None, **kw: Any) -> tuple[Any, list[str]]:
    lines: list[str] = []
    opts = BuildOptions(name=name, context=ctx, dockerfile=text or (ctx / "Dockerfile").read_text(), **kw)
    image = aio(build(inode, opts, lines.append), timeout=600)
    return image, lines


def sh(aio: Any, sbx: Any, cmd: str) -> str:
    res = aio(sbx.run(cmd))
    assert res.exit_code == 0, (cmd, res.stdout, res.stderr)
    return str(res.stdout)


def test_build_runs_every_instruction_and_caches_steps(inode: Any, aio: Any, context: Path, make_sandbox: Any) -> None:
    image, lines = _build(inode, aio, context, "built-app")
    assert "step-output" in lines and "4.4.0" in lines  # RUN output streamed; gVisor's kernel, not the host's
    assert "uid=1000" in lines  # USER applies to later RUN steps
    c = inode.images.config_of("built-app")
    assert c["WorkingDir"] == "/srv/app" and c["User"] == "1000" and c["Labels"] == {"org.example.test": "yes"}
    assert c["ExposedPorts"] == {"8080/tcp": {}} and c["Entrypoint"] == ["/bin/sh", "-c"] and c["Cmd"] == ["echo hi"]
    assert image.config.env["APP_HOME"] == "/srv/app" and image.config.env["MODE"] == "test"
    sbx = make_sandbox("built-app")
    assert sh(aio, sbx, "pwd; id -u; cat built.txt hello.txt data/sub/deep.txt") == (
        "/srv/app\n1000\nbuilt for world in test\nhello from the context\ndeep\n"
    )
    # A file fetched from a URL is 0600, as Docker makes it.
    res = aio(sbx.run("cat /srv/remote.txt /srv/unpacked/inside.txt; stat -c %a /srv/remote.txt", user="root"))
    assert res.stdout == "fetched over http\ninside\n600\n"
    assert aio(sbx.run("test -e /.sandlot/run/config.json")).exit_code == 0

    # The same build again: every step from the cache, nothing runs.
    _, again = _build(inode, aio, context, "built-app")
    assert not any(line.startswith(" ---> ran in") for line in again)
    assert sum(line == " ---> Using cache" for line in again) == 6  # the COPY, ADD and RUN steps
    # Only the last line changed: nothing before it reruns.
    changed = (context / "Dockerfile").read_text().replace('CMD ["echo hi"]', 'CMD ["echo changed"]')
    image, lines = _build(inode, aio, context, "built-app-2", changed)
    assert not any(line.startswith(" ---> ran in") for line in lines)
    assert inode.images.config_of("built-app-2")["Cmd"] == ["echo changed"]
    # A changed source file reruns its COPY and every RUN after it.
    (context / "hello.txt").write_text("edited\n")
    image, lines = _build(inode, aio, context, "built-app-3")
    assert sum(line.startswith(" ---> ran in") for line in lines) == 2
    assert sh(aio, make_sandbox("built-app-3"), "cat /srv/app/hello.txt") == "edited\n"
    # Build args reach RUN steps.
    image, lines = _build(inode, aio, context, "built-app-4", build_args={"WHO": "args"})
    assert sh(aio, make_sandbox("built-app-4"), "cat /srv/app/built.txt") == "built for args in test\n"


def test_failing_run_reports_output_and_exit_code_and_leaves_nothing(inode: Any, aio: Any, tmp_path: Path) -> None:
    before = {s.id for s in inode.list_sandboxes()}
    text = "FROM busybox\nRUN echo preparing\nRUN echo something broke >&2; exit 3\n"
    with pytest.raises(errors.BuildError) as caught:
        _build(inode, aio, tmp_path, "broken", text)
    exc = caught.value
    assert exc.exit_code == 3 and "something broke" in exc.output
    assert "line 3" in str(exc) and "exit code 3" in str(exc)
    assert inode.images.get("broken") is None
    assert {s.id for s in inode.list_sandboxes()} == before
    assert not any(p.name.startswith(".build-") for p in inode.images.list_templates())


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("FROMM busybox\n", 1, "unknown instruction 'FROMM'"),
        ("FROM busybox\n\n# c\nRUN\n", 4, "RUN needs arguments"),
        ("RUN true\n", 1, "the first instruction must be FROM"),
        ("FROM busybox\nFROM busybox\n", 2, "multi-stage"),
        ("FROM busybox\nHEALTHCHECK NONE\n", 2, "not supported"),
        ("FROM busybox\nCOPY ../outside /x\n", 2, "outside the build context"),
        ("FROM busybox\nCOPY escape/passwd /x\n", 2, "leads outside the build context"),
        ("FROM busybox\nENV JUSTKEY\n", 2, "has no value"),
    ],
)
def test_dockerfile_errors_name_their_line(
    inode: Any, aio: Any, tmp_path: Path, text: str, line: int, message: str
) -> None:
    (tmp_path / "escape").symlink_to("/etc")
    with pytest.raises(errors.DockerfileError, match=f"line {line}.*{message}") as caught:
        _build(inode, aio, tmp_path, "bad", text)
    assert caught.value.line == line and inode.images.get("bad") is None


def test_from_a_missing_image(inode: Any, aio: Any, tmp_path: Path, registry: Any) -> None:
    with pytest.raises(errors.ImageNotFoundError, match="line 1: FROM"):
        _build(inode, aio, tmp_path, "bad", f"FROM {registry.host}/t/none:1\n")
