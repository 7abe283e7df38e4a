"""Images (templates) on the node: read-only layers plus an OCI config, and the built-ins.

An `Image` is a template of the store (`sandlot.node.oci.store.ImageStore`):
its layers, bottom to top, each an unpacked directory of the shared layer
store, which sandboxes stack as the read-only lowers of their overlay; and the
`config` object of its OCI image config (Env, WorkingDir, User, Entrypoint, Cmd).

Templates come from registries, imports, or the builders registered in
`BUILDERS` (name -> `builder(rootfs_dir, progress) -> ImageConfig`), built on
first use. Two ship with the node, both from Debian's packages:

- `busybox`: busybox-static and its applet links; seconds to build.
- `debian` (`base`): Debian bookworm with Python 3 (pip, venv), git, curl, build-essential.
- `code-interpreter`: Debian with a Jupyter kernel (image_code_interpreter.py).
- `e2b-base`: a layer on `debian` with what E2B's default template has (image_e2b.py).

Builds go to a temporary directory and are renamed into place, under a file
lock, so a crash never leaves a half-made image that looks complete. A
builder's layer is keyed by a hash of its source: change the recipe and the
next use builds it afresh.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.node import image_code_interpreter, image_e2b
from sandlot.node.readiness import StartSpec

__all__ = ["ALIASES", "BASES", "BUILDERS", "Image", "ImageConfig"]

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
    """A template: read-only layers (bottom to top) plus its OCI config and where it came from."""

    name: str
    layers: tuple[Path, ...]
    config: ImageConfig
    source: str = ""
    digest: str = ""
    created_at: float = 0.0
    size: int = 0
    #: started in every new sandbox, which is handed out once it is ready
    start: StartSpec | None = None
    #: the team that made it (an opaque string, like a volume's owner); None: shared by every team
    owner: str | None = None

    @property
    def lowerdir(self) -> str:
        """The overlayfs `lowerdir` option: the top layer first."""
        return ":".join(str(p) for p in reversed(self.layers))

    @property
    def rootfs(self) -> Path:
        """The one directory of a single-layer image (a built-in); layered images have no single root."""
        if len(self.layers) != 1:
            raise errors.InvalidArgumentError(f"template {self.name!r} has {len(self.layers)} layers, not one")
        return self.layers[0]

    @property
    def has_glibc(self) -> bool:
        dirs = ("lib64", "lib/x86_64-linux-gnu")
        return any((layer / d / "ld-linux-x86-64.so.2").exists() for layer in self.layers for d in dirs)


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


#: What the `base` template holds beyond debootstrap's minbase: what agents expect to find.
DEBIAN_PACKAGES = [
    "python3", "python3-pip", "python3-venv", "python3-dev", "git", "curl", "ca-certificates",
    "build-essential", "procps", "less", "nano", "unzip", "zip", "openssh-client", "jq",
]  # fmt: skip


def _stream(cmd: list[str], progress: Progress, what: str, interesting: Callable[[str], bool]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            tail = [*tail, line.rstrip()][-20:]
            if interesting(line):
                progress(line.removeprefix("I: ").strip())
    if proc.returncode != 0:
        raise errors.InternalError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def build_debian(rootfs: Path, progress: Progress) -> ImageConfig:
    """Debian bookworm with Python 3 (pip, venv), git, curl and build-essential, from Debian's packages."""
    if shutil.which("debootstrap") is None:
        raise errors.RuntimeUnavailableError("debootstrap is not installed (Debian package debootstrap)")
    progress(f"building the Debian bookworm image with debootstrap from {DEBIAN_MIRROR} (a few minutes)")
    cmd = ["debootstrap", "--variant=minbase", "--include=python3,ca-certificates,procps", "bookworm"]
    _stream(
        [*cmd, str(rootfs), DEBIAN_MIRROR],
        progress,
        "debootstrap",
        lambda line: line.startswith("I: ") and any(w in line for w in ("Retrieving", "Installing", "Configuring")),
    )
    progress(f"installing {', '.join(DEBIAN_PACKAGES)}")
    apt = ["chroot", str(rootfs), "apt-get", "-q", "-o", "Dpkg::Use-Pty=0"]
    _stream([*apt, "update"], progress, "apt-get update", lambda line: False)
    _stream(
        [*apt, "install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES],
        progress,
        "apt-get install",
        lambda line: (
            (line.startswith(("Setting up", "Get:")) and " python3" in line) or line.startswith("Setting up git")
        ),
    )
    # A regular user, as E2B and most agent tooling expect one.
    subprocess.run(["chroot", str(rootfs), "useradd", "-m", "-u", "1000", "-s", "/bin/bash", "user"], check=True)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):  # dead weight in every sandbox
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(rootfs / junk)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    progress("Debian image built")
    return ImageConfig(env={"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}, cwd="/", user="root", cmd=["/bin/bash"])


BUILDERS: dict[str, Callable[[Path, Progress], ImageConfig]] = {
    "busybox": build_busybox,
    "debian": build_debian,
    "code-interpreter": image_code_interpreter.build_code_interpreter,
    image_e2b.E2B_BASE: image_e2b.build_e2b_base,
}
#: Built-ins that are one layer on top of another built-in: their builder gets a root that shows
#: the base image, and what it changes there (an overlay's upper directory) is their own layer.
BASES = {image_e2b.E2B_BASE: image_e2b.BASE}
#: Names that mean another image.
ALIASES = {"base": "debian", "code-interpreter-v1": "code-interpreter"}


def __getattr__(name: str) -> Any:
    # ImageStore lives in sandlot.node.oci.store, which imports this module's builders.
    if name == "ImageStore":
        from sandlot.node.oci.store import ImageStore

        return ImageStore
    raise AttributeError(name)
