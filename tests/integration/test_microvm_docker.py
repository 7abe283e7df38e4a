"""Docker's daemon (Debian's docker.io) inside a microvm sandbox: what a real kernel makes possible.

Slow under TCG (the template build installs docker.io once, then dockerd and
containerd start inside the guest), so it stays out of CI: it runs when
SANDLOT_TEST_DOCKER_IN_VM=1 is set.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from sandlot.node import Limits, SandboxSpec
from sandlot.node.dockerfile.builder import BuildOptions, build

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        os.environ.get("SANDLOT_TEST_DOCKER_IN_VM") != "1", reason="slow under TCG: SANDLOT_TEST_DOCKER_IN_VM=1 runs it"
    ),
]

DOCKERFILE = """FROM base
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io \\
    && rm -rf /var/lib/apt/lists/*
"""


def _tiny_image() -> bytes:
    """A `docker save` archive of one layer: a static busybox, tagged tiny:1. Built here, no registry."""
    busybox = shutil.which("busybox")
    assert busybox is not None
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.add(busybox, arcname="busybox")
    layer_bytes = layer.getvalue()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/busybox", "echo", "hello from docker in a microvm"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]},
    }
    manifest = [{"Config": "config.json", "RepoTags": ["tiny:1"], "Layers": ["layer.tar"]}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (
            ("layer.tar", layer_bytes),
            ("config.json", json.dumps(config).encode()),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _background(aio: Any, sbx: Any, cmd: str) -> None:
    aio(aio(sbx.start(cmd)).detach())


def _wait_for(aio: Any, sbx: Any, check: str, log: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while aio(sbx.run(check, timeout=120), timeout=180).exit_code != 0:
        assert time.monotonic() < deadline, aio(sbx.run(f"tail -20 {log}")).stdout
        time.sleep(2)


def test_docker_runs_a_local_image_inside_a_microvm(node: Any, aio: Any, tmp_path: Path) -> None:
    opts = BuildOptions(name="docker-in-vm", context=tmp_path, dockerfile=DOCKERFILE)
    aio(build(node, opts, lambda line: None), timeout=1800)
    spec = SandboxSpec(image="docker-in-vm", runtime="microvm", limits=Limits(cpu=2, memory_mb=1024, pids=1024))
    sbx = aio(node.create(spec), timeout=600)
    try:
        aio(sbx.agent.write("/tmp/tiny.tar", _tiny_image()))
        # containerd first, waited for: dockerd gives the one it starts itself only a minute, too
        # little under TCG. vfs: overlay2 cannot stack on the sandbox's own overlay root; no bridge,
        # no iptables: the containers run with network none.
        _background(aio, sbx, "containerd > /var/log/containerd.log 2>&1")
        _wait_for(aio, sbx, "test -S /run/containerd/containerd.sock", "/var/log/containerd.log")
        _background(
            aio,
            sbx,
            "dockerd --containerd=/run/containerd/containerd.sock --storage-driver=vfs --bridge=none "
            "--iptables=false --ip6tables=false > /var/log/dockerd.log 2>&1",
        )
        _wait_for(aio, sbx, "grep -q 'API listen on' /var/log/dockerd.log", "/var/log/dockerd.log")
        run = "docker load -i /tmp/tiny.tar && docker run --rm --network none tiny:1"
        res = aio(sbx.run(run, timeout=900), timeout=960)
        assert res.exit_code == 0 and "hello from docker in a microvm" in res.stdout, res
    finally:
        aio(node.kill(sbx.id))
