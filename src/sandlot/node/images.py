"""Unpacked images on the node: a read-only root filesystem plus its OCI config.

An image lives in `<images dir>/<name>/` as `rootfs/` and `image.json` (the
`config` object of an OCI image config: Env, WorkingDir, User, Entrypoint,
Cmd). Sandboxes use `rootfs/` as the read-only lower layer of their overlay, so
an image directory is never written once it is published.

Two builders ship with the node, both from Debian's packages (this project's
machines reach no container registry):

- `busybox`: busybox-static and its applet links; seconds to build.
- `debian` (`base`): `debootstrap --variant=minbase bookworm` with python3.

Builds go to a temporary directory and are renamed into place, under a file
lock, so a crash never leaves a half-made image that looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.node import image_code_interpreter

__all__ = ["BUILDERS", "Image", "ImageConfig", "ImageStore"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_MIRROR = os.environ.get("SANDLOT_DEBIAN_MIRROR", "http://deb.debian.org/debian")


@dataclass(frozen=True)
class ImageConfig:
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    user: str = "root"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)

    @classmethod
    def from_oci(cls, config: dict[str, Any]) -> ImageConfig:
        def strings(key: str) -> list[str]:
            value = config.get(key) or []
            return [str(v) for v in value] if isinstance(value, list) else []

        env: dict[str, str] = {}
        for item in strings("Env"):
            key, _, value = item.partition("=")
            env[key] = value
        return cls(
            env=env,
            cwd=str(config.get("WorkingDir") or "/"),
            user=str(config.get("User") or "root"),
            entrypoint=strings("Entrypoint"),
            cmd=strings("Cmd"),
        )

    def to_oci(self) -> dict[str, object]:
        return {
            "Env": [f"{k}={v}" for k, v in self.env.items()],
            "WorkingDir": self.cwd,
            "User": self.user,
            "Entrypoint": self.entrypoint,
            "Cmd": self.cmd,
        }


@dataclass(frozen=True)
class Image:
    name: str
    path: Path

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def config(self) -> ImageConfig:
        return ImageConfig.from_oci(json.loads((self.path / "image.json").read_text()))

    @property
    def has_glibc(self) -> bool:
        return any((self.rootfs / d / "ld-linux-x86-64.so.2").exists() for d in ("lib64", "lib/x86_64-linux-gnu"))


Progress = Callable[[str], None]


def _print_progress(line: str) -> None:
    print(f"[sandlot] {line}", file=sys.stderr, flush=True)


def _write_passwd(rootfs: Path) -> None:
    etc = rootfs / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (etc / "group").write_text("root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n")


def build_busybox(rootfs: Path, progress: Progress) -> ImageConfig:
    """A busybox-only image: no libc, no Python; the agent must still work."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise errors.RuntimeUnavailableError("busybox is not installed (Debian package busybox-static)")
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    for applet in out.split():
        link = rootfs / applet
        if link.name == "busybox":
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.symlink("/bin/busybox", link)
    for d in ("proc", "dev", "sys", "tmp", "root", "home/user", "etc"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    os.chown(rootfs / "home/user", 1000, 1000)
    _write_passwd(rootfs)
    progress(f"busybox image built ({len(out.split())} applets)")
    return ImageConfig(env={"PATH": DEFAULT_PATH}, cwd="/", user="root", cmd=["/bin/sh"])


def build_debian(rootfs: Path, progress: Progress) -> ImageConfig:
    """Debian bookworm (minbase) with python3, from Debian's packages."""
    if shutil.which("debootstrap") is None:
        raise errors.RuntimeUnavailableError("debootstrap is not installed (Debian package debootstrap)")
    progress(f"building the Debian bookworm image with debootstrap from {DEBIAN_MIRROR} (about a minute)")
    cmd = [
        "debootstrap",
        "--variant=minbase",
        "--include=python3,ca-certificates,procps",
        "bookworm",
        str(rootfs),
        DEBIAN_MIRROR,
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            tail = [*tail, line.rstrip()][-20:]
            if line.startswith("I: ") and ("Retrieving" in line or "Installing" in line or "Configuring" in line):
                progress(line[3:].strip())
    if proc.returncode != 0:
        raise errors.InternalError("debootstrap failed:\n" + "\n".join(tail))
    # A regular user, as E2B and most agent tooling expect one.
    subprocess.run(["chroot", str(rootfs), "useradd", "-m", "-u", "1000", "-s", "/bin/bash", "user"], check=True)
    with contextlib.suppress(FileNotFoundError):  # apt caches are dead weight in every sandbox
        shutil.rmtree(rootfs / "var/cache/apt/archives")
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    progress("Debian image built")
    return ImageConfig(env={"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}, cwd="/", user="root", cmd=["/bin/bash"])


BUILDERS: dict[str, Callable[[Path, Progress], ImageConfig]] = {
    "busybox": build_busybox,
    "debian": build_debian,
    "code-interpreter": image_code_interpreter.build_code_interpreter,
}
#: Names that mean another image.
ALIASES = {"base": "debian", "code-interpreter-v1": "code-interpreter"}


class ImageStore:
    """Images under one directory, built on first use and cached."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{name}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def get(self, name: str) -> Image | None:
        name = ALIASES.get(name, name)
        path = self.root / name
        return Image(name, path) if (path / "image.json").exists() else None

    def ensure(self, name: str, progress: Progress = _print_progress) -> Image:
        """Return the image, building it first when a builder knows its name."""
        image = self.get(name)
        if image is not None:
            return image
        real = ALIASES.get(name, name)
        builder = BUILDERS.get(real)
        if builder is None:
            known = ", ".join(sorted([*BUILDERS, *ALIASES]))
            raise errors.ImageNotFoundError(f"image {name!r} not found (images here: {known})")
        with self._lock(real):
            image = self.get(real)
            if image is not None:
                return image
            tmp = self.root / f".{real}.building"
            if tmp.exists():
                shutil.rmtree(tmp)
            (tmp / "rootfs").mkdir(parents=True)
            try:
                config = builder(tmp / "rootfs", progress)
                (tmp / "image.json").write_text(json.dumps(config.to_oci(), indent=1))
                os.rename(tmp, self.root / real)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        image = self.get(real)
        assert image is not None
        return image

    def add(self, name: str, rootfs: Path, config: ImageConfig) -> Image:
        """Publish an already unpacked root filesystem (moved, not copied)."""
        with self._lock(name):
            dest = self.root / name
            if dest.exists():
                raise errors.FileExistsError_(f"image {name!r} already exists")
            tmp = self.root / f".{name}.adding"
            tmp.mkdir(parents=True)
            os.rename(rootfs, tmp / "rootfs")
            (tmp / "image.json").write_text(json.dumps(config.to_oci(), indent=1))
            os.rename(tmp, dest)
        return Image(name, dest)
