"""Pull an image reference into the layer store: resolve, download, verify, unpack.

Layers download concurrently (a few at a time) and unpack bottom to top as soon
as each one and the ones below it are there, so downloads overlap unpacking.
A layer already in the store is neither downloaded nor unpacked again.
"""

from __future__ import annotations

import json
import platform as host_platform
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.failpoints import failpoint
from sandlot.node.oci.layers import LayerStore
from sandlot.node.oci.reference import Reference
from sandlot.node.oci.registry import INDEX_TYPES, RegistryClient, RegistryConfig
from sandlot.node.oci.unpack import unpack_layer

__all__ = ["LAYER_TYPES", "PulledImage", "default_platform", "pull", "unpack_into_store"]

Progress = Callable[[str], None]

LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}
DOWNLOAD_WORKERS = 4
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def default_platform() -> str:
    machine = host_platform.machine()
    return f"linux/{_ARCH.get(machine, machine)}"


@dataclass
class PulledImage:
    layers: list[str]  # layer ids, bottom to top
    config: dict[str, Any]  # the image config's `config` object (Env, Cmd, ...)
    digest: str  # of the manifest
    platform: str
    size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _choose(index: dict[str, Any], want: str, ref: Reference) -> str:
    os_, _, rest = want.partition("/")
    arch, _, variant = rest.partition("/")
    seen = []
    for m in index.get("manifests") or []:
        p = m.get("platform") or {}
        seen.append("/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x))
        if p.get("os") == os_ and p.get("architecture") == arch and (not variant or p.get("variant") == variant):
            return str(m["digest"])
    raise errors.ImageNotFoundError(
        f"image {ref} has no {want} variant (it has: {', '.join(s for s in seen if s) or 'none'})"
    )


def _resolve(client: RegistryClient, ref: Reference, want: str, progress: Progress) -> tuple[dict[str, Any], str]:
    media, raw, digest = client.manifest(ref.reference)
    if media in INDEX_TYPES:
        chosen = _choose(json.loads(raw), want, ref)
        progress(f"{ref} is a multi-platform index; using its {want} image {chosen[:19]}")
        media, raw, digest = client.manifest(chosen)
        if media in INDEX_TYPES:
            raise errors.RegistryError(f"image {ref}: an index inside an index is not supported")
    manifest = json.loads(raw)
    if not isinstance(manifest.get("layers"), list) or "config" not in manifest:
        raise errors.ImageCorruptError(f"manifest {digest} of {ref} has no config or layers")
    return manifest, digest


def unpack_into_store(store: LayerStore, layer_id: str, blob: Path, diff_id: str | None, what: str) -> None:
    """Unpack a verified blob as layer `layer_id` (caller holds its lock), checking its diff id."""

    def fill(fs: Path) -> dict[str, Any]:
        stats = unpack_layer(blob, fs, what)
        if diff_id and stats.diff_id != diff_id:
            raise errors.ImageCorruptError(
                f"layer {what} unpacks to {stats.diff_id}, but the image config says {diff_id}"
            )
        return {"diff_id": stats.diff_id, "size": stats.size, "files": stats.files,
                "skipped_devices": stats.skipped_devices}  # fmt: skip

    store.add(layer_id, fill)


def pull(
    ref: Reference,
    store: LayerStore,
    config: RegistryConfig | None,
    *,
    platform: str | None = None,
    progress: Progress,
) -> PulledImage:
    want = platform or default_platform()
    client = RegistryClient(ref, config)
    try:
        progress(f"resolving {ref}")
        manifest, digest = _resolve(client, ref, want, progress)
        cdesc = manifest["config"]
        image_config = json.loads(client.blob_bytes(str(cdesc["digest"])))
        layers = manifest["layers"]
        diff_ids = (image_config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(layers):
            raise errors.ImageCorruptError(f"image {ref}: {len(layers)} layers but {len(diff_ids)} diff ids")
        for d in layers:
            if d.get("mediaType") not in LAYER_TYPES:
                raise errors.RegistryError(f"image {ref} has a layer of unsupported type {d.get('mediaType')!r}")
            if not str(d.get("digest", "")).startswith("sha256:"):
                raise errors.ImageCorruptError(f"image {ref} has a layer digest that is not sha256")
        total = sum(int(d.get("size", 0)) for d in layers)
        progress(f"{ref}: {len(layers)} layer(s), {_mb(total)} to fetch at most")
        ids = [str(d["digest"]).removeprefix("sha256:") for d in layers]
        with ThreadPoolExecutor(DOWNLOAD_WORKERS, thread_name_prefix="pull") as pool:
            downloads: list[Future[Path | None]] = [
                pool.submit(_download, client, store, d, i, len(layers), progress) for i, d in enumerate(layers)
            ]
            try:
                for i, (fut, lid) in enumerate(zip(downloads, ids, strict=True)):
                    blob = fut.result()
                    if blob is None:
                        continue  # already in the store
                    failpoint("images.pull.before_unpack", lid)
                    with store.locked(lid):
                        what = f"sha256:{lid[:12]} ({i + 1}/{len(layers)})"
                        progress(f"unpacking layer {what}")
                        unpack_into_store(store, lid, blob, str(diff_ids[i]), what)
                    blob.unlink(missing_ok=True)
            finally:
                for fut in downloads:
                    fut.cancel()
        progress(f"pulled {ref} ({digest})")
        return PulledImage(ids, dict(image_config.get("config") or {}), digest, want, total)
    finally:
        client.close()


def _download(
    client: RegistryClient, store: LayerStore, desc: dict[str, Any], i: int, n: int, progress: Progress
) -> Path | None:
    digest = str(desc["digest"])
    lid = digest.removeprefix("sha256:")
    if store.has(lid):
        progress(f"layer {digest[:19]} ({i + 1}/{n}) already here")
        return None
    size = int(desc.get("size", 0))
    dest = store.blobs / lid

    def report(have: int, total: int) -> None:
        progress(f"layer {digest[:19]} ({i + 1}/{n}): {_mb(have)} of {_mb(total)}")

    client.download(digest, size, dest, report)
    return dest
