"""Pulling images from a real registry into the layer store, and sandboxes from them."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest

from sandlot import errors
from sandlot.node.oci.registry import RegistryConfig
from tests.images.registry import PASSWORD, USER, Registry

pytestmark = pytest.mark.timeout(300)


def sh(aio: Any, sbx: Any, cmd: str) -> str:
    res = aio(sbx.run(cmd))
    assert res.exit_code == 0, (cmd, res.stdout, res.stderr)
    return str(res.stdout)


def test_gzip_image_runs_with_layers_applied_per_spec(
    inode: Any, registry: Registry, aio: Any, make_sandbox: Any
) -> None:
    ref = f"{registry.host}/t/app:1"
    lines: list[str] = []
    image = inode.images.pull(ref, progress=lines.append)
    assert len(image.layers) == 2 and image.digest.startswith("sha256:")
    assert any("2 layer(s)" in line for line in lines)
    sbx = make_sandbox(ref)
    assert sh(aio, sbx, "cat /app/data.txt /app/link.txt") == "hello from the app layer\n" * 2
    # A whiteout hides the lower layer's file; its neighbour stays.
    assert aio(sbx.run("cat /etc/motd")).exit_code != 0
    assert sh(aio, sbx, "cat /etc/keep") == "kept\n"
    # An opaque directory hides everything below it, keeps its own entries.
    assert sh(aio, sbx, "ls /opt/old").split() == ["new"]
    assert sh(aio, sbx, "stat -c '%u:%g %a' /app/data.txt /app/tool").split("\n")[:2] == ["1000:1000 644", "0:0 4755"]
    assert aio(sbx.run("test -e /app/null")).exit_code != 0  # device nodes are skipped
    # The image config: env and working directory.
    assert sh(aio, sbx, "echo $GREETING; pwd") == "hi\n/etc\n"
    top = image.layers[-1]
    assert os.getxattr(top / "app/xattr.txt", "user.sandlot") == b"kept"
    assert os.stat(top / "app/data.txt").st_ino == os.stat(top / "app/link.txt").st_ino


def test_zstd_layers(inode: Any, registry: Registry, aio: Any, make_sandbox: Any) -> None:
    ref = f"{registry.host}/t/appz:1"
    sbx = make_sandbox(ref)  # pulled on first use
    assert sh(aio, sbx, "cat /app/data.txt; ls /opt/old") == "hello from the app layer\nnew\n"
    gz = inode.images.ensure(f"{registry.host}/t/app:1")
    assert sbx.image.layers != gz.layers  # other blobs, unpacked separately to the same trees


def test_index_picks_the_platform(inode: Any, registry: Registry, aio: Any, make_sandbox: Any) -> None:
    ref = f"{registry.host}/t/multi:1"
    amd = inode.images.pull(ref)
    arm = inode.images.pull(ref, name="multi-arm", platform="linux/arm64")
    assert (amd.layers[-1] / "platform").read_text() == "amd64\n"
    assert (arm.layers[-1] / "platform").read_text() == "arm64\n"
    assert amd.layers[0] == arm.layers[0]  # the shared base layer is stored once
    assert sh(aio, make_sandbox(ref), "cat /platform") == "amd64\n"
    with pytest.raises(errors.ImageNotFoundError, match=r"no linux/s390x variant \(it has: linux/amd64, linux/arm64\)"):
        inode.images.pull(ref, name="multi-s390x", platform="linux/s390x")
    assert inode.images.get("multi-s390x") is None


def test_basic_auth(inode: Any, auth_registry: Registry, aio: Any, make_sandbox: Any) -> None:
    ref = f"{auth_registry.host}/t/private:1"
    with contextlib.suppress(errors.ImageNotFoundError):
        inode.images.remove(ref)  # the API tests pulled it into the same store
    with pytest.raises(errors.RegistryAuthError, match="wants a username and password"):
        inode.images.pull(ref)
    with pytest.raises(errors.RegistryAuthError, match="refused the credentials"):
        inode.images.pull(ref, auth=RegistryConfig(USER, "wrong"))
    assert inode.images.get(ref) is None
    inode.images.pull(ref, auth=RegistryConfig(USER, PASSWORD))
    assert sh(aio, make_sandbox(ref), "cat /platform") == "amd64\n"


def test_bearer_token_auth(inode: Any, token_registry: Registry, aio: Any, make_sandbox: Any) -> None:
    ref = f"{token_registry.host}/t/tokened:1"
    with contextlib.suppress(errors.ImageNotFoundError):
        inode.images.remove(ref)
    with pytest.raises(errors.RegistryAuthError, match="wants credentials"):
        inode.images.pull(ref)  # the token service gives anonymous callers nothing
    with pytest.raises(errors.RegistryAuthError, match="refused the credentials"):
        inode.images.pull(ref, auth=RegistryConfig(USER, "wrong"))
    before = len(token_registry.token.requests)  # type: ignore[union-attr]
    inode.images.pull(ref, auth=RegistryConfig(USER, PASSWORD))
    assert any("scope=repository%3At%2Ftokened%3Apull" in r for r in token_registry.token.requests[before:])  # type: ignore[union-attr]
    assert sh(aio, make_sandbox(ref), "cat /platform") == "arm64\n"


def test_clear_errors_and_no_template_left(inode: Any, registry: Registry) -> None:
    with pytest.raises(errors.ImageNotFoundError, match="not found"):
        inode.images.pull(f"{registry.host}/t/app:nope")
    with pytest.raises(errors.ImageNotFoundError, match="not found"):
        inode.images.pull(f"{registry.host}/t/nothing-here:1")
    with pytest.raises(errors.RegistryUnreachableError, match=r"cannot reach registry 127\.0\.0\.1:1"):
        inode.images.pull("127.0.0.1:1/t/app:1")
    with pytest.raises(errors.InvalidArgumentError, match="bad image reference"):
        inode.images.pull(f"{registry.host}/T/Upper:1")
    names = {i.name for i in inode.images.list_templates()}
    assert not any("nope" in n or "nothing" in n or n.startswith(("127.0.0.1:1/", "localhost")) for n in names)
    with pytest.raises(errors.ImageNotFoundError):
        inode.images.ensure("no-such-template")


def test_corrupt_blob_is_never_used_and_downloads_resume(
    inode: Any, registry: Registry, layouts: Any, work_dir: Any
) -> None:
    from tests.images.registry import _run, marker_layer

    L = layouts.layout
    marker_layer(work_dir / "unique.tar", f"unique {os.getpid()}")
    _run(["umoci", "raw", "add-layer", "--image", f"{L}:base", "--tag", "unique", str(work_dir / "unique.tar")])
    ref = registry.push(L, "unique", "t/unique:1")
    manifest = inode.images.layers  # the layer store
    import json as _json
    import subprocess

    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], capture_output=True, check=True
    ).stdout
    top = _json.loads(raw)["layers"][-1]
    hexd = top["digest"].removeprefix("sha256:")
    stored = next((registry.dir / "data").rglob(f"blobs/sha256/{hexd[:2]}/{hexd}/data"))
    good = stored.read_bytes()
    # A blob whose bytes do not match its digest: an error, and no template, no layer.
    stored.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    with pytest.raises(errors.ImageCorruptError, match="does not match its digest"):
        inode.images.pull(ref)
    assert inode.images.get(ref) is None and not manifest.has(hexd)
    assert not (manifest.blobs / f"{hexd}.partial").exists()
    stored.write_bytes(good)
    # Half a download already here: the pull resumes it (a Range request) and verifies the whole.
    (manifest.blobs / f"{hexd}.partial").write_bytes(good[: len(good) // 2])
    image = inode.images.pull(ref)
    assert (image.layers[-1] / "platform").read_text() == f"unique {os.getpid()}\n"
    assert not (manifest.blobs / f"{hexd}.partial").exists()


def test_loopback_registries_speak_plain_http_unless_told_otherwise(registry: Registry, work_dir: Any) -> None:
    from sandlot.node.oci.store import ImageStore

    # No registries.json at all: a registry on the loopback is plain HTTP (as Docker treats it).
    store = ImageStore(work_dir / "loopback-store")
    for host in (registry.host, registry.host.replace("127.0.0.1", "localhost")):
        image = store.pull(f"{host}/t/app:1", name=f"lo-{host.split(':')[0]}")
        assert (image.layers[-1] / "app" / "data.txt").read_text() == "hello from the app layer\n"
    # `{"insecure": false}` keeps TLS, which this plain-HTTP registry cannot speak.
    tls = ImageStore(work_dir / "loopback-store", {registry.host: RegistryConfig(insecure=False)})
    with pytest.raises(errors.RegistryUnreachableError, match="configure it as insecure"):
        tls.pull(f"{registry.host}/t/app:1", name="lo-tls")
    assert tls.get("lo-tls") is None


def test_removing_templates_frees_only_unshared_layers(registry: Registry, work_dir: Any) -> None:
    from sandlot.node.oci.store import ImageStore

    # A store of its own: GC must not wait on (or race) other runs sharing the test cache.
    store = ImageStore(work_dir / "gc-store", {registry.host: RegistryConfig(insecure=True)})
    a = store.pull(f"{registry.host}/t/app:1", name="gc-a")
    b = store.pull(f"{registry.host}/t/multi:1", name="gc-b")
    base, app_top, marker = a.layers[0].parent.name, a.layers[1].parent.name, b.layers[1].parent.name
    assert b.layers[0] == a.layers[0]
    assert store.remove("gc-a") == [app_top]  # only the layer no other template uses
    assert store.get("gc-a") is None
    assert store.layers.has(base) and store.layers.has(marker) and not store.layers.has(app_top)
    with pytest.raises(errors.ImageNotFoundError):
        store.remove("gc-a")
    with pytest.raises(errors.ConflictError, match="used by running sandboxes"):
        store.remove("gc-b", in_use=["gc-b"])
    assert sorted(store.remove("gc-b")) == sorted([base, marker])
    assert store.layers.ids() == []
