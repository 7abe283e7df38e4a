"""Build a template from a Dockerfile: each step a layer (or a config change), each step cached.

A step's cache key hashes the previous step's key and everything the step
depends on (its text after substitution, build args, environment, working
directory, user, and for COPY/ADD the sources' contents), so a rebuild with one
changed line reruns that line and the ones after it, nothing before it.

RUN steps run inside a Sandlot sandbox (gVisor by default) started from the
layers so far; what the command changed is the sandbox's overlay upper
directory, which already is a layer in the store's format and is copied in as
the step's layer. Nothing runs on the host. The template is published only
after the last step: a failing step (its output and exit code in a
`BuildError`) or a Dockerfile error leaves no template behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import posixpath
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandlot import errors
from sandlot.failpoints import afailpoint
from sandlot.node import safepath
from sandlot.node.dockerfile import context as ctx
from sandlot.node.dockerfile.parser import Instruction, parse, substitute
from sandlot.node.images import Image
from sandlot.node.netpolicy import NetworkPolicy
from sandlot.node.node import Node
from sandlot.node.oci.store import check_template_name
from sandlot.node.sandbox_export import NODE_PATHS
from sandlot.node.spec import Limits, SandboxSpec

__all__ = ["BuildOptions", "build"]

Progress = Callable[[str], None]
#: a RUN step's sandbox: roomier than a default sandbox (compilers, package installs)
STEP_LIMITS = Limits(cpu=2.0, memory_mb=2048, pids=4096, disk_mb=16384)
OUTPUT_TAIL = 4000


@dataclass
class BuildOptions:
    name: str
    context: Path
    dockerfile: str  # its text
    build_args: dict[str, str] = field(default_factory=dict)
    runtime: str = "gvisor"
    step_timeout: float = 3600.0
    #: RUN steps' network: "full" (like `docker build`: package managers work) or "none"
    network: str = "full"
    #: the team building (None: an admin): the template is its own, and FROM sees only what it may use
    team: str | None = None
    #: whether the builder may start FROM this template (the API's view of the team)
    may_use: Callable[[Image], bool] = lambda image: True


@dataclass
class _State:
    layers: list[str]
    config: dict[str, Any]
    key: str

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            k, _, v = str(item).partition("=")
            out[k] = v
        return out

    def set_env(self, env: dict[str, str]) -> None:
        self.config["Env"] = [f"{k}={v}" for k, v in env.items()]


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()


class _Build:
    def __init__(self, node: Node, opts: BuildOptions, progress: Progress) -> None:
        self.node = node
        self.store = node.images
        self.opts = opts
        self.progress = progress
        self.args: dict[str, str] = {}
        self.cache_dir = self.store.root / "build-cache"
        self.cache_dir.mkdir(exist_ok=True)
        self.hidden: list[str] = []

    # ------------------------------------------------------------ cache

    def _cached(self, key: str) -> _State | None:
        try:
            d = json.loads((self.cache_dir / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        if not all(self.store.layers.has(lid) for lid in d["layers"]):
            return None
        return _State(list(d["layers"]), dict(d["config"]), key)

    def _remember(self, state: _State) -> None:
        tmp = self.cache_dir / f".{state.key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"layers": state.layers, "config": state.config}))
        os.replace(tmp, self.cache_dir / f"{state.key}.json")

    # ------------------------------------------------------------ steps

    async def run(self) -> Image:
        check_template_name(self.opts.name)
        self.store.check_write(self.opts.name, self.opts.team, self.opts.team)  # before the steps run
        steps = parse(self.opts.dockerfile)
        state: _State | None = None
        for n, inst in enumerate(steps, 1):
            self.progress(f"Step {n}/{len(steps)} : {inst.cmd} {inst.args}")
            if state is None:
                if inst.cmd == "ARG":
                    self._arg(inst)
                    continue
                state = await self._from(inst)
                continue
            state = await self._step(inst, state)
        assert state is not None
        image = await asyncio.to_thread(
            self.store.add_layers,
            self.opts.name,
            state.layers,
            state.config,
            f"build of {self.opts.name}",
            team=self.opts.team,
        )
        self.progress(f"built template {self.opts.name} ({len(state.layers)} layers)")
        return image

    def _arg(self, inst: Instruction) -> str:
        key, default = inst.pairs()[0]
        value = self.opts.build_args.get(key, None if default == "\0" else substitute(default, self.args))
        if value is not None:
            self.args[key] = value
        return f"{key}={value}"

    async def _from(self, inst: Instruction) -> _State:
        ref = substitute(inst.args.strip(), self.args)
        try:
            image = await asyncio.to_thread(self.store.ensure, ref, self.progress)
            if not self.opts.may_use(image):
                raise errors.ImageNotFoundError(f"template {ref!r} not found")
        except errors.ImageNotFoundError as exc:
            raise errors.ImageNotFoundError(f"Dockerfile line {inst.line}: FROM {ref}: {exc}") from None
        layers = [p.parent.name for p in image.layers]
        config = self.store.config_of(image.name)
        return _State(layers, config, _key("FROM", layers, config))

    async def _step(self, inst: Instruction, state: _State) -> _State:
        env = state.env()
        scope = {**self.args, **env}
        cfg = dict(state.config)
        if inst.cmd in ("RUN", "COPY", "ADD"):
            return await self._layer_step(inst, state, scope)
        if inst.cmd == "ARG":
            what = self._arg(inst)
            return _State(state.layers, cfg, _key(state.key, "ARG", what))
        text = substitute(inst.args, scope)
        if inst.cmd == "ENV":
            for k, v in inst.pairs():
                env[k] = substitute(v, {**self.args, **env})
            new = _State(state.layers, cfg, "")
            new.set_env(env)
        elif inst.cmd == "WORKDIR":
            wd = posixpath.normpath(posixpath.join(cfg.get("WorkingDir") or "/", text.strip()))
            cfg["WorkingDir"] = wd
            new = _State(state.layers, cfg, "")
            await self._ensure_dir(new, wd, inst)
        elif inst.cmd == "USER":
            cfg["User"] = text.strip()
            new = _State(state.layers, cfg, "")
        elif inst.cmd == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in text.split():
                ports[p if "/" in p else f"{p}/tcp"] = {}
            cfg["ExposedPorts"] = ports
            new = _State(state.layers, cfg, "")
        elif inst.cmd == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update({k: substitute(v, scope) for k, v in inst.pairs()})
            cfg["Labels"] = labels
            new = _State(state.layers, cfg, "")
        else:  # ENTRYPOINT, CMD
            argv = inst.exec_form()
            cfg["Entrypoint" if inst.cmd == "ENTRYPOINT" else "Cmd"] = argv or ["/bin/sh", "-c", inst.args]
            new = _State(state.layers, cfg, "")
        new.key = _key(state.key, inst.cmd, text, new.config, new.layers)
        return new

    async def _ensure_dir(self, state: _State, wd: str, inst: Instruction) -> None:
        """WORKDIR makes its directory when no layer has it (as Docker does)."""
        for lid in reversed(state.layers):
            path = self.store.layers.fs(lid) / wd.lstrip("/")
            if os.path.lexists(path):
                if os.path.isdir(path) and not os.path.islink(path):
                    return
                break
        lid = "wd-" + _key(state.layers, wd)

        def fill(fs: Path) -> dict[str, Any]:
            if wd != "/":
                (fs / wd.lstrip("/")).mkdir(parents=True)
            return {"size": 0}

        with self.store.adding() as layers, layers.locked(lid):
            layers.add(lid, fill)
        state.layers = [*state.layers, lid]

    async def _layer_step(self, inst: Instruction, state: _State, scope: dict[str, str]) -> _State:
        cfg = state.config
        wd = cfg.get("WorkingDir") or "/"
        sources: ctx.Sources | None = None
        if inst.cmd == "RUN":
            argv = inst.exec_form() or ["/bin/sh", "-c", inst.args]
            key = _key(state.key, "RUN", argv, sorted(self.args.items()))
        else:
            words = [substitute(w, scope) for w in (inst.exec_form() or inst.words())]
            if len(words) < 2:
                raise inst.fail("needs a source and a destination")
            sources = await asyncio.to_thread(ctx.gather, inst, self.opts.context, words[:-1])
            key = _key(state.key, inst.cmd, inst.flags, words[-1], wd, sources.digest)
        cached = self._cached(key)
        if cached is not None:
            if sources:
                sources.close()
            self.progress(" ---> Using cache")
            return cached
        if inst.cmd == "RUN":
            lid = await self._run(inst, state, argv, key)
        else:
            assert sources is not None
            lid = "copy-" + key
            dest = words[-1]
            try:

                def fill(fs: Path) -> dict[str, Any]:
                    ctx.copy_into(fs, inst, sources, dest, wd)
                    return {"size": 0}

                with self.store.adding() as layers, layers.locked(lid):
                    await asyncio.to_thread(layers.add, lid, fill)
            finally:
                sources.close()
        new = _State([*state.layers, lid], dict(cfg), key)
        self._remember(new)
        return new

    async def _run(self, inst: Instruction, state: _State, argv: list[str], key: str) -> str:
        hidden = f".build-{state.key[:32]}"
        await asyncio.to_thread(self.store.add_hidden, hidden, state.layers, state.config)
        self.hidden.append(hidden)
        spec = SandboxSpec(
            image=hidden, runtime=self.opts.runtime, limits=STEP_LIMITS, network=NetworkPolicy.parse(self.opts.network)
        )
        sbx = await self.node.create(spec)
        await afailpoint("build.step.after_sandbox", sbx.id)
        tail: list[str] = []

        def out(text: str) -> None:
            for line in text.splitlines():
                self.progress(line)
            tail.append(text)
            while sum(map(len, tail)) > OUTPUT_TAIL * 2:
                tail.pop(0)

        try:
            wd = state.config.get("WorkingDir") or "/"
            user = state.config.get("User") or None
            if wd != "/":
                await sbx.run(["mkdir", "-p", wd], user="root")
            t0 = time.monotonic()
            limit = self.opts.step_timeout
            res = await sbx.run(
                argv, env=dict(self.args), cwd=wd, user=user, timeout=limit, on_stdout=out, on_stderr=out
            )
            if res.exit_code != 0:
                output = "".join(tail)[-OUTPUT_TAIL:]
                raise errors.BuildError(
                    f"Dockerfile line {inst.line}: RUN {inst.args} failed with exit code {res.exit_code}"
                    f"{' (timed out)' if res.timed_out else ''}; its output ends:\n{output}",
                    exit_code=res.exit_code,
                    output=output,
                )
            self.progress(f" ---> ran in {time.monotonic() - t0:.1f} s")
            lid = "run-" + key
            upper = sbx.layer.upper

            def fill(fs: Path) -> dict[str, Any]:
                cp = subprocess.run(["cp", "-a", f"{upper}/.", str(fs)], capture_output=True, text=True)
                if cp.returncode != 0:
                    raise errors.InternalError(f"saving the RUN step's layer failed: {cp.stderr.strip()}")
                for rel in NODE_PATHS:  # never through a link the step made (safepath)
                    safepath.remove(fs, rel)
                return {"size": 0}

            with self.store.adding() as layers, layers.locked(lid):
                await asyncio.to_thread(layers.add, lid, fill)
            return lid
        finally:
            try:
                await self.node.kill(sbx.id)
            except errors.SandlotError as exc:
                self.progress(f"cleaning up the step's sandbox: {exc}")

    async def cleanup(self) -> None:
        for name in self.hidden:
            await asyncio.to_thread(self.store.drop_hidden, name)


async def build(node: Node, opts: BuildOptions, progress: Progress) -> Image:
    """Build the Dockerfile `opts.dockerfile` in `opts.context` into template `opts.name`."""
    b = _Build(node, opts, progress)
    try:
        return await b.run()
    finally:
        await b.cleanup()
