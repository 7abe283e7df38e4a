"""The `code-interpreter` image: Debian bookworm with a real Jupyter kernel.

Built with debootstrap from Debian's packages only (python3, ipykernel,
jupyter_client and the usual data stack), so it needs no PyPI and no network
inside the sandbox. The image does not start the kernel: the API's code
interpreter (`sandlot.api.interpreter`) starts a small driver through the
agent when a sandbox first runs code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sandlot import errors

if TYPE_CHECKING:  # images.py imports this module to register the builder
    from sandlot.node.images import ImageConfig

__all__ = ["PACKAGES", "build_code_interpreter"]

DEBIAN_MIRROR = os.environ.get("SANDLOT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Installed with apt inside the new root (debootstrap's own resolver fails to
#: configure python3-zmq when asked for all of them at once).
PACKAGES = (
    "python3-ipykernel",
    "python3-jupyter-client",
    "python3-matplotlib",
    "python3-numpy",
    "python3-pandas",
    "python3-pil",
)


def build_code_interpreter(rootfs: Path, progress: Callable[[str], None]) -> ImageConfig:
    """Debian bookworm (minbase) with python3, ipykernel and matplotlib/numpy/pandas (a few minutes)."""
    if shutil.which("debootstrap") is None:
        raise errors.RuntimeUnavailableError("debootstrap is not installed (Debian package debootstrap)")
    progress(f"building the code-interpreter image with debootstrap from {DEBIAN_MIRROR} (a few minutes)")
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
            if line.startswith("I: ") and ("Retrieving" in line or "Configuring" in line):
                progress(line[3:].strip())
    if proc.returncode != 0:
        raise errors.InternalError("debootstrap failed:\n" + "\n".join(tail))
    progress(f"installing {len(PACKAGES)} packages with apt")
    apt = ["chroot", str(rootfs), "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    res = subprocess.run(
        apt, capture_output=True, text=True, env={"DEBIAN_FRONTEND": "noninteractive", "PATH": DEFAULT_PATH}
    )
    if res.returncode != 0:
        raise errors.InternalError(
            "apt-get install in the new image failed:\n" + res.stdout[-2000:] + res.stderr[-2000:]
        )
    subprocess.run(["chroot", str(rootfs), "apt-get", "clean"], check=False)
    subprocess.run(["chroot", str(rootfs), "useradd", "-m", "-u", "1000", "-s", "/bin/bash", "user"], check=True)
    with contextlib.suppress(FileNotFoundError):  # apt caches are dead weight in every sandbox
        shutil.rmtree(rootfs / "var/cache/apt/archives")
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    progress("code-interpreter image built")
    from sandlot.node.images import ImageConfig

    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    return ImageConfig(env=env, cwd="/home/user", user="root", cmd=["/bin/bash"])
