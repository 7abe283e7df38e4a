"""Import OCI layouts and docker-save tarballs; export templates and sandboxes that skopeo and umoci read back."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sandlot import errors
from sandlot.node.sandbox_export import export_sandbox
from tests.images.registry import Layouts, Registry, marker_layer

pytestmark = pytest.mark.timeout(300)


def run(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr}"
    return res.stdout


def sh(aio: Any, sbx: Any, cmd: str) -> str:
    res = aio(sbx.run(cmd))
    assert res.exit_code == 0, (cmd, res.stdout, res.stderr)
    return str(res.stdout)


def test_import_oci_layout_and_docker_archive(
    inode: Any, layouts: Layouts, work_dir: Path, aio: Any, make_sandbox: Any
) -> None:
    image = inode.images.import_image(layouts.layout, "imported-app", tag="app")
    assert len(image.layers) == 2 and image.config.env["GREETING"] == "hi"
    assert sh(aio, make_sandbox("imported-app"), "cat /app/data.txt; ls /opt/old") == "hello from the app layer\nnew\n"
    archive = work_dir / "app-docker.tar"
    run("skopeo", "copy", f"oci:{layouts.layout}:app", f"docker-archive:{archive}:t/app:1")
    image = inode.images.import_image(archive, "imported-archive")
    assert sh(aio, make_sandbox("imported-archive"), "cat /app/link.txt; echo $GREETING") == (
        "hello from the app layer\nhi\n"
    )
    with pytest.raises(errors.InvalidArgumentError, match="holds several images"):
        inode.images.import_image(layouts.layout, "ambiguous")
    with pytest.raises(errors.ImageNotFoundError, match="no image tagged 'nope'"):
        inode.images.import_image(layouts.layout, "missing", tag="nope")


def test_import_rejects_a_corrupt_blob(inode: Any, layouts: Layouts, work_dir: Path) -> None:
    copy = work_dir / "corrupt-layout"
    shutil.copytree(layouts.layout, copy)
    marker_layer(work_dir / "fresh.tar", f"fresh {time.time()}")  # a layer the store cannot already hold
    run("umoci", "raw", "add-layer", "--image", f"{copy}:base", "--tag", "fresh", str(work_dir / "fresh.tar"))
    index = json.loads((copy / "index.json").read_text())
    app = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "fresh")
    manifest = json.loads((copy / "blobs/sha256" / app["digest"].removeprefix("sha256:")).read_text())
    top = copy / "blobs/sha256" / manifest["layers"][-1]["digest"].removeprefix("sha256:")
    data = bytearray(top.read_bytes())
    data[len(data) // 2] ^= 0xFF
    top.write_bytes(bytes(data))
    with contextlib.suppress(errors.ImageNotFoundError):
        inode.images.remove("corrupt")  # left by an older run
    with pytest.raises(errors.ImageCorruptError, match="does not match its digest"):
        inode.images.import_image(copy, "corrupt", tag="fresh")
    assert inode.images.get("corrupt") is None


def test_exported_template_reads_back_in_umoci_and_skopeo(
    inode: Any, registry: Registry, work_dir: Path, aio: Any, make_sandbox: Any
) -> None:
    image = inode.images.ensure(f"{registry.host}/t/app:1")
    out = work_dir / "export-template"
    inode.images.export(image.name, out, tag="v1", progress=lambda line: None)
    run("skopeo", "inspect", f"oci:{out}:v1")
    # umoci flattens the layers by itself: whiteouts and opaque dirs must come out right.
    bundle = work_dir / "export-template-unpacked"
    run("umoci", "unpack", "--image", f"{out}:v1", str(bundle))
    rootfs = bundle / "rootfs"
    assert not (rootfs / "etc/motd").exists() and (rootfs / "etc/keep").read_text() == "kept\n"
    assert sorted(p.name for p in (rootfs / "opt/old").iterdir()) == ["new"]
    assert (rootfs / "app/data.txt").stat().st_uid == 1000 and (rootfs / "app/tool").stat().st_mode & 0o4000


def test_exported_sandbox_goes_through_a_registry_and_runs(
    inode: Any, registry: Registry, work_dir: Path, aio: Any, make_sandbox: Any
) -> None:
    sbx = make_sandbox(f"{registry.host}/t/app:1")
    sh(aio, sbx, "mkdir -p /work && echo made in a sandbox > /work/note; rm /etc/keep; rm -r /opt/old")
    out = work_dir / "export-sandbox"
    aio(export_sandbox(inode, sbx.id, out, tag="snap"))
    assert sh(aio, sbx, "cat /work/note") == "made in a sandbox\n"  # still running after the export
    ref = registry.push(out, "snap", "t/snapshot:1")
    again = make_sandbox(ref)
    assert sh(aio, again, "cat /work/note /app/data.txt") == "made in a sandbox\nhello from the app layer\n"
    assert aio(again.run("test -e /etc/keep || test -e /opt/old")).exit_code != 0
    assert aio(again.run("test -e /.sandlot/run/config.json")).exit_code == 0  # its own, not the exported one's
