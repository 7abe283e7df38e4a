"""Volumes: named filesystems on the host that outlive sandboxes and are bind-mounted into them.

A volume is `<data dir>/volumes/<id>/` holding `volume.json` (its name, an
opaque `owner` (the API's team; names are unique per owner) and its size),
`disk.img` (an ext4 filesystem of that size in a sparse file, as sandbox disks
are: rootfs.make_disk) and `data/`, where the disk is loop-mounted while a
sandbox of this node uses the volume. So a full volume is the sandbox's
ENOSPC, never the host's disk. Volumes made before sizes existed have no
`disk.img`: `data/` is a plain directory, without a limit.

Sandboxes get it as a bind mount at a path, read-write or read-only; under
gVisor, mounts other than the root are served with shared file access
(runsc's default), so two sandboxes sharing a volume see each other's writes.
`mount` is called for each sandbox that starts with the volume, `unmount` when
the node's last such sandbox is gone (Node.destroy) and before a delete.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import posixpath
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.failpoints import failpoint
from sandlot.node.loopdev import mount_image
from sandlot.node.rootfs import is_mountpoint, make_disk, umount

__all__ = ["Volume", "VolumeMount", "VolumeStore", "bind_mounts"]

VOLUME_ID_RE = re.compile(r"^vol-[0-9a-z]{16}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
#: Sizes a volume may have, in MiB.
MIN_SIZE_MB, MAX_SIZE_MB = 16, 1 << 22
#: Paths a volume may not cover: the sandbox's own system mounts and the agent's.
_RESERVED = ("/", "/proc", "/dev", "/sys", "/.sandlot")


@dataclass(frozen=True)
class VolumeMount:
    """A volume, by id, at `path` inside the sandbox."""

    volume_id: str
    path: str
    read_only: bool = False

    def validate(self) -> VolumeMount:
        if not VOLUME_ID_RE.match(self.volume_id):
            raise errors.InvalidArgumentError(f"bad volume id {self.volume_id!r}", field="volumes")
        p = self.path
        if not p.startswith("/") or "\0" in p or posixpath.normpath(p) != p or len(p) > 1024:
            raise errors.InvalidArgumentError(
                f"a volume's path must be absolute and normalized (no '..', no trailing '/'), got {p!r}",
                field="volumes",
            )
        if any(p == r or (r != "/" and p.startswith(r + "/")) for r in _RESERVED):
            raise errors.InvalidArgumentError(f"a volume cannot be mounted at {p!r}", field="volumes")
        return self


@dataclass
class Volume:
    id: str
    name: str
    owner: str
    created_at: float
    dir: Path
    #: None: a volume from before sizes (a plain directory, no limit)
    size_mb: int | None = None

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def disk(self) -> Path:
        return self.dir / "disk.img"


def bind_mounts(store: VolumeStore, mounts: list[VolumeMount]) -> list[dict[str, Any]]:
    """OCI mount entries for `mounts` (each volume must exist)."""
    paths = [m.path for m in mounts]
    if len(set(paths)) != len(paths):
        raise errors.InvalidArgumentError("two volumes are mounted at one path", field="volumes")
    out = []
    for m in mounts:
        vol = store.get(m.validate().volume_id)
        options = ["rbind", "ro" if m.read_only else "rw", "nosuid", "nodev"]
        out.append({"destination": m.path, "type": "bind", "source": str(vol.data), "options": options})
    return out


class VolumeStore:
    """Volumes under `dir`. Invariant: `_lock` guards creation (names unique per owner) and mounting."""

    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir)
        self._lock = threading.Lock()

    def _load(self, d: Path) -> Volume | None:
        try:
            r = json.loads((d / "volume.json").read_text())
            size = r.get("size_mb")
            return Volume(
                str(r["id"]),
                str(r["name"]),
                str(r["owner"]),
                float(r["created_at"]),
                d,
                None if size is None else int(size),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def get(self, volume_id: str) -> Volume:
        vol = self._load(self.dir / volume_id) if VOLUME_ID_RE.match(volume_id) else None
        if vol is None:
            raise errors.VolumeNotFoundError(f"volume {volume_id!r} not found")
        return vol

    def list(self, owner: str | None = None) -> list[Volume]:
        if not self.dir.is_dir():
            return []
        vols = [v for d in self.dir.iterdir() if VOLUME_ID_RE.match(d.name) and (v := self._load(d)) is not None]
        return sorted((v for v in vols if owner is None or v.owner == owner), key=lambda v: (v.created_at, v.id))

    def find(self, owner: str, name: str) -> Volume:
        for v in self.list(owner):
            if v.name == name:
                return v
        raise errors.VolumeNotFoundError(f"volume {name!r} not found")

    def create(self, name: str, owner: str, size_mb: int = 1024) -> Volume:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise errors.InvalidArgumentError(
                f"volume name must be 1-64 letters, digits, '.', '_' or '-', got {name!r}", field="name"
            )
        if not isinstance(size_mb, int) or not MIN_SIZE_MB <= size_mb <= MAX_SIZE_MB:
            raise errors.InvalidArgumentError(
                f"size_mb must be between {MIN_SIZE_MB} and {MAX_SIZE_MB}, got {size_mb!r}", field="size_mb"
            )
        with self._lock:
            if any(v.name == name for v in self.list(owner)):
                raise errors.ConflictError(f"volume {name!r} already exists", field="name")
            vid = "vol-" + "".join(secrets.choice(_ALPHABET) for _ in range(16))
            tmp = self.dir / f".{vid}.tmp"
            (tmp / "data").mkdir(parents=True)
            vol = Volume(vid, name, owner, time.time(), self.dir / vid, size_mb)
            try:
                make_disk(tmp / "disk.img", size_mb << 20)
                _prepare(tmp / "disk.img", tmp / "data")
                (tmp / "volume.json").write_text(
                    json.dumps(
                        {"id": vid, "name": name, "owner": owner, "created_at": vol.created_at, "size_mb": size_mb}
                    )
                )
                tmp.rename(vol.dir)
            except BaseException:
                with contextlib.suppress(OSError):
                    umount(tmp / "data")
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return vol

    def mount(self, volume_id: str) -> Volume:
        """Make the volume's files available at `data/` (idempotent); the volume must exist."""
        vol = self.get(volume_id)
        if vol.size_mb is None:
            return vol
        with self._lock:
            if not is_mountpoint(vol.data):
                _mount(vol.disk, vol.data)
        return vol

    def unmount(self, volume_id: str) -> builtins.list[str]:
        """Undo `mount` (when no sandbox uses the volume any more); failures are returned."""
        with self._lock:
            data = self.dir / volume_id / "data"
            try:
                if VOLUME_ID_RE.match(volume_id) and data.exists() and is_mountpoint(data):
                    umount(data)  # the loop device was set up with autoclear
            except OSError as exc:
                return [f"unmounting volume {volume_id}: {exc}"]
        return []

    def delete(self, volume_id: str) -> None:
        vol = self.get(volume_id)
        problems = self.unmount(vol.id)
        if problems:
            raise errors.InternalError("; ".join(problems))
        trash = self.dir / f".{vol.id}.deleting"
        vol.dir.rename(trash)  # unlisted at once; a node killed now leaves `trash` to `sweep`
        failpoint("volumes.delete.after_unlist", vol.id)
        shutil.rmtree(trash, ignore_errors=True)

    def sweep(self) -> builtins.list[Path]:
        """Remove volumes half created or half deleted by a killed node (before any create or delete runs)."""
        swept = [d for d in self.dir.iterdir() if d.name.startswith(".")] if self.dir.is_dir() else []
        for d in swept:
            with contextlib.suppress(OSError):  # a half-made sized volume's disk may be mounted
                if is_mountpoint(d / "data"):
                    umount(d / "data")
            shutil.rmtree(d, ignore_errors=True)
        return swept


def _mount(disk: Path, target: Path) -> None:
    mount_image(disk, target, "ext4", ("noatime", "nosuid", "nodev"))


def _prepare(disk: Path, mountpoint: Path) -> None:
    """A fresh volume's filesystem as users expect it: empty (no lost+found), its root 0755."""
    _mount(disk, mountpoint)
    try:
        with contextlib.suppress(FileNotFoundError):
            (mountpoint / "lost+found").rmdir()
        os.chmod(mountpoint, 0o755)
    finally:
        umount(mountpoint)
