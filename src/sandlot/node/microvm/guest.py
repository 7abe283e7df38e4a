"""The guest of a microVM: its kernel, its initramfs, and a read-only image of each template.

Built once and cached under the node's `vm/` cache (beside the image store,
so every node of the host shares it), each keyed by what it is made from:

- `kernel-<version>/vmlinux`: Debian's cloud kernel, decompressed once. QEMU
  boots the ELF directly (its PVH entry), so no boot pays the kernel's own
  decompression (a second or more under TCG). The bzImage is the fallback.
- `initrd-<hash>.cpio`: `init.c` (compiled static), the modules it loads
  (Debian builds virtio, erofs and overlayfs as modules) and the agent.
  A sandbox's initramfs is that archive with a small one appended: its
  agent config and `vm.conf` (the kernel unpacks concatenated archives).
- `rootfs/<hash of the layers>.erofs`: a template's layers merged into one
  read-only erofs image, the guest's overlay lower; `<hash>.lowerdir` beside it
  names those layers, so that `prune_rootfs_images` drops it once a layer is gone
  (its template deleted).

Each is built into a temporary file and renamed into place under a file lock,
so a crash never leaves a half-made one that looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sandlot import errors
from sandlot.node.microvm import cpio
from sandlot.node.rootfs import mount_readonly_overlay, umount

__all__ = [
    "MODULES",
    "Kernel",
    "ensure_initrd",
    "ensure_probe_initrd",
    "ensure_rootfs_image",
    "ensure_vmlinux",
    "find_kernel",
    "prune_rootfs_images",
    "sandbox_initrd",
]

INIT_SOURCE = Path(__file__).with_name("init.c")
#: What init.c loads, dependencies first (resolved from modules.dep): disks, ports, network, free-page
#: reporting, filesystems.
MODULES = (
    "virtio_mmio", "virtio_blk", "virtio_console", "virtio_net", "virtio_balloon", "erofs", "overlay", "virtiofs",
)  # fmt: skip
_KERNEL_ENV = "SANDLOT_VM_KERNEL"
# Where each compression's stream starts inside a bzImage, and the tool that decompresses it.
_COMPRESSED = [
    (b"\x02\x21\x4c\x18", ["unlz4", "-c"]),
    (b"\x28\xb5\x2f\xfd", ["zstd", "-dc"]),
    (b"\xfd7zXZ\x00", ["xz", "-dc"]),
    (b"\x1f\x8b\x08", ["gzip", "-dc"]),
]


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path  # the bzImage
    modules: Path  # /lib/modules/<version>

    @property
    def pvh(self) -> bool:
        """Whether the kernel has a PVH entry, so QEMU can boot its ELF (vmlinux) directly."""
        config = self.image.parent / f"config-{self.version}"
        try:
            return "CONFIG_PVH=y" in config.read_text().splitlines()
        except OSError:
            return False


def find_kernel() -> Kernel:
    """The guest kernel: $SANDLOT_VM_KERNEL, else the newest Debian cloud kernel in /boot."""
    named = os.environ.get(_KERNEL_ENV)
    candidates = [Path(named)] if named else sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"), key=_version_key)
    for image in reversed(candidates):
        version = image.name.removeprefix("vmlinuz-")
        modules = Path("/lib/modules") / version
        if image.is_file() and (modules / "modules.dep").is_file():
            return Kernel(version, image, modules)
    raise errors.RuntimeUnavailableError(
        "runtime 'microvm' needs a guest kernel: install Debian's linux-image-cloud-amd64 "
        f"(or set {_KERNEL_ENV} to a vmlinuz whose modules are in /lib/modules)"
    )


def _version_key(path: Path) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", path.name)]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """`target`, made by `build(tmp)` unless it exists; atomic, and once across processes."""
    if target.exists():
        return target
    with _locked(target):
        if target.exists():
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            build(tmp)
            os.rename(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def ensure_vmlinux(cache: Path, kernel: Kernel) -> Path:
    """The kernel to boot: its decompressed ELF where it has a PVH entry, else the bzImage."""
    if not kernel.pvh:
        return kernel.image
    try:
        return _build_once(cache / f"kernel-{kernel.version}" / "vmlinux", lambda tmp: _decompress(kernel.image, tmp))
    except (OSError, errors.SandlotError):
        return kernel.image


def _decompress(bzimage: Path, dest: Path) -> None:
    data = bzimage.read_bytes()
    for magic, tool in _COMPRESSED:
        at = data.find(magic)
        if at < 0:
            continue
        # The tools stop at the end of the stream and complain about the trailer: judge by the ELF.
        with open(dest, "wb") as out:
            subprocess.run(tool, input=data[at:], stdout=out, stderr=subprocess.DEVNULL, check=False)
        with open(dest, "rb") as f:
            if f.read(4) == b"\x7fELF":
                return
    raise errors.InternalError(f"cannot decompress the kernel {bzimage}")


def module_files(kernel: Kernel, names: tuple[str, ...] = MODULES) -> list[Path]:
    """The module files for `names` and their dependencies, each after what it depends on."""
    deps: dict[str, list[str]] = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        path, _, needs = line.partition(":")
        deps[path] = needs.split()
    by_name = {Path(p).name.removesuffix(".ko").replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in reversed(deps.get(path, [])):  # modules.dep lists the deepest dependency last
            visit(dep)
        order.append(path)

    for name in names:
        if name in by_name:
            visit(by_name[name])
        # else built in (or absent: init.c then fails to mount, naming what)
    return [kernel.modules / p for p in order]


def ensure_initrd(cache: Path, kernel: Kernel, agent: Path) -> Path:
    """The shared initramfs: init, the modules and the agent (keyed by all three)."""
    modules = module_files(kernel)
    h = hashlib.sha256(INIT_SOURCE.read_bytes())
    h.update(kernel.version.encode())
    for f in [*modules, agent]:
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return _build_once(cache / f"initrd-{h.hexdigest()[:16]}.cpio", lambda tmp: _write_initrd(tmp, modules, agent))


def ensure_probe_initrd(cache: Path) -> Path:
    """init alone: enough for `sandlot.probe` (accel.py), which exits before it needs anything else."""
    key = hashlib.sha256(INIT_SOURCE.read_bytes()).hexdigest()[:16]
    return _build_once(cache / f"probe-{key}.cpio", lambda tmp: tmp.write_bytes(cpio.archive(_init_entries())))


def _init_entries() -> list[cpio.Entry]:
    with tempfile.TemporaryDirectory() as build:
        init = Path(build) / "init"
        cc = subprocess.run(
            ["gcc", "-static", "-Os", "-s", "-o", str(init), str(INIT_SOURCE)], capture_output=True, text=True
        )
        if cc.returncode != 0:
            raise errors.InternalError(f"compiling the microVM's init failed:\n{cc.stderr[-3000:]}")
        entries = [cpio.directory(d) for d in ("dev", "proc", "sys", "lower", "disk", "newroot", "m", "sandlot")]
        entries.append(cpio.chardev("dev/console", 5, 1))
        entries.append(cpio.file("init", init.read_bytes(), 0o755))
        return entries


def _write_initrd(dest: Path, modules: list[Path], agent: Path) -> None:
    entries = _init_entries()
    for m in modules:
        entries.append(cpio.file(f"m/{m.name}", m.read_bytes()))
    entries.append(cpio.file("modules.order", "".join(f"/m/{m.name}\n" for m in modules).encode()))
    entries.append(cpio.file("sandlot/sandlot-agent", agent.read_bytes(), 0o755))
    entries.append(cpio.directory("sandlot/run"))
    dest.write_bytes(cpio.archive(entries))


def sandbox_initrd(base: Path, dest: Path, files: dict[str, bytes]) -> None:
    """`base` with `files` (path in the initramfs -> content) appended, written to `dest`."""
    tmp = dest.with_name(dest.name + ".tmp")
    with open(base, "rb") as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        out.write(cpio.archive([cpio.file(name, data, 0o644) for name, data in files.items()]))
    os.rename(tmp, dest)


def ensure_rootfs_image(cache: Path, lowerdir: str) -> Path:
    """A read-only erofs image of the template whose overlay `lowerdir` this is (top layer first)."""
    key = hashlib.sha256(lowerdir.encode()).hexdigest()[:24]
    image = _build_once(cache / "rootfs" / f"{key}.erofs", lambda tmp: _make_erofs(tmp, lowerdir))
    made_from = image.with_suffix(".lowerdir")
    if not made_from.exists():  # also for images cached before it was written
        tmp = made_from.with_name(f".{made_from.name}.{os.getpid()}.tmp")
        tmp.write_text(lowerdir)
        os.rename(tmp, made_from)
    return image


def prune_rootfs_images(cache: Path) -> list[Path]:
    """Delete the erofs images whose layers are gone (their templates deleted); return them.

    A layer still in use cannot be gone (a template in use is never deleted), and a
    running VM keeps its open image even so. Images without a `.lowerdir` beside them
    have not been used since it was introduced, and stay until they are."""
    gone = []
    for made_from in (cache / "rootfs").glob("*.lowerdir"):
        image = made_from.with_suffix(".erofs")
        with contextlib.suppress(FileNotFoundError):
            if all(Path(layer).exists() for layer in made_from.read_text().split(":")):
                continue
        with _locked(image):
            image.unlink(missing_ok=True)
            made_from.unlink(missing_ok=True)
        image.with_name(image.name + ".lock").unlink(missing_ok=True)
        gone.append(image)
    return gone


def _make_erofs(dest: Path, lowerdir: str) -> None:
    layers = lowerdir.split(":")
    with tempfile.TemporaryDirectory(dir=dest.parent) as work:
        source = Path(layers[0])
        merged = Path(work) / "merged"
        if len(layers) > 1:  # an overlay of lowers alone is read-only, and merges them
            merged.mkdir()
            mount_readonly_overlay(lowerdir, merged)
            source = merged
        try:
            res = subprocess.run(["mkfs.erofs", "--quiet", str(dest), str(source)], capture_output=True, text=True)
        finally:
            if source == merged:
                umount(merged)
        if res.returncode != 0:
            raise errors.InternalError(f"making the microVM image of a template failed: {res.stderr.strip()[-2000:]}")
