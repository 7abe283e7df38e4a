"""The `e2b-base` image: what code written for E2B finds in E2B's default template.

E2B's `base` template is Debian with Python (`python` and `pip` on the PATH, not just
`python3`), Node.js and npm, git, curl and sudo, and a user `user` (home `/home/user`,
passwordless sudo) that commands run as. This image is one layer of Debian's packages
on top of Sandlot's `debian` (`base`) image, so it costs only that layer to build once
the `debian` image is there: `python-is-python3`, `nodejs`, `npm` and `sudo`.

`sudo` works under gVisor too, which runs every process with no_new_privs (so no setuid
program can gain root): `/usr/local/bin/sudo` is a link to the agent, which runs the
command as root for the users in `/etc/sandlot/sudoers` (here `user`); see the agent's
sudo.go. Debian's own sudo is there as well (it works under crun).

`pip install` works as it does on E2B: bookworm marks its Python as externally
managed (PEP 668), which makes pip refuse every install; the marker is removed here,
so pip installs into `~/.local` as `user` (and system-wide as root).

The E2B facade serves it under E2B's name `base` (`sandlot.api.e2b.control`); Sandlot's
own `base` is unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sandlot import errors
from sandlot.node.bundle import MOUNT_POINT

if TYPE_CHECKING:  # images.py imports this module to register the builder
    from sandlot.node.images import ImageConfig

__all__ = ["BASE", "E2B_BASE", "PACKAGES", "build_e2b_base"]

#: the Sandlot template name of this image
E2B_BASE = "e2b-base"
#: the image this one is a layer on top of
BASE = "debian"

PACKAGES = ("python-is-python3", "nodejs", "npm", "sudo")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUDOERS = "# E2B's templates: the default user may run anything as root\nuser ALL=(ALL:ALL) NOPASSWD: ALL\n"


def _apt(root: Path, *args: str) -> None:
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": DEFAULT_PATH, "LC_ALL": "C"}
    cmd = ["chroot", str(root), "apt-get", "-q", "-o", "Dpkg::Use-Pty=0", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        output = (res.stdout + res.stderr)[-3000:]
        raise errors.InternalError(f"apt-get {args[0]} in the e2b-base image failed:\n{output}")


#: Debian's /etc/profile asks `id -u` whether the login is root's, and root's ~/.profile runs `mesg n`
#: with no terminal to act on. E2B's SDKs run every command as `bash -l -c ...`, so each command
#: paid those programs' start: under gVisor's ptrace platform a dynamically linked program costs
#: tens of milliseconds to start, as much as the rest of a command's round trip. Bash answers the
#: first from its own `$EUID`; other shells still ask `id`. (line in the file, its replacement)
LOGIN_EDITS = {
    "etc/profile": (
        'if [ "$(id -u)" -eq 0 ]; then',
        'if [ "${BASH_VERSION:+$EUID}" = 0 ] || { [ -z "${BASH_VERSION-}" ] && [ "$(id -u)" -eq 0 ]; }; then',
    ),
    "root/.profile": ("mesg n 2> /dev/null || true", "if [ -t 0 ]; then mesg n 2> /dev/null || true; fi"),
}


def _login_without_forks(root: Path) -> None:
    """Apply LOGIN_EDITS: the same PATH and terminal settings for every user and shell, without
    starting a program on every login. A file whose line reads otherwise (another Debian release)
    is left as it is."""
    for name, (line, instead) in LOGIN_EDITS.items():
        path = root / name
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        lines = text.split("\n")
        if line in lines:
            lines[lines.index(line)] = instead
            path.write_text("\n".join(lines))


def build_e2b_base(root: Path, progress: Callable[[str], None]) -> ImageConfig:
    """Add E2B's tools and conventions to a root that holds the `debian` image (an overlay: what
    changes here becomes this image's layer)."""
    if shutil.which("chroot") is None:
        raise errors.RuntimeUnavailableError("chroot is not installed (Debian package coreutils)")
    progress(f"building the e2b-base image: {', '.join(PACKAGES)} from Debian's packages")
    _apt(root, "update")
    _apt(root, "install", "-y", "--no-install-recommends", *PACKAGES)
    _apt(root, "clean")
    for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):  # dead weight in every sandbox
        shutil.rmtree(root / junk, ignore_errors=True)
        (root / junk / "partial").mkdir(parents=True, exist_ok=True)
    for marker in (root / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    sudoers = root / "etc/sudoers.d/user"
    sudoers.write_text(SUDOERS)
    os.chmod(sudoers, 0o440)
    subprocess.run(["chroot", str(root), "usermod", "-aG", "sudo", "user"], check=True, capture_output=True)
    # gVisor runs every process with no_new_privs, so setuid sudo cannot work there: the agent's
    # sudo (sandlot/agent/go/sudo.go) serves the users listed here, through this link, first on PATH.
    (root / "etc/sandlot").mkdir(exist_ok=True)
    (root / "etc/sandlot/sudoers").write_text("user\n")
    os.chmod(root / "etc/sandlot/sudoers", 0o644)
    link = root / "usr/local/bin/sudo"
    link.unlink(missing_ok=True)
    link.symlink_to(f"{MOUNT_POINT}/sandlot-agent")
    _login_without_forks(root)
    progress("e2b-base image built")
    from sandlot.node.images import ImageConfig

    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "HOME": "/home/user"}
    return ImageConfig(env=env, cwd="/home/user", user="user", cmd=["/bin/bash"])
