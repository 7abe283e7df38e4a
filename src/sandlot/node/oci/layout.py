"""Import images from an OCI image layout directory or a `docker save` / `podman save` tarball.

Both end in the layer store like a pull: every blob is verified against its
digest (and every layer against its diff id) before it is unpacked, and a
template appears only once all its layers are in.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.node.oci.layers import LayerStore, owner_tag
from sandlot.node.oci.pull import LAYER_TYPES, PulledImage, default_platform, unpack_into_store
from sandlot.node.oci.registry import INDEX_TYPES
from sandlot.safetar import extract_all

__all__ = ["import_archive", "import_layout"]

Progress = Callable[[str], None]
REF_NAME = "org.opencontainers.image.ref.name"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _blob(layout: Path, digest: str, verify: bool = True) -> Path:
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
        raise errors.ImageCorruptError(f"unsupported or malformed digest {digest!r} in {layout}")
    path = layout / "blobs" / "sha256" / hexd
    if not path.is_file():
        raise errors.ImageCorruptError(f"blob {digest} is missing from {layout}")
    if verify and _sha256_file(path) != digest:
        raise errors.ImageCorruptError(f"blob {digest} in {layout} does not match its digest")
    return path


def _json_blob(layout: Path, digest: str) -> dict[str, Any]:
    data = json.loads(_blob(layout, digest).read_bytes())
    if not isinstance(data, dict):
        raise errors.ImageCorruptError(f"blob {digest} in {layout} is not a JSON object")
    return data


def _pick(index: dict[str, Any], tag: str | None, platform: str, where: str) -> dict[str, Any]:
    manifests = list(index.get("manifests") or [])
    if tag is not None:
        manifests = [m for m in manifests if (m.get("annotations") or {}).get(REF_NAME) == tag]
        if not manifests:
            raise errors.ImageNotFoundError(f"no image tagged {tag!r} in {where}")
    if len(manifests) > 1:
        arch = platform.partition("/")[2]
        fitting = [m for m in manifests if (m.get("platform") or {}).get("architecture") == arch.split("/")[0]]
        if len(fitting) != 1:
            tags = sorted(str((m.get("annotations") or {}).get(REF_NAME)) for m in manifests)
            raise errors.InvalidArgumentError(
                f"{where} holds several images ({', '.join(tags)}): name one", field="tag"
            )
        manifests = fitting
    if not manifests:
        raise errors.ImageNotFoundError(f"{where} holds no image")
    return dict(manifests[0])


def import_layout(
    layout: Path, store: LayerStore, *, tag: str | None = None, platform: str | None = None, progress: Progress
) -> PulledImage:
    """Read the image `tag` (or the only one) of an OCI layout directory into the store."""
    layout = Path(layout)
    want = platform or default_platform()
    try:
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise errors.InvalidArgumentError(f"{layout} is not an OCI image layout: {exc}", field="path") from None
    desc = _pick(index, tag, want, str(layout))
    while desc.get("mediaType") in INDEX_TYPES:
        desc = _pick(_json_blob(layout, str(desc["digest"])), None, want, f"the index {desc['digest']}")
    manifest = _json_blob(layout, str(desc["digest"]))
    config = _json_blob(layout, str(manifest["config"]["digest"]))
    layers = list(manifest.get("layers") or [])
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise errors.ImageCorruptError(f"{layout}: {len(layers)} layers but {len(diff_ids)} diff ids")
    ids: list[str] = []
    for i, d in enumerate(layers):
        if d.get("mediaType") not in LAYER_TYPES:
            raise errors.InvalidArgumentError(f"{layout} has a layer of unsupported type {d.get('mediaType')!r}")
        lid = str(d["digest"]).removeprefix("sha256:")
        with store.locked(lid):
            if not store.has(lid):
                blob = _blob(layout, str(d["digest"]))
                what = f"sha256:{lid[:12]} ({i + 1}/{len(layers)})"
                progress(f"unpacking layer {what}")
                unpack_into_store(store, lid, blob, str(diff_ids[i]), what)
        ids.append(lid)
    return PulledImage(ids, dict(config.get("config") or {}), str(desc["digest"]), want)


def import_archive(
    archive: Path, store: LayerStore, *, tag: str | None = None, platform: str | None = None, progress: Progress
) -> PulledImage:
    """Import a `docker save` / `podman save` tarball (docker-archive, or an OCI layout in a tar)."""
    if not tarfile.is_tarfile(archive):
        raise errors.InvalidArgumentError(f"{archive} is not a tar archive", field="path")
    with tempfile.TemporaryDirectory(prefix=f"import{owner_tag()}", dir=store.tmp) as tmp:
        root = Path(tmp)
        progress(f"reading {archive}")
        with tarfile.open(archive) as tar:
            extract_all(tar, root)
        if (root / "index.json").exists() and (root / "blobs").is_dir():
            return import_layout(root, store, tag=tag, platform=platform, progress=progress)
        return _import_docker(root, store, tag, progress)


def _import_docker(root: Path, store: LayerStore, tag: str | None, progress: Progress) -> PulledImage:
    try:
        entries = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise errors.InvalidArgumentError(f"not a docker save archive (manifest.json: {exc})", field="path") from None
    if tag is not None:
        entries = [e for e in entries if tag in (e.get("RepoTags") or [])]
        if not entries:
            raise errors.ImageNotFoundError(f"no image tagged {tag!r} in the archive")
    if len(entries) != 1:
        tags = sorted(t for e in entries for t in e.get("RepoTags") or [])
        raise errors.InvalidArgumentError(f"the archive holds {len(entries)} images ({', '.join(tags)}): name one")
    entry = entries[0]

    def member(name: str) -> Path:
        path = (root / name).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            raise errors.ImageCorruptError(f"the archive's manifest names {name!r}, which it does not hold")
        return path

    config_path = member(str(entry["Config"]))
    config = json.loads(config_path.read_text())
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    layers = [member(str(name)) for name in entry.get("Layers") or []]
    if len(diff_ids) != len(layers):
        raise errors.ImageCorruptError(f"the archive's image has {len(layers)} layers but {len(diff_ids)} diff ids")
    ids = []
    for i, path in enumerate(layers):
        lid = _sha256_file(path).removeprefix("sha256:")
        with store.locked(lid):
            if not store.has(lid):
                what = f"sha256:{lid[:12]} ({i + 1}/{len(layers)})"
                progress(f"unpacking layer {what}")
                unpack_into_store(store, lid, path, str(diff_ids[i]), what)
        ids.append(lid)
    digest = "sha256:" + hashlib.sha256(config_path.read_bytes()).hexdigest()
    return PulledImage(ids, dict(config.get("config") or {}), digest, default_platform())
