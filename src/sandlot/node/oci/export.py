"""Write templates (and sandboxes' filesystems) as OCI image layouts that skopeo, podman and umoci read.

Each layer directory of the store is tarred back into an OCI layer: overlayfs
whiteouts (0/0 character devices) become `.wh.<name>` entries, and a
directory marked `trusted.overlay.opaque=y` gets a `.wh..wh..opq` entry, the
exact inverse of `unpack`. A sandbox's own writable layer (its overlay upper
directory, which uses the same format) becomes the top layer, so an export
costs what the sandbox changed plus the image's layers.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform as host_platform
import stat
import tarfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from sandlot.node.oci.unpack import OPAQUE, WHITEOUT

__all__ = ["export_layout"]

Progress = Callable[[str], None]
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


class _HashingWriter:
    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.n += len(data)
        return self.inner.write(data)

    def flush(self) -> None:
        self.inner.flush()


def _xattrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if name.startswith("trusted.overlay."):
            continue
        try:
            out["SCHILY.xattr." + name] = os.getxattr(path, name, follow_symlinks=False).decode(
                "utf-8", "surrogateescape"
            )
        except OSError:
            pass
    return out


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _entries(root: Path, skip: Iterable[str]) -> Iterable[tuple[str, str]]:
    """(absolute path, name in the layer) for every entry, parents before children, sorted."""
    skipped = set(skip)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = sorted(d for d in dirnames if os.path.join(rel_dir, d) not in skipped)
        for name in sorted(dirnames + [f for f in filenames if os.path.join(rel_dir, f) not in skipped]):
            yield os.path.join(dirpath, name), os.path.join(rel_dir, name)


def _write_layer(tree: Path, out: BinaryIO, skip: Iterable[str]) -> str:
    """Tar+gzip `tree` into `out`; returns the diff id (sha256 of the uncompressed tar)."""
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=3, mtime=0) as gz:
        plain = _HashingWriter(gz)  # type: ignore[arg-type]
        with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for path, name in _entries(tree, skip):
                st = os.lstat(path)
                parent, base = os.path.split(name)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # an overlay whiteout
                    info = tarfile.TarInfo(os.path.join(parent, WHITEOUT + base))
                    info.mtime = int(st.st_mtime)
                    tar.addfile(info)
                    continue
                info = tar.gettarinfo(path, name)
                if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                    continue  # device nodes never travel in layers here
                info.uname = info.gname = ""
                info.pax_headers = _xattrs(path)
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
                if info.isdir() and _is_opaque(path):
                    marker = tarfile.TarInfo(os.path.join(name, OPAQUE))
                    marker.mtime = int(st.st_mtime)
                    tar.addfile(marker)
    return "sha256:" + plain.h.hexdigest()


def _put_blob(blobs: Path, write: Callable[[BinaryIO], Any]) -> tuple[str, int, Any]:
    tmp = blobs / f".{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as raw:
        hw = _HashingWriter(raw)
        result = write(hw)  # type: ignore[arg-type]
    digest = "sha256:" + hw.h.hexdigest()
    os.replace(tmp, blobs / digest.removeprefix("sha256:"))
    return digest, hw.n, result


def export_layout(
    layers: list[Path],
    config: dict[str, Any],
    dest: Path,
    *,
    tag: str = "latest",
    skip: dict[int, list[str]] | None = None,
    progress: Progress,
) -> str:
    """Write `layers` (bottom to top) and `config` as image `tag` of the OCI layout `dest`; return its digest.

    `skip` names paths to leave out, per layer index (what the node itself put in a sandbox).
    `dest` may already be a layout: the image is added to it under `tag`.
    """
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    descs, diff_ids = [], []
    for i, tree in enumerate(layers):
        progress(f"packing layer {i + 1}/{len(layers)}")
        ignore = (skip or {}).get(i, [])

        def pack(out: BinaryIO, t: Path = tree, s: list[str] = ignore) -> str:
            return _write_layer(t, out, s)

        digest, size, diff_id = _put_blob(blobs, pack)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
        diff_ids.append(diff_id)
    image_config = {
        "architecture": _ARCH.get(host_platform.machine(), host_platform.machine()),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cdigest, csize, _ = _put_blob(blobs, lambda out: out.write(json.dumps(image_config).encode()))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
        "layers": descs,
    }
    mdigest, msize, _ = _put_blob(blobs, lambda out: out.write(json.dumps(manifest).encode()))
    (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index_path = dest / "index.json"
    index: dict[str, Any] = json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2}
    kept: list[dict[str, Any]] = list(index.get("manifests") or [])
    index["manifests"] = [
        m for m in kept if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != tag
    ] + [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": mdigest,
            "size": msize,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    ]
    tmp = dest / f".index.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(index))
    os.replace(tmp, index_path)
    progress(f"exported {len(layers)} layer(s) as {dest}:{tag} ({mdigest})")
    return mdigest
