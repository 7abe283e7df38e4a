"""The read-only bundle every sandbox mounts at /.sandlot.

It holds the agent (a static Go binary, so it runs in any image: busybox, musl,
glibc) and `lib/statx-fix.so`, a preload for glibc images under gVisor (see
`STATX_FIX_C`). Both are built from the sources shipped in this package the
first time a node needs them, into `<cache>/<hash of the sources>/`, so an
upgraded package never runs a stale agent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from sandlot import errors

__all__ = ["AGENT_SOURCE", "MOUNT_POINT", "Bundle", "ensure_bundle"]

#: Where the bundle appears inside every sandbox.
MOUNT_POINT = "/.sandlot"
AGENT_SOURCE = Path(__file__).resolve().parent.parent / "agent" / "go"

# gVisor release 20221219 (Debian 12's runsc) rejects statx(2) calls that carry
# AT_NO_AUTOMOUNT with EINVAL, although Linux defines the flag as a no-op for
# statx. GNU coreutils 9 passes it, so `ls -l` and `stat` fail with "Invalid
# argument" in every Debian image. Dropping the flag before the syscall is
# exactly equivalent on Linux and makes them work. Musl ignores
# /etc/ld.so.preload, so only glibc programs ever load this.
STATX_FIX_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    return (int) syscall(SYS_statx, dirfd, path, flags & ~AT_NO_AUTOMOUNT, mask, buf);
}
"""


class Bundle:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def agent(self) -> Path:
        return self.path / "sandlot-agent"

    @property
    def statx_fix(self) -> Path:
        return self.path / "lib" / "statx-fix.so"

    #: The preload's path as a sandbox sees it.
    statx_fix_in_sandbox = f"{MOUNT_POINT}/lib/statx-fix.so"
    agent_in_sandbox = f"{MOUNT_POINT}/sandlot-agent"


def _source_hash() -> str:
    h = hashlib.sha256(STATX_FIX_C.encode())
    for f in sorted(AGENT_SOURCE.rglob("*")):
        if f.is_file() and f.suffix in (".go", ".mod"):
            h.update(str(f.relative_to(AGENT_SOURCE)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _run(cmd: list[str], what: str, **kw: object) -> None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise errors.RuntimeUnavailableError(
            f"cannot build {what}: {cmd[0]} is not installed (Debian packages golang-go and gcc)"
        ) from None
    if res.returncode != 0:
        raise errors.InternalError(f"building {what} failed:\n{res.stderr[-4000:]}")


#: Go's build cache, shared by every node and data directory of the host: a first build compiles
#: Go's standard library (minutes on a loaded 2-core host), later ones only link. Go locks it itself.
GO_CACHE = Path(os.environ.get("SANDLOT_GO_CACHE", "/var/cache/sandlot/go"))


def _go_cache(fallback: Path) -> Path:
    """The host's shared Go cache, or one beside the bundle where that is not writable."""
    try:
        GO_CACHE.mkdir(parents=True, exist_ok=True)
        if os.access(GO_CACHE, os.W_OK):
            return GO_CACHE
    except OSError:
        pass
    return fallback / ".go"


def ensure_bundle(cache: Path) -> Bundle:
    """Build the bundle for the current sources unless it is already there."""
    if not (AGENT_SOURCE / "go.mod").exists():
        raise errors.RuntimeUnavailableError(f"the agent's source is missing from {AGENT_SOURCE}")
    bundle = Bundle(Path(cache) / _source_hash())
    if bundle.agent.exists() and bundle.statx_fix.exists():
        return bundle
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if bundle.agent.exists() and bundle.statx_fix.exists():
            return bundle
        tmp = cache / f".{bundle.path.name}.building"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "lib").mkdir(parents=True)
        try:
            env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOPROXY="off", GOTOOLCHAIN="local")
            go_cache = _go_cache(cache)
            env.setdefault("GOCACHE", str(go_cache / "build"))
            env.setdefault("GOPATH", str(go_cache / "path"))
            out = str(tmp / "sandlot-agent")
            _run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "."], "the agent", cwd=AGENT_SOURCE, env=env)
            (tmp / "statx-fix.c").write_text(STATX_FIX_C)
            _run(
                ["gcc", "-O2", "-shared", "-fPIC", "-o", str(tmp / "lib/statx-fix.so"), str(tmp / "statx-fix.c")],
                "the statx preload",
            )
            os.unlink(tmp / "statx-fix.c")
            for p in (tmp, tmp / "lib"):
                os.chmod(p, 0o755)
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(bundle.path)
            os.rename(tmp, bundle.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return bundle
