"""The content-addressed layer store: each layer unpacked once, shared by every template.

    <root>/layers/<id>/fs          the unpacked layer (an overlayfs lower)
    <root>/layers/<id>/layer.json  {"digest", "diff_id", "size", "files"}
    <root>/blobs/<hex>[.partial]   downloads (deleted once unpacked)

`<id>` is the hex of the layer blob's sha256 (or of a built layer's recipe).
A layer appears under `layers/` only complete: it is unpacked into `tmp/` and
renamed into place, under a per-layer lock, so concurrent pulls of one layer
unpack it once and a crash leaves only `tmp/` debris. Every entry a process
makes in `tmp/` carries its owner (`name@<pid>.<start time>.<random>`), so
`sweep_tmp` removes exactly those whose process is gone, while other processes
sharing the store (several nodes, one cache) keep theirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sandlot.failpoints import failpoint

__all__ = ["LayerStore", "owner_tag"]


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_tag() -> str:
    """`@<pid>.<start time>.`: names a scratch entry of this process (a pid alone can be reused)."""
    return f"@{os.getpid()}.{_start_time(os.getpid())}."


def _owner_gone(name: str) -> bool:
    """Whether the process that made scratch entry `name` has exited (False for names without an owner)."""
    _, at, owner = name.partition("@")
    pid, _, rest = owner.partition(".")
    start = rest.partition(".")[0]
    if not at or not pid.isdigit() or not start:
        return False
    return _start_time(int(pid)) != start


class LayerStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / "layers"
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        for d in (self.dir, self.blobs, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    def fs(self, layer_id: str) -> Path:
        return self.dir / layer_id / "fs"

    def has(self, layer_id: str) -> bool:
        return (self.dir / layer_id / "layer.json").exists()

    def meta(self, layer_id: str) -> dict[str, Any]:
        return dict(json.loads((self.dir / layer_id / "layer.json").read_text()))

    def ids(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir() if (p / "layer.json").exists())

    @contextlib.contextmanager
    def locked(self, layer_id: str) -> Iterator[None]:
        with open(self.dir / f".{layer_id}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def add(self, layer_id: str, fill: Callable[[Path], dict[str, Any]]) -> Path:
        """Make layer `layer_id` with `fill(fs_dir) -> metadata` unless it exists; return its fs.

        The caller holds `locked(layer_id)`.
        """
        if self.has(layer_id):
            return self.fs(layer_id)
        work = self.tmp / f"{layer_id}{owner_tag()}{uuid.uuid4().hex[:8]}"
        (work / "fs").mkdir(parents=True)
        os.chmod(work / "fs", 0o755)
        try:
            meta = fill(work / "fs")
            failpoint("images.layer.before_publish", layer_id)
            (work / "layer.json").write_text(json.dumps(meta))
            dest = self.dir / layer_id
            if dest.exists():  # debris of a crash between rename and layer.json: never half-used
                shutil.rmtree(dest)
            os.rename(work, dest)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return self.fs(layer_id)

    def remove(self, layer_id: str) -> None:
        path = self.dir / layer_id
        if path.exists():
            # Rename first: a layer is present or absent, never half-deleted.
            doomed = self.tmp / f"gc-{layer_id}{owner_tag()}{uuid.uuid4().hex[:8]}"
            os.rename(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        (self.dir / f".{layer_id}.lock").unlink(missing_ok=True)

    def scratch(self, prefix: str) -> Path:
        """A new scratch directory in `tmp/` (uploads, imports, exports), owned by this process."""
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}", dir=self.tmp))

    def sweep_tmp(self) -> list[Path]:
        """Remove the scratch entries of processes that are gone (a killed pull, build or upload)."""
        swept = [p for p in self.tmp.iterdir() if _owner_gone(p.name)]
        for p in swept:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        return swept

    def clear_tmp(self, min_age: float = 24 * 3600) -> None:
        """Remove debris older than `min_age` seconds (younger entries may be uploads or builds in flight)."""
        now = time.time()
        for p in self.tmp.iterdir():
            try:
                if now - p.lstat().st_mtime < min_age:
                    continue
            except FileNotFoundError:
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
