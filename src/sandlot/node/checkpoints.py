"""Checkpoints of a sandbox's filesystem: take, list, delete, restore, fork.

A checkpoint is a clone of the sandbox's disk file (its writable layer: an ext4
image holding only what the sandbox changed since its image) taken while the
sandbox is frozen (`runtime.pause`) and its layer flushed and frozen
(FIFREEZE), plus a small record. Clones share blocks (diskstore.py), so the
cost follows what the sandbox wrote, never the image nor the disk size.

- `restore` stops the sandbox's processes, puts a clone of the checkpoint in
  place of its disk and boots the sandbox again, same id, same spec: the
  filesystem is the checkpoint's, the processes start fresh (a filesystem
  checkpoint holds no memory).
- `fork` starts new sandboxes of the checkpoint's spec, each on its own clone.

Checkpoints outlive the sandbox they were taken of (fork still works) until
deleted. Records live in `<disk store>/checkpoints/<id>/checkpoint.json`
beside `disk.img`, so they survive a restart of the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import os
import re
import secrets
import shutil
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.failpoints import afailpoint
from sandlot.node.spec import Limits, SandboxSpec
from sandlot.node.volumes import VolumeMount

__all__ = ["CHECKPOINT_ID_RE", "MAX_FORK", "Checkpoint", "CheckpointStore", "spec_from_dict", "spec_to_dict"]

CHECKPOINT_ID_RE = re.compile(r"^ck-[0-9a-z]{16}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: At most this many sandboxes from one fork call.
MAX_FORK = 64
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def spec_to_dict(spec: SandboxSpec) -> dict[str, Any]:
    return dataclasses.asdict(spec)


def spec_from_dict(d: dict[str, Any]) -> SandboxSpec:
    """Rebuild a spec, ignoring fields this version does not know (a copy: it shares nothing with `d`)."""
    d = copy.deepcopy(d)
    known = {f.name for f in dataclasses.fields(SandboxSpec)}
    kw = {k: v for k, v in d.items() if k in known and k != "limits"}
    lk = {f.name for f in dataclasses.fields(Limits)}
    limits = Limits(**{k: v for k, v in (d.get("limits") or {}).items() if k in lk})
    if "volumes" in kw:
        kw["volumes"] = [VolumeMount(**v) for v in kw["volumes"]]
    return SandboxSpec(**kw, limits=limits)


@dataclass(frozen=True)
class Checkpoint:
    id: str
    name: str
    sandbox_id: str
    created_at: float
    #: bytes the checkpoint's disk holds (what the sandbox had written, plus ext4's metadata)
    size_bytes: int
    spec: dict[str, Any]
    dir: Path
    #: whether it also holds the processes and their memory (`memory/`, a runsc image)
    memory: bool = False

    @property
    def disk(self) -> Path:
        return self.dir / "disk.img"

    @property
    def memory_image(self) -> Path:
        return self.dir / "memory"

    def record(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("dir")
        return d


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise errors.InvalidArgumentError(
            f"checkpoint name must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit), "
            f"got {name!r}",
            field="name",
        )
    return name


class CheckpointStore:
    """Checkpoint records and disks under `dir` (inside the node's DiskStore).

    Invariant: a checkpoint is listed only once its disk and record are both
    complete: both are written under a temporary name (`.<id>.tmp/`) and renamed
    into place; a deleted one is renamed away (`.<id>.deleting/`) before its
    files go. A node killed midway leaves only those names, which `sweep` removes.
    `_locks[sandbox id]` serialises checkpoints of one sandbox (names are unique
    per sandbox); checkpoints of different sandboxes proceed side by side.
    `_listed[id]` is checkpoint `id` as its record was read, for each one the last
    listing found: a record never changes once in place, ids are not reused, and
    `delete` (which `adopt` calls first) drops the entry; a listing that overlapped a
    delete keeps nothing (`_deletes` counts them), so it cannot bring the entry back.
    """

    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._listed: dict[str, Checkpoint] = {}
        self._deletes = 0
        self._listed_lock = threading.Lock()

    def sweep(self) -> list[Path]:
        """Remove what killed checkpoints and deletions left (call it before any checkpoint starts)."""
        swept = [d for d in self.dir.iterdir() if d.name.startswith(".")] if self.dir.is_dir() else []
        for d in swept:
            shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
        return swept

    def _new_id(self) -> str:
        return "ck-" + "".join(secrets.choice(_ALPHABET) for _ in range(16))

    def get(self, checkpoint_id: str) -> Checkpoint:
        if not isinstance(checkpoint_id, str) or not CHECKPOINT_ID_RE.match(checkpoint_id):
            raise errors.CheckpointNotFoundError(f"checkpoint {checkpoint_id!r} not found")
        ck = self._load(self.dir / checkpoint_id)
        if ck is None:
            raise errors.CheckpointNotFoundError(f"checkpoint {checkpoint_id} not found")
        return ck

    def _load(self, d: Path) -> Checkpoint | None:
        try:
            r = json.loads((d / "checkpoint.json").read_text())
            return Checkpoint(
                id=str(r["id"]),
                name=str(r["name"]),
                sandbox_id=str(r["sandbox_id"]),
                created_at=float(r["created_at"]),
                size_bytes=int(r["size_bytes"]),
                spec=dict(r["spec"]),
                dir=d,
                memory=bool(r.get("memory", False)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def list(self, sandbox_id: str | None = None) -> list[Checkpoint]:
        """The checkpoints here (of `sandbox_id` only, if given), oldest first.

        Reads the directory, and only the records it has not seen before (`_listed`): reading
        each record cost ~50 µs, and every create lists them all (its team's disk use), so a
        node holding 1000 checkpoints spent 50 ms of each create on it, under the team's lock."""
        deletes = self._deletes
        try:
            names = [entry.name for entry in os.scandir(self.dir)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        known, listed = self._listed, {}
        for name in names:
            ck = known.get(name)
            if ck is None and CHECKPOINT_ID_RE.match(name):
                ck = self._load(self.dir / name)
            if ck is not None:
                listed[name] = ck
        with self._listed_lock:
            if self._deletes == deletes:
                self._listed = listed
        out = [c for c in listed.values() if sandbox_id is None or c.sandbox_id == sandbox_id]
        return sorted(out, key=lambda c: (c.created_at, c.id))

    async def take(
        self, sandbox_id: str, name: str, spec: SandboxSpec, snapshot: Any, memory: bool = False
    ) -> Checkpoint:
        """Record a checkpoint whose disk `snapshot(path)` writes (and, with `memory`, its `memory/` beside it)."""
        validate_name(name)
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = self._locks[sandbox_id] = asyncio.Lock()
        async with lock:  # names are unique per sandbox
            if any(c.name == name for c in self.list(sandbox_id)):
                raise errors.ConflictError(
                    f"sandbox {sandbox_id} already has a checkpoint named {name!r}; delete it or choose another name",
                    field="name",
                )
            ck_id = self._new_id()
            with self._staged(ck_id) as tmp:
                await snapshot(tmp / "disk.img")
                ck = Checkpoint(
                    id=ck_id,
                    name=name,
                    sandbox_id=sandbox_id,
                    created_at=time.time(),
                    size_bytes=(tmp / "disk.img").stat().st_blocks * 512,
                    spec=spec_to_dict(spec),
                    dir=self.dir / ck_id,
                    memory=memory,
                )
                (tmp / "checkpoint.json").write_text(json.dumps(ck.record()))
                await afailpoint("node.checkpoint.before_record", sandbox_id)
                tmp.rename(ck.dir)
            return ck

    @contextlib.contextmanager
    def _staged(self, ck_id: str) -> Iterator[Path]:
        """A new directory `.<id>.tmp/` to make checkpoint `ck_id` in (renamed into place by the
        caller); removed if that fails."""
        tmp = self.dir / f".{ck_id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def adopt(self, record: dict[str, Any], disk: Path) -> Checkpoint:
        """Hold a checkpoint moved here from another node (sandbox_move.py): `record` as that node
        wrote it, its disk received into `disk` (on this store's filesystem; renamed into place).
        One already here with its id (an earlier, cut-short move's copy) is replaced."""
        ck_id = str(record["id"])
        if not CHECKPOINT_ID_RE.match(ck_id):
            raise errors.InvalidArgumentError(f"not a checkpoint id: {ck_id!r}")
        with contextlib.suppress(errors.CheckpointNotFoundError):
            self.delete(ck_id)
        with self._staged(ck_id) as tmp:
            disk.rename(tmp / "disk.img")
            ck = Checkpoint(
                id=ck_id,
                name=validate_name(record["name"]),
                sandbox_id=str(record["sandbox_id"]),
                created_at=float(record["created_at"]),
                size_bytes=(tmp / "disk.img").stat().st_blocks * 512,
                spec=dict(record["spec"]),
                dir=self.dir / ck_id,
                memory=False,  # a memory image does not move (it names its node's paths and network)
            )
            (tmp / "checkpoint.json").write_text(json.dumps(ck.record()))
            tmp.rename(ck.dir)
        return ck

    def delete(self, checkpoint_id: str) -> None:
        ck = self.get(checkpoint_id)
        trash = self.dir / f".{ck.id}.deleting"
        ck.dir.rename(trash)  # unlisted at once; the blocks go with the files
        with self._listed_lock:
            self._deletes += 1
            self._listed.pop(ck.id, None)
        with contextlib.suppress(OSError):
            shutil.rmtree(trash)
