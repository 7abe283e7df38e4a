"""Image figures: pull+unpack from a local registry beside skopeo+umoci, and a one-line Dockerfile rebuild.

- pull: a fresh layer store pulls an image (~100 MB unpacked; ~20 MB with --quick) from
  Debian's docker-registry on 127.0.0.1 and unpacks it; the baseline, in the same run,
  is `skopeo copy` of the same image to an OCI layout plus `umoci unpack` of it. Both
  write to the same filesystem (/var/tmp).
- rebuild: a Dockerfile built once (unmeasured), then rebuilt with only its last line
  changed; the baseline is the same build with an empty step cache.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

from lib import ROOT, summary

sys.path.insert(0, str(ROOT))

from sandlot.node import Node

__all__ = ["image_figures"]

FULL_TREES = ["/usr/lib/python3.11", "/usr/lib/python3/dist-packages"]
QUICK_TREES = ["/usr/share/perl"]


def _layer(tar_path: Path, tree: str) -> None:
    with tarfile.open(tar_path, "w") as tar:
        tar.add(tree, arcname=tree.lstrip("/"))


def _make_image(work: Path, trees: list[str]) -> tuple[Path, int]:
    layout = work / "layout"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:bench"], check=True)
    size = 0
    for i, tree in enumerate(trees):
        tar_path = work / f"layer{i}.tar"
        _layer(tar_path, tree)
        size += tar_path.stat().st_size
        subprocess.run(["umoci", "raw", "add-layer", "--image", f"{layout}:bench", str(tar_path)], check=True)
        tar_path.unlink()
    return layout, size


def _pull_figures(plan: Any, work: Path) -> dict[str, Any]:
    from tests.images.registry import Registry

    from sandlot.node.oci.registry import RegistryConfig
    from sandlot.node.oci.store import ImageStore

    trees = QUICK_TREES if plan.quick else FULL_TREES
    layout, size = _make_image(work, trees)
    reg = Registry(work / "registry").start()
    try:
        ref = reg.push(layout, "bench", "bench/image:1")
        runs = 1 if plan.quick else 3
        ours, base = [], []
        for i in range(runs):
            store_dir = work / f"store-{i}"
            store = ImageStore(store_dir, {reg.host: RegistryConfig(insecure=True)})
            t0 = time.perf_counter()
            store.pull(ref, progress=lambda line: None)
            ours.append(time.perf_counter() - t0)
            shutil.rmtree(store_dir)
            oci, bundle = work / f"skopeo-{i}", work / f"umoci-{i}"
            t0 = time.perf_counter()
            subprocess.run(
                ["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{oci}:bench"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            subprocess.run(["umoci", "unpack", "--image", f"{oci}:bench", str(bundle)], check=True)
            base.append(time.perf_counter() - t0)
            shutil.rmtree(oci)
            shutil.rmtree(bundle)
    finally:
        reg.stop()
    return {
        "image pull": {**summary(ours), "unpacked_mb": size / 1e6, "layers": len(trees)},
        "skopeo copy + umoci unpack": summary(base),
    }


DOCKERFILE = """\
FROM busybox
COPY payload /srv/payload
RUN for i in $(seq 1 200); do echo line $i >> /srv/generated; done
RUN wc -l /srv/generated
ENV STAMP={stamp}
CMD ["echo", "{last}"]
"""


async def _rebuild_figures(node: Node, work: Path) -> dict[str, Any]:
    from sandlot.node.dockerfile.builder import BuildOptions, build

    ctx = work / "context"
    ctx.mkdir()
    (ctx / "payload").write_bytes(uuid.uuid4().bytes * 1000)  # new per run: nothing cached from earlier runs
    stamp = uuid.uuid4().hex

    async def one(name: str, last: str) -> float:
        opts = BuildOptions(name=name, context=ctx, dockerfile=DOCKERFILE.format(stamp=stamp, last=last))
        t0 = time.perf_counter()
        await build(node, opts, lambda line: None)
        return time.perf_counter() - t0

    cold = await one("bench-build", "first")
    warm = await one("bench-build-2", "changed")
    for name in ("bench-build", "bench-build-2"):
        node.images.remove(name)
    return {"rebuild last line changed": summary([warm]), "build with an empty cache": summary([cold])}


async def image_figures(node: Node, plan: Any, work: Path) -> dict[str, Any]:
    """Both figures; a missing tool is a note, never a crash."""
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    missing = [t for t in ("docker-registry", "skopeo", "umoci") if shutil.which(t) is None]
    if missing:
        out["image pull"] = {"skipped": f"{', '.join(missing)} not installed (scripts/setup.sh --test)"}
    else:
        print("images: pull + unpack vs skopeo + umoci", flush=True)
        out.update(_pull_figures(plan, work / "pull"))
    print("images: rebuild with the last Dockerfile line changed", flush=True)
    (work / "build").mkdir()
    out.update(await _rebuild_figures(node, work / "build"))
    return out
