"""E2B's JavaScript SDKs, pinned in package.json / package-lock.json, installed once into a cache.

    python tests/e2b_compat_js/npm_cache.py     # what setup.sh --test runs; prints the directory

The directory is keyed by the lock file's hash (`$SANDLOT_TEST_NPM_CACHE`, default
/var/cache/sandlot/e2b-js/<hash>), so a version bump installs afresh and every
worktree with the same pins shares one install. `npm ci` runs in a temporary
directory renamed into place, under a file lock: never half-installed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("SANDLOT_TEST_NPM_CACHE", "/var/cache/sandlot/e2b-js"))
PINNED = ("package.json", "package-lock.json")


def ensure() -> Path:
    """The directory whose node_modules holds the pinned SDKs (installed now if it is not yet)."""
    digest = hashlib.sha256(b"".join((HERE / f).read_bytes() for f in PINNED)).hexdigest()[:16]
    target = CACHE / digest
    if (target / "node_modules" / ".package-lock.json").exists():
        return target
    if shutil.which("npm") is None:
        raise RuntimeError("npm is missing: scripts/setup.sh --test installs Node.js and npm")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "node_modules" / ".package-lock.json").exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f"{digest}.", dir=CACHE))
        try:
            for f in PINNED:
                shutil.copy(HERE / f, tmp / f)
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=tmp,
                check=True,
                timeout=600,
                stdout=sys.stderr,
            )
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


if __name__ == "__main__":
    print(ensure())
    sys.exit(0)
