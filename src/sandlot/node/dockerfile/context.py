"""COPY and ADD: files from the build context (or a URL) into a new layer, never outside it.

Sources are resolved inside the context (a `..` or a symlink leading out is an
error); the layer is written through `unpack._Tree`, which never follows a
symlink, so a context holding `x -> /etc` cannot make a later file land in the
host's /etc. The cache key of a step is the hash of every source's names,
modes and contents, so editing a copied file reruns that step and the ones after.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from sandlot.node.dockerfile.parser import Instruction
from sandlot.node.oci.unpack import _Tree
from sandlot.safetar import extract_all

__all__ = ["Sources", "copy_into", "gather"]

MAX_URL_BYTES = 1 << 30


@dataclass
class Sources:
    files: list[tuple[Path, str, bool]]  # (path on the host, its name in a directory, downloaded)
    digest: str  # what the step's cache key hashes
    tmp: tempfile.TemporaryDirectory[str] | None = None  # downloads live here until the step is done

    def close(self) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()


def _inside(context: Path, name: str, inst: Instruction) -> list[Path]:
    root = Path(os.path.realpath(context))
    rel = posixpath.normpath(name.lstrip("/"))
    if rel == ".." or rel.startswith("../"):
        raise inst.fail(f"{name!r} is outside the build context")
    if any(c in rel for c in "*?["):
        matches = sorted(p for p in root.rglob("*") if fnmatch.fnmatch(str(p.relative_to(root)), rel))
        if not matches:
            raise inst.fail(f"no file in the build context matches {name!r}")
        candidates = matches
    else:
        candidates = [root / rel if rel != "." else root]
    out = []
    for c in candidates:
        real = Path(os.path.realpath(c))
        if real != root and not real.is_relative_to(root):
            raise inst.fail(f"{name!r} leads outside the build context")
        if not os.path.lexists(c):
            raise inst.fail(f"{name!r} is not in the build context")
        out.append(real)
    return out


def _hash_tree(h: hashlib._Hash, path: Path, base: Path) -> None:
    st = os.lstat(path)
    h.update(f"{path.relative_to(base)}\0{st.st_mode}\0".encode())
    if stat.S_ISLNK(st.st_mode):
        h.update(os.readlink(path).encode())
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    elif stat.S_ISDIR(st.st_mode):
        for child in sorted(path.iterdir()):
            _hash_tree(h, child, base)


def _download(url: str, dest_dir: Path, inst: Instruction) -> Path:
    name = posixpath.basename(httpx.URL(url).path) or "index.html"
    target = dest_dir / name
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60) as r:
            if r.status_code != 200:
                raise inst.fail(f"{url} answered {r.status_code}")
            n = 0
            with open(target, "wb") as f:
                for chunk in r.iter_bytes(1 << 20):
                    n += len(chunk)
                    if n > MAX_URL_BYTES:
                        raise inst.fail(f"{url} is larger than {MAX_URL_BYTES} bytes")
                    f.write(chunk)
    except httpx.HTTPError as exc:
        raise inst.fail(f"cannot download {url}: {exc}") from None
    os.chmod(target, 0o600)
    return target


def gather(inst: Instruction, context: Path, srcs: list[str]) -> Sources:
    """Resolve (and for ADD, download) the sources of a COPY/ADD; hash them for the cache."""
    h = hashlib.sha256()
    files: list[tuple[Path, str, bool]] = []
    tmp: tempfile.TemporaryDirectory[str] | None = None
    for src in srcs:
        if src.startswith(("http://", "https://")):
            if inst.cmd != "ADD":
                raise inst.fail("COPY takes files from the build context; use ADD for a URL")
            tmp = tmp or tempfile.TemporaryDirectory(prefix="sandlot-add-")
            path = _download(src, Path(tmp.name), inst)
            h.update(f"url\0{src}\0".encode())
            _hash_tree(h, path, path.parent)
            files.append((path, path.name, True))
            continue
        for path in _inside(context, src, inst):
            base = path.parent
            h.update(b"file\0")
            _hash_tree(h, path, base)
            files.append((path, path.name, False))
    return Sources(files, h.hexdigest(), tmp)


def _ids(inst: Instruction) -> tuple[int, int] | None:
    spec = dict(inst.flags).get("chown")
    if not spec:
        return None
    user, _, group = spec.partition(":")
    try:
        uid = int(user)
        return uid, int(group) if group else uid
    except ValueError:
        raise inst.fail(f"--chown={spec}: give numeric ids (uid[:gid])") from None


def copy_into(layer: Path, inst: Instruction, sources: Sources, dest: str, workdir: str) -> None:
    """Write the sources into the empty layer directory `layer` at `dest` (relative to `workdir`)."""
    tree = _Tree(layer, f"{inst.cmd} at line {inst.line}")
    target = posixpath.normpath(posixpath.join(workdir, dest)).lstrip("/")
    single = len(sources.files) == 1 and not sources.files[0][0].is_dir()
    into_dir = dest.endswith("/") or not single
    ids = _ids(inst)
    chmod = dict(inst.flags).get("chmod")
    mode = int(chmod, 8) if chmod else None

    def own(path: str, is_link: bool = False) -> None:
        os.chown(path, *(ids or (0, 0)), follow_symlinks=False)
        if mode is not None and not is_link:
            os.chmod(path, mode)

    def put(src: Path, rel: str) -> None:
        st = os.lstat(src)
        tree.ensure_dir(posixpath.dirname(rel))
        abs_ = tree.abs(rel)
        if stat.S_ISDIR(st.st_mode):
            tree.clear(rel, keep_dir=True)
            tree.ensure_dir(rel)
            os.chmod(abs_, stat.S_IMODE(st.st_mode))
            own(abs_)
            for child in sorted(os.listdir(src)):
                put(src / child, posixpath.join(rel, child))
            return
        tree.clear(rel)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), abs_)
            own(abs_, is_link=True)
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(abs_, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
            os.chmod(abs_, stat.S_IMODE(st.st_mode))
            own(abs_)

    for src, name, downloaded in sources.files:
        # ADD unpacks local archives into the destination directory
        if inst.cmd == "ADD" and not downloaded and src.is_file() and tarfile.is_tarfile(src):
            tree.ensure_dir(target)
            with tarfile.open(src) as tar:
                extract_all(tar, Path(tree.abs(target)))
        elif src.is_dir():
            tree.ensure_dir(target)
            for child in sorted(os.listdir(src)):
                put(src / child, posixpath.join(target, child))
        elif into_dir:
            put(src, posixpath.join(target, name))
        elif not target:
            raise inst.fail("cannot copy a file onto /")
        else:
            put(src, target)
