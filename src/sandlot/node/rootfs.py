"""A sandbox's root filesystem: the image's read-only rootfs, one writable layer on top.

The writable layer is an ext4 filesystem in a sparse file of the sandbox's disk
size (kept in the node's DiskStore, which can clone files: diskstore.py),
loop-mounted at `layer/`; overlayfs joins `image/rootfs` (lower) and
`layer/upper` at `rootfs/`. So:

- starting a sandbox never copies the image (only a sparse file is created);
- two sandboxes of one image never see each other's writes;
- a disk filler gets ENOSPC when its layer is full, and the host's disk is safe;
- checkpoint, restore and fork clone that file (`snapshot`, `mount(source=)`,
  `reset_to`), so they cost what the sandbox changed, not the image size.

Every step is undone by `unmount()`, which keeps going after a failure and
returns every error so the caller can report them all.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import struct
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from sandlot import errors
from sandlot.failpoints import failpoint
from sandlot.node.fileclone import clone_file, discard_writes, frozen_fs, thaw
from sandlot.node.loopdev import MS_RDONLY, mount, mount_image, wait_released

__all__ = ["WritableLayer", "is_mountpoint", "mount_overlay", "mount_readonly_overlay", "overlaid", "umount"]

log = logging.getLogger("sandlot.node.rootfs")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MNT_DETACH = 2


def mount_overlay(lower: str | Path, upper: Path, work: Path, target: Path) -> None:
    """`lower` is one directory or several joined by ':' (the top one first)."""
    mount("overlay", str(target), "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")


@contextlib.contextmanager
def overlaid(lower: str | Path, upper: Path, scratch: Path) -> Iterator[Path]:
    """`lower` with `upper` on top, mounted at a new directory under `scratch` (same filesystem as
    `upper`) for the duration: what is changed there lands in `upper` (overlayfs whiteouts included)."""
    name = uuid.uuid4().hex
    work, target = scratch / f"{name}.work", scratch / f"{name}.root"
    work.mkdir()
    target.mkdir()
    try:
        mount_overlay(lower, upper, work, target)
        try:
            yield target
        finally:
            umount(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            target.rmdir()


def mount_readonly_overlay(lower: str | Path, target: Path) -> None:
    """The lowers alone (two or more, joined by ':'), merged and read-only."""
    mount("overlay", str(target), "overlay", MS_RDONLY, f"lowerdir={lower}")


def umount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), 0) != 0:
        e = ctypes.get_errno()
        if e == errno.EBUSY:  # still held (e.g. a dying gofer): detach it lazily
            if _libc.umount2(str(target).encode(), MNT_DETACH) == 0:
                return
            e = ctypes.get_errno()
        if e in (errno.EINVAL, errno.ENOENT):  # not mounted (any more)
            return
        raise OSError(e, f"umount {target}: {os.strerror(e)}")


#: statx(2): what asks for no field but the attributes, and the attribute of a mount's root (Linux 5.8)
_AT_NO_AUTOMOUNT, _STATX_ATTR_MOUNT_ROOT = 0x800, 0x2000
_statx = getattr(_libc, "statx", None)


def is_mountpoint(path: Path) -> bool:
    """Whether a filesystem is mounted at `path` (symlinks followed; a missing path is not).

    One statx(2) call: reading /proc/self/mountinfo instead costs a line per mount on
    the host (two per sandbox), several times on every create.
    """
    if _statx is not None:
        buf = ctypes.create_string_buffer(256)  # struct statx
        if _statx(-100, os.fsencode(path), _AT_NO_AUTOMOUNT, 0, buf) == 0:  # AT_FDCWD
            attributes, known = struct.unpack_from("Q", buf, 8)[0], struct.unpack_from("Q", buf, 56)[0]
            if known & _STATX_ATTR_MOUNT_ROOT:
                return bool(attributes & _STATX_ATTR_MOUNT_ROOT)
        elif ctypes.get_errno() in (errno.ENOENT, errno.ENOTDIR):
            return False
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def make_disk(path: Path, size: int) -> None:
    """A sparse file of `size` bytes holding an empty ext4 filesystem.

    mkfs runs at the calling thread's priority (a spare refill's: nice 19, see SpareDisks.refill).
    """
    with open(path, "wb") as f:
        f.truncate(size)
    # No journal and lazy init: a sandbox layer is rebuilt, not repaired.
    argv = ["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", str(path)]
    mkfs = subprocess.run(argv, capture_output=True, text=True)
    if mkfs.returncode != 0:
        path.unlink(missing_ok=True)
        raise errors.InternalError(f"mkfs.ext4 of the sandbox disk failed: {mkfs.stderr.strip()}")


MS_BIND, MS_MOVE = 4096, 8192


def move_mount(source: Path, target: Path) -> None:
    """Move the mount at `source` to `target`.

    MS_MOVE refuses a mount whose parent propagates (a shared mount: systemd
    makes / shared); there the mount is bound to `target` and `source` unmounted,
    which ends the same (one mount of that filesystem, at `target`).
    """
    try:
        mount(str(source), str(target), "", MS_MOVE, "")
        return
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    mount(str(source), str(target), "", MS_BIND, "")
    umount(source)


@contextlib.contextmanager
def _niced() -> Iterator[None]:
    """This thread at nice 19 for the duration (a pool's thread: its priority is put back)."""
    tid = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, 19)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, before)


