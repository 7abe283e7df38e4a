"""A template's start command and readiness check: a sandbox is handed out only once ready."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sandlot import errors
from sandlot.node import SandboxSpec
from sandlot.node.readiness import StartSpec

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def server_template(inode: Any, busybox_image: Any) -> Any:
    """A template over the busybox layer (shared, not copied) to give a start command to."""
    store = inode.images
    lid = busybox_image.layers[0].parent.name
    yield store.add_layers("with-server", [lid], store.config_of("busybox"), source="test")
    store.remove("with-server")


def test_sandbox_waits_for_a_ready_command(inode: Any, server_template: Any, aio: Any, make_sandbox: Any) -> None:
    inode.images.set_start(
        "with-server", StartSpec("sleep 1; echo up > /tmp/ready; exec sleep 1000", ready_cmd="test -f /tmp/ready")
    )
    t0 = time.monotonic()
    sbx = make_sandbox("with-server")
    assert time.monotonic() - t0 >= 1.0
    assert aio(sbx.run("cat /tmp/ready")).stdout == "up\n"
    assert "sleep 1000" in aio(sbx.run("ps -o args")).stdout  # the server keeps running


def test_sandbox_waits_for_a_listening_port(inode: Any, server_template: Any, aio: Any, make_sandbox: Any) -> None:
    cmd = "mkdir -p /www && echo served > /www/index.html && sleep 1 && exec httpd -f -p 8080 -h /www"
    inode.images.set_start("with-server", StartSpec(cmd, ready_port=8080))
    sbx = make_sandbox("with-server")
    assert aio(sbx.run("wget -q -O- http://127.0.0.1:8080/index.html")).stdout == "served\n"


def test_start_failures_are_clear_and_leave_no_sandbox(inode: Any, server_template: Any, aio: Any) -> None:
    before = {s.id for s in inode.list_sandboxes()}
    inode.images.set_start("with-server", StartSpec("echo cannot start; exit 4", ready_cmd="false"))
    with pytest.raises(errors.SandboxStateError, match=r"(?s)exited with code 4.*cannot start"):
        aio(inode.create(SandboxSpec(image="with-server")))
    inode.images.set_start("with-server", StartSpec("echo waiting; exec sleep 1000", ready_cmd="false", timeout=2))
    with pytest.raises(errors.TimeoutError_, match=r"(?s)not ready within 2 s.*waiting"):
        aio(inode.create(SandboxSpec(image="with-server")))
    assert {s.id for s in inode.list_sandboxes()} == before
    with pytest.raises(errors.InvalidArgumentError, match="ready_port"):
        inode.images.set_start("with-server", StartSpec("true", ready_port=70000))
