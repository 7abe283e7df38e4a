"""Templates over the layer store: named images, built, pulled or imported, and GC.

    <root>/templates/<key>.json   {"name", "source", "digest", "layers": [ids, bottom to top],
                                   "config": {OCI config}, "created_at", "size"}
    <root>/layers/, blobs/, tmp/  see `layers`

A template exists once its JSON file is renamed into place, which happens only
after every layer it names is complete: a failed pull, import or build never
leaves a half-made template. Built-in templates (`BUILDERS` in
`sandlot.node.images`) are built on first use; their layer id hashes the
builder's source, so changing a recipe builds afresh instead of reusing a stale
layer. Pulls and builds hold the store's lock shared, GC holds it exclusively,
so GC never removes a layer a pull is about to publish.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import inspect
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.failpoints import failpoint
from sandlot.node import images as builtin
from sandlot.node.oci.export import export_layout
from sandlot.node.oci.layers import LayerStore
from sandlot.node.oci.layout import import_archive, import_layout
from sandlot.node.oci.pull import pull
from sandlot.node.oci.reference import Reference, looks_like_reference
from sandlot.node.oci.registry import RegistryConfig
from sandlot.node.readiness import StartSpec
from sandlot.node.rootfs import overlaid

__all__ = ["BUILT_IN_SOURCE", "ImageStore", "check_template_name"]

Progress = Callable[[str], None]
log = logging.getLogger("sandlot.node")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")


#: how a built-in template's `source` begins: each node makes its own (none is imported)
BUILT_IN_SOURCE = "built-in "


def check_template_name(name: str) -> str:
    if _NAME.match(name) or looks_like_reference(name):
        if looks_like_reference(name):
            Reference.parse(name)
        return name
    raise errors.InvalidArgumentError(
        f"bad template name {name!r}: use lowercase letters, digits, '.', '_' and '-' (or an image reference)",
        field="name",
    )


class ImageStore:
    """Templates under one directory, built, pulled or imported on demand and cached."""

    def __init__(
        self, root: Path, registries: dict[str, RegistryConfig] | None = None, *, registries_only: bool = False
    ) -> None:
        self.root = Path(root)
        self.layers = LayerStore(self.root)
        self.templates_dir = self.root / "templates"
        self.templates_dir.mkdir(parents=True, exist_ok=True)
        self.registries = dict(registries or {})
        #: pull only from the registries configured above (a server that must not reach elsewhere)
        self.registries_only = registries_only
        # _hidden: templates for this process's own use (a build step's sandbox), never on disk:
        # a process killed mid-build leaves nothing for the store's other users to trip on.
        self._hidden: dict[str, builtin.Image] = {}
        # built-ins whose new recipe failed to build here: this process keeps their old image
        self._kept: set[str] = set()

    # ------------------------------------------------------------ locks and files

    def _file(self, name: str) -> Path:
        return self.templates_dir / (hashlib.sha256(name.encode()).hexdigest()[:40] + ".json")

    @contextlib.contextmanager
    def _store_lock(self, mode: int) -> Iterator[None]:
        with open(self.root / ".store.lock", "w") as f:
            fcntl.flock(f, mode)
            yield

    @contextlib.contextmanager
    def _name_lock(self, name: str) -> Iterator[None]:
        with open(self._file(name).with_suffix(".lock"), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def _load(self, path: Path) -> builtin.Image | None:
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        layers = tuple(self.layers.fs(lid) for lid in d["layers"])
        if not all(self.layers.has(lid) for lid in d["layers"]):
            return None  # a layer went missing (removed by hand): treat as absent, rebuild or re-pull
        return builtin.Image(
            name=d["name"],
            layers=layers,
            config=builtin.ImageConfig.from_oci(d.get("config") or {}),
            source=d.get("source", ""),
            digest=d.get("digest", ""),
            created_at=float(d.get("created_at", 0)),
            size=int(d.get("size", 0)),
            start=StartSpec.from_dict(d.get("start")),
            owner=d.get("owner"),
        )

    def check_write(self, name: str, team: str | None, owner: str | None) -> None:
        """Refuse `team` (None: an admin) replacing a template that is not its own.

        A team may write a new name, or one it owns; a shared template (None)
        only by refreshing it as shared (a pull of its own reference). Called
        under the name's lock right before publishing, and by the API up front.
        """
        existing = self.get(name)
        if team is None or existing is None or existing.owner == team:
            return
        if existing.owner is None and owner is None:
            return
        raise errors.ConflictError(
            f"template name {existing.name!r} is taken (by another team, or shared by the server); choose another name",
            field="name",
        )

    def _publish(
        self,
        name: str,
        layer_ids: list[str],
        config: dict[str, Any],
        source: str,
        digest: str,
        team: str | None = None,
        owner: str | None = None,
    ) -> builtin.Image:
        """Write the template record (the caller holds the name's lock); `team` is who writes, `owner` who owns."""
        self.check_write(name, team, owner)
        size = sum(int(self.layers.meta(lid).get("size", 0)) for lid in layer_ids)
        record = {
            "name": name, "source": source, "digest": digest, "layers": layer_ids,
            "config": config, "created_at": time.time(), "size": size, "owner": owner,
        }  # fmt: skip
        failpoint("images.template.before_publish", name)
        tmp = self.templates_dir / f".{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        os.rename(tmp, self._file(name))
        image = self._load(self._file(name))
        assert image is not None
        return image

    # ------------------------------------------------------------ queries

    def get(self, name: str) -> builtin.Image | None:
        if name in self._hidden:
            return self._hidden[name]
        name = builtin.ALIASES.get(name, name)
        return self._load(self._file(name))

    def list_templates(self) -> list[builtin.Image]:
        found = (self._load(p) for p in sorted(self.templates_dir.glob("*.json")))
        return sorted((i for i in found if i is not None and not i.name.startswith(".")), key=lambda i: i.name)

    # ------------------------------------------------------------ making templates

    def ensure(self, name: str, progress: Progress = builtin._print_progress) -> builtin.Image:
        """The template `name`: built (a built-in) or pulled (an image reference) on first use; a built-in
        made by an older recipe is built afresh."""
        image = self.get(name)
        real = builtin.ALIASES.get(name, name)
        if image is not None:
            if not self._outdated(real, image):
                return image
            try:
                return self._build(real, progress)
            except errors.SandlotError as exc:  # (offline, say): the image it had still works
                log.warning("the built-in template %s has a new recipe, but rebuilding it failed; "
                            "this node keeps the one it has: %s", real, exc.message)  # fmt: skip
                self._kept.add(real)
                return image
        if real in builtin.BUILDERS:
            return self._build(real, progress)
        if looks_like_reference(name):
            return self.pull(name, progress=progress)
        known = ", ".join(sorted({*builtin.BUILDERS, *builtin.ALIASES, *(i.name for i in self.list_templates())}))
        raise errors.ImageNotFoundError(f"template {name!r} not found (templates here: {known})")

    def _outdated(self, real: str, image: builtin.Image) -> bool:
        """Whether `image` is a built-in made by an older recipe (of its own or of its base): the
        store's promise is that a changed recipe builds afresh, not that the first build stays."""
        if real not in builtin.BUILDERS or image.source != f"{BUILT_IN_SOURCE}{real}" or real in self._kept:
            return False
        base = self.get(builtin.BASES[real]) if real in builtin.BASES else None
        if real in builtin.BASES and (base is None or self._outdated(builtin.BASES[real], base)):
            return True
        return image.layers[-1].parent.name != _built_id(real, _layer_ids(base))

    def _build(self, real: str, progress: Progress) -> builtin.Image:
        builder = builtin.BUILDERS[real]
        base = self.ensure(builtin.BASES[real], progress) if real in builtin.BASES else None
        below = _layer_ids(base)
        lid = _built_id(real, below)
        with self._store_lock(fcntl.LOCK_SH), self._name_lock(real):
            image = self.get(real)
            if image is not None and image.layers[-1].parent.name == lid:
                return image

            def fill(fs: Path) -> dict[str, Any]:
                if base is None:
                    config = builder(fs, progress)
                else:  # the builder works on the base seen through an overlay; its upper is our layer
                    with overlaid(base.lowerdir, fs, self.layers.tmp) as root:
                        config = builder(root, progress)
                return {"config": config.to_oci(), "size": _tree_size(fs)}

            with self.layers.locked(lid):
                self.layers.add(lid, fill)
            config = self.layers.meta(lid)["config"]
            return self._publish(real, [*below, lid], config, source=f"{BUILT_IN_SOURCE}{real}", digest="")

    def pull(
        self,
        ref_text: str,
        *,
        name: str | None = None,
        platform: str | None = None,
        auth: RegistryConfig | None = None,
        progress: Progress = builtin._print_progress,
        team: str | None = None,
    ) -> builtin.Image:
        """Pull `ref_text` from its registry (again, if already here) into template `name` (default: the ref).

        `team` pulls it (None: the server or an admin). A pull under the reference's own name
        without credentials is shared (the registry decides what it holds); otherwise it is the team's.
        """
        ref = Reference.parse(ref_text)
        name = check_template_name(name or ref_text)
        if name in builtin.BUILDERS or name in builtin.ALIASES:
            raise errors.InvalidArgumentError(f"{name!r} is a built-in template's name", field="name")
        config = self.registries.get(ref.registry)
        if config is None and self.registries_only:
            raise errors.PermissionDeniedError(
                f"this server pulls only from its configured registries ({', '.join(sorted(self.registries))}), "
                f"not from {ref.registry}"
            )
        owner = None if name == ref_text and auth is None else team
        self.check_write(name, team, owner)  # before the download; again once it is done
        if auth is not None:  # credentials given with the call win; `insecure` stays the node's choice
            config = RegistryConfig(auth.username, auth.password, config.insecure if config else None)
        with self._store_lock(fcntl.LOCK_SH), self._name_lock(name):
            pulled = pull(ref, self.layers, config, platform=platform, progress=progress)
            return self._publish(
                name, pulled.layers, pulled.config, source=str(ref), digest=pulled.digest, team=team, owner=owner
            )

    def import_image(
        self,
        path: Path,
        name: str,
        *,
        tag: str | None = None,
        platform: str | None = None,
        progress: Progress = builtin._print_progress,
        team: str | None = None,
    ) -> builtin.Image:
        """A template from an OCI layout directory or a `docker save` / `podman save` tarball (`team`'s)."""
        path = Path(path)
        check_template_name(name)
        self.check_write(name, team, team)
        if name in builtin.BUILDERS or name in builtin.ALIASES:
            raise errors.InvalidArgumentError(f"{name!r} is a built-in template's name", field="name")
        if not path.exists():
            raise errors.InvalidArgumentError(f"{path} does not exist", field="path")
        with self._store_lock(fcntl.LOCK_SH), self._name_lock(name):
            if path.is_dir():
                got = import_layout(path, self.layers, tag=tag, platform=platform, progress=progress)
            else:
                got = import_archive(path, self.layers, tag=tag, platform=platform, progress=progress)
            return self._publish(
                name, got.layers, got.config, source=f"import {path}", digest=got.digest, team=team, owner=team
            )

    def export(
        self, name: str, dest: Path, *, tag: str = "latest", progress: Progress = builtin._print_progress
    ) -> str:
        """Write template `name` as image `tag` of the OCI layout `dest`; return the manifest's digest."""
        image = self.get(name)
        if image is None:
            raise errors.ImageNotFoundError(f"template {name!r} not found")
        with self._store_lock(fcntl.LOCK_SH):
            return export_layout(list(image.layers), _oci_config(image), Path(dest), tag=tag, progress=progress)

    def add_layers(
        self,
        name: str,
        layer_ids: list[str],
        config: dict[str, Any],
        source: str,
        digest: str = "",
        team: str | None = None,
    ) -> builtin.Image:
        """Publish a template over layers already in the store (imports, builds), `team`'s."""
        check_template_name(name)
        with self._name_lock(name):
            return self._publish(name, layer_ids, config, source, digest, team=team, owner=team)

    def set_start(self, name: str, start: StartSpec | None) -> builtin.Image:
        """Give template `name` a start command and readiness check (None: remove them)."""
        image = self.get(name)
        if image is None:
            raise errors.ImageNotFoundError(f"template {name!r} not found")
        with self._name_lock(image.name):
            path = self._file(image.name)
            record = json.loads(path.read_text())
            record["start"] = start.validate().to_dict() if start else None
            tmp = self.templates_dir / f".{uuid.uuid4().hex}.tmp"
            tmp.write_text(json.dumps(record, indent=1))
            os.rename(tmp, path)
        image = self._load(path)
        assert image is not None
        return image

    def config_of(self, name: str) -> dict[str, Any]:
        """The full OCI `config` object a template was published with (labels and ports included)."""
        image = self.get(name)
        if image is None:
            raise errors.ImageNotFoundError(f"template {name!r} not found")
        return dict(json.loads(self._file(image.name).read_text()).get("config") or {})

    def add_hidden(self, name: str, layer_ids: list[str], config: dict[str, Any]) -> builtin.Image:
        """A template for this process's own use (a build step's sandbox): in memory only, never
        listed, removed with drop_hidden; its layers count as used for this process's GC."""
        assert name.startswith(".")
        image = builtin.Image(
            name=name,
            layers=tuple(self.layers.fs(lid) for lid in layer_ids),
            config=builtin.ImageConfig.from_oci(config),
            source="internal",
            created_at=time.time(),
        )
        self._hidden[name] = image
        return image

    def drop_hidden(self, name: str) -> None:
        assert name.startswith(".")
        self._hidden.pop(name, None)

    def sweep(self) -> list[Path]:
        """Remove what killed pulls, builds and uploads of processes now gone left in the store."""
        return self.layers.sweep_tmp()

    @contextlib.contextmanager
    def adding(self) -> Iterator[LayerStore]:
        """Hold off GC while layers for a new template are being added."""
        with self._store_lock(fcntl.LOCK_SH):
            yield self.layers

    def add(self, name: str, rootfs: Path, config: builtin.ImageConfig) -> builtin.Image:
        """Publish an already unpacked root filesystem as a one-layer template (moved, not copied)."""
        check_template_name(name)
        if self.get(name) is not None:
            raise errors.FileExistsError_(f"template {name!r} already exists")
        lid = "local-" + uuid.uuid4().hex
        with self.adding() as layers:

            def fill(fs: Path) -> dict[str, Any]:
                fs.rmdir()
                os.rename(rootfs, fs)
                return {"size": _tree_size(fs)}

            layers.add(lid, fill)
            return self.add_layers(name, [lid], config.to_oci(), source="added")

    # ------------------------------------------------------------ removal and GC

    def remove(self, name: str, in_use: Iterable[str] = ()) -> list[str]:
        """Delete template `name` and every layer no other template uses; return the layers freed."""
        image = self.get(name)
        if image is None:
            raise errors.ImageNotFoundError(f"template {name!r} not found")
        busy = {builtin.ALIASES.get(n, n) for n in in_use}
        if image.name in busy:
            raise errors.ConflictError(f"template {image.name!r} is used by running sandboxes; kill them first")
        with self._name_lock(image.name):
            self._file(image.name).unlink(missing_ok=True)
        return self.gc()

    def gc(self, *, prune_build_cache: bool = False, wait: float = 10.0) -> list[str]:
        """Remove every layer no template references (and download debris); return their ids.

        Layers of cached build steps count as referenced unless `prune_build_cache`
        drops the step cache first (the next build then runs every step again).
        A pull or build in progress (minutes, for a debootstrap) holds the store
        shared; GC waits at most `wait` seconds for them, else frees nothing now
        (the next GC does).
        """
        with open(self.root / ".store.lock", "w") as lock:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return []
                    time.sleep(0.1)
            return self._collect(prune_build_cache)

    def _collect(self, prune_build_cache: bool) -> list[str]:
        """GC proper; the caller holds the store lock exclusively."""
        if prune_build_cache:
            for entry in (self.root / "build-cache").glob("*.json"):
                entry.unlink(missing_ok=True)
        used = {p.parent.name for image in self._hidden.values() for p in image.layers}
        # Templates and the build cache's steps hold layers.
        for path in [*self.templates_dir.glob("*.json"), *(self.root / "build-cache").glob("*.json")]:
            with contextlib.suppress(OSError, ValueError, KeyError):
                used.update(json.loads(path.read_text())["layers"])
        freed = [lid for lid in self.layers.ids() if lid not in used]
        for lid in freed:
            self.layers.remove(lid)
        self.layers.clear_tmp()
        return freed


def _oci_config(image: builtin.Image) -> dict[str, Any]:
    return image.config.to_oci()


def _layer_ids(image: builtin.Image | None) -> tuple[str, ...]:
    return tuple(p.parent.name for p in image.layers) if image else ()


def _built_id(real: str, below: tuple[str, ...]) -> str:
    """The id of the layer the built-in `real`'s current recipe makes on the layers `below`."""
    return (
        "built-" + hashlib.sha256(f"{real}\0{_recipe(builtin.BUILDERS[real])}\0{' '.join(below)}".encode()).hexdigest()
    )


@functools.cache  # (every create asks whether its built-in is current: sources do not change meanwhile)
def _recipe(builder: Callable[..., Any]) -> str:
    """What a built-in's layer is keyed by: its recipe's source.

    For builders in `sandlot.node.images`: the builder function, the base Debian recipe
    and its package list, not the whole module, so that an unrelated edit there does not
    rebuild every built-in in a cache several checkouts share. For a builder in a module
    of its own (`code-interpreter`): that module, constants included, and the base recipe.
    """
    module = inspect.getmodule(builder)
    own = builder if module is builtin else module
    parts = [getattr(builder, "__qualname__", ""), repr(builtin.DEBIAN_PACKAGES)]
    for obj in (own, builtin.build_debian):
        try:
            parts.append(inspect.getsource(obj))  # type: ignore[arg-type]
        except (OSError, TypeError):
            parts.append(repr(obj))
    return "\0".join(parts)


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total