def _layer_dirs(root: Path) -> None:
    """What a sandbox disk holds before the overlay uses it: upper and work, no lost+found."""
    with contextlib.suppress(FileNotFoundError):
        (root / "lost+found").rmdir()
    (root / "upper").mkdir(exist_ok=True)
    (root / "work").mkdir(exist_ok=True)


class SpareDisks:
    """Empty sandbox disks made and mounted ahead of time, so mkfs and the mount are off a create's path.

    A spare is `<size>-<hex>.img`, mounted at `<size>-<hex>.mnt` with the
    layer's directories made. A create takes one by renaming the file (same
    filesystem) and moving its mount to the sandbox's `layer/` (~0.03 ms against
    ~5 ms to attach a loop device and mount ext4 on a create's path, measured),
    and `refill` makes new ones in the background. A spare that is not mounted
    (left by a node that stopped) is mounted by the next refill, or by the
    create that takes it first.

    Invariants: `_lock` guards the directory listing, the renames and the
    moves, so a file and its mount are taken together; a spare's file is only
    named `.img` once its mount is complete; no spare stays mounted once the
    node stops (`unmount_all`), so a restarted node finds only files.
    """

    def __init__(self, dir: Path, keep: int = 2) -> None:
        self.dir = Path(dir)
        self.keep = keep
        self._lock = threading.Lock()
        self._sizes: set[int] = set()

    def _spares(self, size: int) -> list[Path]:
        return sorted(self.dir.glob(f"{size}-*.img")) if self.dir.exists() else []

    def take(self, size: int, dest: Path, layer: Path) -> bool:
        """Rename a spare of `size` to `dest`, its mount (when it has one) moved to `layer`; False: none."""
        with self._lock:
            self._sizes.add(size)
            for spare in self._spares(size):
                mnt = spare.with_suffix(".mnt")
                try:
                    os.rename(spare, dest)
                except OSError:
                    continue
                if is_mountpoint(mnt):
                    failpoint("node.spares.take.before_move", layer.parent.name)  # (its sandbox)
                    try:
                        move_mount(mnt, layer)
                    except OSError:
                        umount(mnt)  # the create mounts it the usual way
                with contextlib.suppress(OSError):
                    mnt.rmdir()
                return True
        return False

    def refill(self) -> None:
        """Make spares for every size asked for so far (run it in a thread).

        A full store makes none (the next create makes its own disk, or says the store is full).
        The thread runs at nice 19 meanwhile (mkfs too): a refill follows a create, whose boot
        must not wait behind it for a core.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with _niced():
            self._refill()

    def _refill(self) -> None:
        for size in list(self._sizes):
            for spare in self._spares(size):  # left unmounted by a node that stopped
                if not is_mountpoint(spare.with_suffix(".mnt")) and not self._make(spare, None):
                    return
            while len(self._spares(size)) < self.keep:
                if not self._make(self.dir / f"{size}-{uuid.uuid4().hex}.img", size):
                    return

    def _make(self, spare: Path, size: int | None) -> bool:
        """Make a new spare of `size` bytes at `spare` (None: claim the spare that is there) and mount
        it; False: it could not be (a full store).

        Until it is mounted, the file is named `.<name>.tmp`, which no create takes."""
        tmp, mnt = self.dir / f".{spare.stem}.tmp", spare.with_suffix(".mnt")
        if size is None:
            with self._lock:
                try:
                    os.rename(spare, tmp)
                except FileNotFoundError:  # a create took it first
                    return True
        try:
            if size is not None:
                make_disk(tmp, size)
            mnt.mkdir(exist_ok=True)
            mount_image(tmp, mnt, "ext4")
            _layer_dirs(mnt)
        except (OSError, errors.InternalError):
            self._discard(tmp, mnt)
            return False
        with self._lock:
            os.rename(tmp, spare)
        return True

    @staticmethod
    def _discard(img: Path, mnt: Path) -> None:
        with contextlib.suppress(OSError):
            umount(mnt)
            mnt.rmdir()
        img.unlink(missing_ok=True)

    def unmount_all(self) -> list[str]:
        """Unmount every spare (their files stay, spares still); the problems met. Only with no refill running."""
        problems: list[str] = []
        if not self.dir.is_dir():
            return problems
        with self._lock:
            for mnt in sorted(self.dir.glob("*.mnt")):
                try:
                    if is_mountpoint(mnt):
                        umount(mnt)
                    mnt.rmdir()
                except OSError as exc:
                    problems.append(f"unmounting the spare disk at {mnt}: {exc}")
        return problems

    def sweep(self) -> list[Path]:
        """Unmount spares a stopped node left mounted and remove disks it was still making (`.tmp`);
        returns what was removed. Before the sandboxes are recovered: a node killed as a create took a
        spare leaves that sandbox's disk mounted at the spare's place. Only with no refill running."""
        if not self.dir.is_dir():
            return []
        for problem in self.unmount_all():
            log.warning("%s", problem)
        swept = sorted(self.dir.glob(".*.tmp"))
        for p in swept:
            p.unlink(missing_ok=True)
        return swept


class WritableLayer:
    """The per-sandbox layer and overlay under `dir`."""

    def __init__(self, dir: Path, lower: str | Path, disk_bytes: int, disk_file: Path | None = None) -> None:
        self.dir = Path(dir)
        self.lower = str(lower)  # overlayfs lowerdir: the image's layers, top first
        self.disk_bytes = disk_bytes
        self._disk_file = Path(disk_file) if disk_file else None
        #: a disk to clone instead of a fresh one (a checkpoint's, for a fork)
        self.source: Path | None = None

    @property
    def image_file(self) -> Path:
        return self._disk_file or self.dir / "disk.img"

    @property
    def layer(self) -> Path:
        return self.dir / "layer"

    @property
    def upper(self) -> Path:
        return self.layer / "upper"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    def mount(self, spares: SpareDisks | None = None, source: Path | None = None) -> None:
        """Make the disk (a clone of `source`, a spare, or a new one) and mount the overlay."""
        for d in (self.layer, self.rootfs):
            d.mkdir(parents=True, exist_ok=True)
        if source is not None:
            clone_file(source, self.image_file)
        elif spares is None or not spares.take(self.disk_bytes, self.image_file, self.layer):
            make_disk(self.image_file, self.disk_bytes)
        self._mount_disk()

    def _mount_disk(self) -> None:
        if not is_mountpoint(self.layer):
            mount_image(self.image_file, self.layer, "ext4")
        _layer_dirs(self.layer)
        if not is_mountpoint(self.rootfs):
            mount_overlay(self.lower, self.upper, self.layer / "work", self.rootfs)

    def remount(self) -> None:
        """Mount the sandbox's existing disk again, where it is not (after a crash or a host reboot)."""
        if not self.image_file.exists():
            raise errors.InternalError(f"the sandbox's disk {self.image_file} is gone")
        for d in (self.layer, self.rootfs):
            d.mkdir(parents=True, exist_ok=True)
        self._mount_disk()

    def thaw(self) -> bool:
        """Thaw the disk if a checkpoint was killed while it was frozen; True if it was."""
        return is_mountpoint(self.layer) and thaw(self.layer)

    @property
    def staged(self) -> Path:
        """Where `stage` puts a checkpoint's disk for a restore."""
        return self.image_file.with_name(self.image_file.name + ".restore")

    def snapshot(self, dest: Path) -> None:
        """Copy the disk, consistent, to `dest` (a clone: costs what was written)."""
        if not is_mountpoint(self.layer):  # a guest kernel's disk (microvm): its runtime made it consistent
            self.clone_disk(dest)
            return
        with frozen_fs(self.layer):
            clone_file(self.image_file, dest)

    def clone_disk(self, dest: Path) -> None:
        """Clone the disk file as it is: for a disk that is not mounted here, or that its user froze."""
        clone_file(self.image_file, dest)

    def stage(self, source: Path) -> Path:
        """Clone `source` beside the disk, for `swap`; a failure (a full store) changes nothing."""
        clone_file(source, self.staged)
        return self.staged

    def swap(self, staged: Path) -> None:
        """Put the `stage`d disk in place of this one and mount it (the overlay must be unused).

        The old disk is deleted by the rename: its unmount need not write back what was not yet flushed."""
        if is_mountpoint(self.layer):
            discard_writes(self.layer)
        problems = self.unmount()
        if problems:
            raise errors.InternalError("unmounting the sandbox disk for a restore failed: " + "; ".join(problems))
        os.rename(staged, self.image_file)
        self._mount_disk()

    @property
    def mounted(self) -> bool:
        return is_mountpoint(self.rootfs)

    def unmount(self) -> list[str]:
        """Undo mount(); every failure is collected, never raised."""
        problems: list[str] = []
        for target in (self.rootfs, self.layer):
            try:
                if target.exists() and is_mountpoint(target):
                    umount(target)  # the loop device was set up with autoclear
            except OSError as exc:
                problems.append(str(exc))
        return problems

    def remove(self) -> list[str]:
        """Unmount, then delete the disk and the directory: the directory last, because a restarted
        node finds what to clean up from it (the disk file outside it would be forgotten)."""
        problems = self.unmount()
        if problems:
            return problems
        wait_released(self.image_file)  # the kernel frees the loop device a moment after the unmount
        failpoint("node.destroy.after_unmount", self.dir.name)
        if self._disk_file is not None:
            try:
                self._disk_file.unlink(missing_ok=True)
                self.staged.unlink(missing_ok=True)
            except OSError as exc:
                problems.append(f"removing {self._disk_file}: {exc}")
        try:
            shutil.rmtree(self.dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"removing {self.dir}: {exc}")
        return problems
