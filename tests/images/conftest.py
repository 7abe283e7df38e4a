"""Fixtures for image tests: test images in an OCI layout, a registry with and without auth."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.images.registry import Layouts, Registry, TokenServer, make_layouts


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.sh --test installs them)")


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sandlot-images-", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def layouts(work_dir: Path) -> Layouts:
    _need("umoci", "skopeo", "busybox")
    d = work_dir / "layouts"
    d.mkdir()
    return make_layouts(d)


@pytest.fixture(scope="session")
def registry(work_dir: Path, layouts: Layouts) -> Iterator[Registry]:
    """An anonymous registry holding t/app:1 (gzip), t/appz:1 (zstd), t/multi:1 (an index)."""
    _need("docker-registry")
    reg = Registry(work_dir / "registry").start()
    reg.push(layouts.layout, "app", "t/app:1")
    reg.push(layouts.layout, "app", "t/appz:1", zstd=True)
    reg.push(layouts.layout, "multi", "t/multi:1", all_=True)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(work_dir: Path, layouts: Layouts) -> Iterator[Registry]:
    """A registry behind htpasswd (basic auth) holding t/private:1."""
    _need("docker-registry", "htpasswd")
    reg = Registry(work_dir / "auth-registry", auth=True).start()
    reg.push(layouts.layout, "amd", "t/private:1")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def token_registry(work_dir: Path, layouts: Layouts) -> Iterator[Registry]:
    """A registry behind a bearer-token service (auth: token) holding t/tokened:1."""
    _need("docker-registry", "openssl")
    token = TokenServer(work_dir / "token")
    reg = Registry(work_dir / "token-registry", token=token).start()
    reg.push(layouts.layout, "arm", "t/tokened:1")
    yield reg
    reg.stop()
    token.stop()


@pytest.fixture(scope="session")
def inode(node: Any, registry: Registry, auth_registry: Registry, token_registry: Registry) -> Iterator[Any]:
    """The session node, told that the test registries speak plain HTTP.

    The store is the test image cache, kept across runs: templates these tests
    made (all but the built-ins) are removed afterwards, and their layers freed.
    """
    from sandlot.node.images import ALIASES, BUILDERS
    from sandlot.node.oci.registry import RegistryConfig

    node.images.registries[registry.host] = RegistryConfig(insecure=True)
    node.images.registries[auth_registry.host] = RegistryConfig(insecure=True)
    node.images.registries[token_registry.host] = RegistryConfig(insecure=True)
    yield node
    for image in node.images.list_templates():
        if image.name not in BUILDERS and image.name not in ALIASES:
            with contextlib.suppress(Exception):  # in use by a sandbox another test still holds
                node.images.remove(image.name)
    node.images.gc(prune_build_cache=True)
