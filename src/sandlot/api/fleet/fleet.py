"""`Fleet`: many node daemons behind the API's one seam (`NodeClient`).

An API replica started with `--no-local-node` drives a `Fleet` where
`sandlot serve` drives its `LocalNode`; `SandboxService` and every route stay
as they are. The fleet routes each call:

- a call about a sandbox goes to the node its record names (`SandboxInfo.node`);
  a node whose heartbeats stopped raises `NodeUnreachableError` at once (no
  request waits on a dead node), and the service reports the sandbox `unknown`;
- a create is placed (`placement.py`) on a live, active node, its room reserved
  there in the database while it is made (api/reservations.py): concurrent
  creates through any replicas never overcommit a node; a create that mounts
  volumes goes to the node that holds them (volumes never move), or fails at
  once saying why it cannot go there;
- a checkpoint's calls (fork, get, delete) go to the node that holds it;
- templates, pools and volumes: listed across nodes; a template missing on the
  chosen node is copied there from a node that has it before the create
  (nodes fetch layers from each other, through the replica). Where a volume
  is, each node's heartbeat says (`NodeInfo.volumes`, in the registry: known
  to every replica, and still known while its node is down); one made since
  the last heartbeats is found by asking the live nodes.

Nodes recover their own sandboxes when they (re)join (routes.py); the
replica itself holds no state, so `recover` has nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

from sqlalchemy.engine import Connection

from sandlot import errors
from sandlot.agent.handle import SandboxAgent
from sandlot.api.fleet import moves
from sandlot.api.fleet.placement import DEFAULT_OVERCOMMIT, NodeTaken, Overcommit, fits, rank, refusal
from sandlot.api.fleet.registry import NodeRecord, NodeRegistry, scope
from sandlot.api.reservations import Amount, Reservations
from sandlot.api.store import Store
from sandlot.node.client import NodeClient, TemplateEvents
from sandlot.node.protocol import (
    BUILT_IN_SOURCE,
    CheckpointInfo,
    Limits,
    NetworkPolicy,
    NodeInfo,
    PoolInfo,
    RecoveryReport,
    RegistryAuth,
    SandboxMetric,
    SandboxSpec,
    SandboxStatus,
    TemplateInfo,
    TemplateStart,
    VolumeInfo,
)

__all__ = ["Fleet", "NodeTaken"]

log = logging.getLogger("sandlot.api")

T = TypeVar("T")

#: makes the client of a node daemon: (name, url, node token, default runtime) -> NodeClient
#: (the composition root, api/app.py, supplies `RemoteNode`)
Connect = Callable[[str, str, str, str], NodeClient]

#: how stale the node registry a data-plane call sees may be (heartbeats come every few seconds)
REGISTRY_TTL_S = 1.0


class Fleet(NodeClient):
    """Every node of the fleet, as one `NodeClient`."""

    def __init__(
        self,
        store: Store,
        token: str,
        connect: Connect,
        *,
        node_timeout_s: float = 30.0,
        default_runtime: str = "gvisor",
        overcommit: Overcommit = DEFAULT_OVERCOMMIT,
    ) -> None:
        if not token:
            raise errors.InvalidArgumentError(
                "a replica without a local node needs the fleet's node token (--node-token or SANDLOT_NODE_TOKEN)",
                field="node_token",
            )
        self.name = "fleet"
        self.default_runtime = default_runtime
        self.store = store
        self.registry = NodeRegistry(store)
        self.reservations = Reservations(store)
        self.token = token
        self._connect = connect
        self.node_timeout_s = node_timeout_s
        self.overcommit = overcommit
        self._clients: dict[str, NodeClient] = {}
        self._urls: dict[str, str] = {}
        self._rows: list[NodeRecord] = []
        self._read_at = -REGISTRY_TTL_S
        # sandbox id -> its node
        self._placed: dict[str, str] = {}
        # volume id -> (its node, its name), as found (volumes never move)
        self._volumes: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------ nodes

    def client(self, rec: NodeRecord) -> NodeClient:
        """The client of a node (made again when its address changed)."""
        have = self._clients.get(rec.name)
        if have is None or self._urls.get(rec.name) != rec.url:
            self._urls[rec.name] = rec.url
            default = rec.info.default_runtime if rec.info else self.default_runtime
            have = self._clients[rec.name] = self._connect(rec.name, rec.url, self.token, default)
        return have

    async def live(self, *, fresh: bool = False) -> list[NodeRecord]:
        return [n for n in await self._registry(fresh) if n.live(self.node_timeout_s)]

    async def _registry(self, fresh: bool = False) -> list[NodeRecord]:
        """The registry's rows, read at most once per REGISTRY_TTL_S (each data-plane call needs them)."""
        now = time.monotonic()
        if fresh or now - self._read_at > REGISTRY_TTL_S:
            self._rows, self._read_at = await self.registry.list(), now
        return self._rows

    async def _record(self, name: str) -> NodeRecord | None:
        return next((n for n in await self._registry() if n.name == name), None)

    async def _node_of(self, sandbox_id: str, *, fresh: bool = False) -> str | None:
        """The node a sandbox is on: remembered once read (it moves only when a drain moves it, and
        then `status`, which every request asks first, finds its old node without it and reads again)."""
        name = None if fresh else self._placed.get(sandbox_id)
        if name is None:
            rec = await self.store.get_sandbox(sandbox_id, None)
            if rec is None:
                return None
            name = self._placed[sandbox_id] = rec.node
        return name

    def placed(self, sandbox_id: str, name: str) -> None:
        """The sandbox is on node `name` now (a move switched its record)."""
        self._placed[sandbox_id] = name

    async def node(self, name: str) -> NodeClient:
        """The client of a live node of the fleet (NodeUnreachableError: its heartbeats stopped)."""
        return await self._node(name)

    async def _node(self, name: str) -> NodeClient:
        rec = await self._record(name)
        if rec is None or not rec.live(self.node_timeout_s):  # the registry as it is now, not as cached:
            rec = next((n for n in await self._registry(fresh=True) if n.name == name), None)  # back meanwhile?
        if rec is None:
            raise errors.SandboxNotFoundError(f"node {name!r} is no longer in the fleet")
        if not rec.live(self.node_timeout_s):
            raise errors.NodeUnreachableError(
                f"node {name} is unreachable (no heartbeat for {self.node_timeout_s:.0f}s)"
            )
        return self.client(rec)

    async def _holder(self, sandbox_id: str) -> NodeClient:
        name = await self._node_of(sandbox_id)
        if name is None:
            raise errors.SandboxNotFoundError(f"sandbox {sandbox_id} not found")
        return await self._node(name)

    async def _first(self, what: str, call: Callable[[NodeClient], Awaitable[T]]) -> T:
        """The answer of the first live node that has `what` (NotFoundError from each one else)."""
        last: errors.SandlotError = errors.NotFoundError(f"{what} not found on any live node")
        for rec in await self.live():
            try:
                return await call(self.client(rec))
            except (errors.NotFoundError, errors.NodeUnreachableError) as exc:
                last = exc
        raise last

    async def _each(self, call: Callable[[NodeClient], Awaitable[T]]) -> list[T]:
        """Every live node's answer, asked all at once, in the registry's order (an unreachable one is skipped)."""
        return [answer for _, answer in await self._ask(call)]

    async def _ask(
        self, call: Callable[[NodeClient], Awaitable[T]], silent: list[str] | None = None
    ) -> list[tuple[NodeRecord, T]]:
        """`_each`, each answer with the node that gave it; `silent` gets the names of those that did not."""

        async def ask(rec: NodeRecord) -> list[tuple[NodeRecord, T]]:
            try:
                return [(rec, await call(self.client(rec)))]
            except errors.NodeUnreachableError as exc:
                log.warning("%s", exc)
                if silent is not None:
                    silent.append(rec.name)
                return []

        answers = await asyncio.gather(*(ask(rec) for rec in await self.live()), return_exceptions=True)
        for answer in answers:  # every call has ended: the first failure is the answer
            if isinstance(answer, BaseException):
                raise answer
        return [a for answer in answers if not isinstance(answer, BaseException) for a in answer]

    async def info(self) -> NodeInfo:
        infos = [n.info for n in await self.live() if n.info is not None]
        if not infos:
            raise errors.RuntimeUnavailableError("no node of the fleet is up")
        return NodeInfo(
            name=self.name,
            version=infos[0].version,
            default_runtime=self.default_runtime,
            runtimes=sorted({r for i in infos for r in i.runtimes}),
            accelerators={r: a for i in infos for r, a in i.accelerators.items()},
            sandboxes=sum(i.sandboxes for i in infos),
            cpus=sum(i.cpus for i in infos),
            memory_total_bytes=sum(i.memory_total_bytes for i in infos),
            memory_available_bytes=sum(i.memory_available_bytes for i in infos),
            disk_total_bytes=sum(i.disk_total_bytes for i in infos),
            disk_free_bytes=sum(i.disk_free_bytes for i in infos),
            load_1m=sum(i.load_1m for i in infos),
            templates=sorted({t for i in infos for t in i.templates}),
            volumes=[v for i in infos for v in i.volumes],
        )

    async def runtimes(self) -> dict[str, dict[str, Any]]:
        report: dict[str, dict[str, Any]] = {}
        for answer in await self._each(lambda n: n.runtimes()):
            for name, facts in answer.items():
                if name not in report or facts.get("available"):
                    report[name] = facts
        return report

    async def prepare(self, template: str | None) -> None:
        """Wait for a live node (each node prepares itself when it joins)."""
        while not [n for n in await self.live() if n.state == "active"]:
            await asyncio.sleep(1.0)

    async def recover(self, wanted: Mapping[str, SandboxSpec]) -> RecoveryReport:
        return RecoveryReport()  # nodes recover their own sandboxes when they join (routes.py)

    async def close(self, *, kill_sandboxes: bool) -> None:
        for client in self._clients.values():
            await client.close(kill_sandboxes=False)  # a replica never kills a fleet's sandboxes
        self._clients.clear()

    # ------------------------------------------------------------ sandboxes

    async def create(self, spec: SandboxSpec) -> SandboxStatus:
        rows = await self._registry(fresh=True)
        home = self._volumes_node(spec, rows)
        if home is not None:  # its volumes are there, and it can take the sandbox
            candidates = [home]
        else:
            live = [n for n in rows if n.live(self.node_timeout_s)]
            candidates = rank(live, spec, spec.node_labels, timeout=self.node_timeout_s, overcommit=self.overcommit)
        if not candidates:
            raise self._nowhere(spec, rows)
        try:
            placed = await self.place(candidates, spec, lambda node: node.create(spec))
        except errors.NodeUnreachableError as exc:
            if home is None:
                raise
            raise errors.NodeUnreachableError(
                f"{_volumes_at(spec, self._volumes)} on node {home.name}, which does not answer ({exc}): "
                "a sandbox that mounts it can run only there, once the node is back"
            ) from None
        if placed is not None:
            return placed[1]
        if home is not None:
            raise errors.RuntimeUnavailableError(
                f"{_volumes_at(spec, self._volumes)} on node {home.name}, which has no room left for it now "
                "(other creates took it): a sandbox that mounts it can run only there"
            )
        raise self._nowhere(spec, await self._registry(fresh=True))

    async def place(
        self, candidates: list[NodeRecord], spec: SandboxSpec, make: Callable[[NodeClient], Awaitable[T]]
    ) -> tuple[str, T] | None:
        """`make(node)` on the first candidate with room for `spec` (reserved meanwhile; its template copied
        there first): that node's name and the answer. None: none had room; an unreachable one's error
        when that is why none took it."""
        last: errors.SandlotError | None = None
        for rec in candidates:
            node = self.client(rec)
            try:
                async with self.reserve(rec.name, spec):
                    if rec.info is not None and spec.image not in rec.info.templates:
                        await self.copy_template(spec.image, node)
                    return rec.name, await make(node)
            except NodeTaken:
                log.info("placing on %s: other creates took its room meanwhile; trying the next node", rec.name)
            except errors.NodeUnreachableError as exc:
                log.warning("placing on %s: %s; trying the next node", rec.name, exc)
                last = exc
        if last is not None:
            raise last
        return None

    def _nowhere(self, spec: SandboxSpec, rows: list[NodeRecord]) -> errors.SandlotError:
        """The error of a create no node can take: each node, and why not."""
        why = []
        for rec in rows:
            live = rec.live(self.node_timeout_s)
            reason = refusal(rec, spec, spec.node_labels, self.overcommit) if live else "is unreachable"
            why.append(f"node {rec.name} {reason or 'has no room left (other creates took it)'}")
        return errors.RuntimeUnavailableError(
            f"no node of the fleet can take a {spec.runtime} sandbox with {spec.limits.cpu:g} cpu, "
            f"{spec.limits.memory_mb} MiB of memory and {spec.limits.disk_mb} MiB of disk now: "
            + ("; ".join(why) or "the fleet has no nodes")
            + " (see `sandlot nodes ls`)"
        )

    def _volumes_node(self, spec: SandboxSpec, rows: list[NodeRecord]) -> NodeRecord | None:
        """The node holding the volumes `spec` mounts (None: it mounts none), where it can take the
        sandbox now; otherwise an error that names the volumes, their node and why it cannot."""
        if not spec.volumes:
            return None
        where: dict[str, list[str]] = {}  # node -> names of the volumes on it
        for m in spec.volumes:
            found = self._volumes.get(m.volume_id) or next(
                ((r.name, v.name) for r in rows if r.info for v in r.info.volumes if v.volume_id == m.volume_id), None
            )
            if found is None:
                raise errors.VolumeNotFoundError(f"volume {m.volume_id} is on no node of the fleet")
            self._volumes[m.volume_id] = found
            where.setdefault(found[0], []).append(found[1])
        if len(where) > 1:
            spread = "; ".join(f"{', '.join(map(repr, names))} on node {node}" for node, names in sorted(where.items()))
            raise errors.InvalidArgumentError(
                f"a sandbox can mount volumes of one node only, and these are on different nodes: {spread}",
                field="volumes",
            )
        ((name, _),) = where.items()
        what = f"{_volumes_at(spec, self._volumes)} on node {name}"
        rec = next((r for r in rows if r.name == name), None)
        if rec is None:
            raise errors.VolumeNotFoundError(f"{what}, which is no longer in the fleet (sandlot nodes rm)")
        if not rec.live(self.node_timeout_s):
            raise errors.NodeUnreachableError(
                f"{what}, which is unreachable (no heartbeat for {self.node_timeout_s:.0f}s): "
                "a sandbox that mounts it can run only there, once the node is back"
            )
        why = refusal(rec, spec, spec.node_labels, self.overcommit)
        if why is not None:
            raise errors.RuntimeUnavailableError(f"{what}, which {why}: a sandbox that mounts it can run only there")
        return rec

    def reserve(self, name: str, spec: SandboxSpec) -> contextlib.AbstractAsyncContextManager[None]:
        """Reserve the sandbox's room on node `name` while it is made there (NodeTaken: it no longer fits).

        Checked against the node's row and every reservation on it, in one transaction serialized
        per node across replicas: concurrent creates never overcommit a node together."""
        labels = dict(spec.node_labels)

        def check(c: Connection, held: Amount) -> None:
            rec = NodeRegistry.read(c, name, held)
            if rec is None or not rec.live(self.node_timeout_s) or not fits(rec, spec, labels, self.overcommit):
                raise NodeTaken(name)

        limits = spec.limits
        room = Amount(sandboxes=1, disk_mb=limits.disk_mb, memory_mb=limits.memory_mb, cpu=limits.cpu)
        return self.reservations.holding(scope(name), room, check)

    async def copy_template(self, name: str, dest: NodeClient) -> None:
        """Copy a template to `dest` from a node that has it, with its owner and start command.

        Not copied: one `dest` has already (made since its last heartbeat, or by another create a
        moment ago), a built-in (each node makes its own; a node refuses to import one) and one no
        node has (the node makes or pulls it itself)."""
        if await dest.get_template(name) is not None:
            return
        for rec in await self.live():
            if rec.name == dest.name or rec.info is None or name not in rec.info.templates:
                continue
            source = self.client(rec)
            info = await source.get_template(name)
            if info is None:
                continue  # deleted since its heartbeat
            if info.source.startswith(BUILT_IN_SOURCE):
                return
            log.info("copying template %s from node %s to node %s", name, rec.name, dest.name)
            layout = await source.export_template(name, "latest")
            async for _ in await dest.import_template(name, layout, team=info.owner):
                pass
            if info.start is not None:
                await dest.set_template_start(name, info.start)
            return

    async def status(self, sandbox_id: str) -> SandboxStatus | None:
        return await self._ask_holder(sandbox_id, lambda n: n.status(sandbox_id))

    async def state(self, sandbox_id: str) -> tuple[str, str | None] | None:
        return await self._ask_holder(sandbox_id, lambda n: n.state(sandbox_id))

    async def _ask_holder(self, sandbox_id: str, ask: Callable[[NodeClient], Awaitable[T | None]]) -> T | None:
        """`ask` the node that holds the sandbox; None when none does."""
        name = await self._node_of(sandbox_id)
        if name is None or await self._record(name) is None:
            name = await self._node_of(sandbox_id, fresh=True)  # moved since it was remembered?
            if name is None or await self._record(name) is None:
                return None  # never made, or its node was removed from the fleet (`sandlot nodes rm`)
        answer = await ask(await self._node(name))
        if answer is None and (moved := await self._node_of(sandbox_id, fresh=True)) != name and moved:
            return await ask(await self._node(moved))  # moved off that node meanwhile
        return answer

    async def kill(self, sandbox_id: str) -> None:
        await (await self._holder(sandbox_id)).kill(sandbox_id)

    async def pause(self, sandbox_id: str, *, memory: bool = False) -> None:
        await (await self._holder(sandbox_id)).pause(sandbox_id, memory=memory)

    async def resume(self, sandbox_id: str) -> None:
        await (await self._holder(sandbox_id)).resume(sandbox_id)

    async def hibernate(self, sandbox_id: str, *, memory: bool = True) -> None:
        await (await self._holder(sandbox_id)).hibernate(sandbox_id, memory=memory)

    async def exit_reason(self, sandbox_id: str) -> str | None:
        try:
            return await (await self._holder(sandbox_id)).exit_reason(sandbox_id)
        except (errors.SandboxNotFoundError, errors.NodeUnreachableError):
            return None

    async def exited(self) -> dict[str, str]:
        died: dict[str, str] = {}
        for answer in await self._each(lambda n: n.exited()):
            died.update(answer)
        for sid in died:
            self._placed.pop(sid, None)
        return died

    async def metrics(
        self, sandbox_id: str, start: float | None = None, end: float | None = None
    ) -> list[SandboxMetric]:
        try:
            return await (await self._holder(sandbox_id)).metrics(sandbox_id, start, end)
        except (errors.SandboxNotFoundError, errors.NodeUnreachableError):
            return []

    async def file_metadata(self, sandbox_id: str, paths: list[str]) -> dict[str, dict[str, str] | None]:
        return await (await self._holder(sandbox_id)).file_metadata(sandbox_id, paths)

    async def set_file_metadata(self, sandbox_id: str, path: str, metadata: dict[str, str]) -> None:
        await (await self._holder(sandbox_id)).set_file_metadata(sandbox_id, path, metadata)

    async def wake(self, sandbox_id: str) -> None:
        """Wake it where it is; on a draining node, a persistent sandbox first moves to another
        (moves.py): it wakes there, from its disk. One that cannot move (no room elsewhere, a
        move cut short: its old copy is whole) wakes where it is."""
        name = await self._node_of(sandbox_id)
        rec = await self._record(name) if name else None
        if name is not None and rec is not None and rec.state == "draining":
            try:
                await moves.move(self, sandbox_id, name)
            except errors.SandlotError as exc:
                log.warning("waking %s on draining node %s, not moving it: %s", sandbox_id, name, exc)
        await (await self._holder(sandbox_id)).wake(sandbox_id)

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxStatus:
        return await (await self._holder(sandbox_id)).set_network(sandbox_id, policy)

    async def agent(self, sandbox_id: str) -> SandboxAgent:
        return await (await self._holder(sandbox_id)).agent(sandbox_id)

    async def export_sandbox(self, sandbox_id: str, tag: str) -> AsyncIterator[bytes]:
        return await (await self._holder(sandbox_id)).export_sandbox(sandbox_id, tag)

    async def export_disk(self, sandbox_id: str) -> AsyncIterator[bytes]:
        return await (await self._holder(sandbox_id)).export_disk(sandbox_id)

    async def import_disk(self, sandbox_id: str, disk: AsyncIterable[bytes]) -> SandboxStatus:
        raise errors.InvalidArgumentError("a fleet moves a sandbox between its nodes itself (moves.py)")

    # ------------------------------------------------------------ checkpoints (where they were taken)

    async def checkpoint(self, sandbox_id: str, name: str, *, memory: bool = False) -> CheckpointInfo:
        return await (await self._holder(sandbox_id)).checkpoint(sandbox_id, name, memory=memory)

    async def restore(self, sandbox_id: str, checkpoint_id: str) -> None:
        await (await self._holder(sandbox_id)).restore(sandbox_id, checkpoint_id)

    async def fork(self, checkpoint_id: str, count: int) -> list[SandboxStatus]:
        async def call(n: NodeClient) -> list[SandboxStatus]:
            await n.get_checkpoint(checkpoint_id)  # NotFound: another node holds it
            return await n.fork(checkpoint_id, count)

        return await self._first(f"checkpoint {checkpoint_id}", call)

    async def get_checkpoint(self, checkpoint_id: str) -> CheckpointInfo:
        return await self._first(f"checkpoint {checkpoint_id}", lambda n: n.get_checkpoint(checkpoint_id))

    async def list_checkpoints(self, sandbox_id: str | None = None) -> list[CheckpointInfo]:
        if sandbox_id is not None:
            return await (await self._holder(sandbox_id)).list_checkpoints(sandbox_id)
        return [c for answer in await self._each(lambda n: n.list_checkpoints()) for c in answer]

    async def delete_checkpoint(self, checkpoint_id: str) -> None:
        async def call(n: NodeClient) -> None:
            await n.get_checkpoint(checkpoint_id)
            await n.delete_checkpoint(checkpoint_id)

        await self._first(f"checkpoint {checkpoint_id}", call)

    # ------------------------------------------------------------ volumes (on the node that made them)

    async def create_volume(self, team: str, name: str, size_mb: int = 1024) -> VolumeInfo:
        rows = await self._registry(fresh=True)
        if (home := _holder_of(rows, team, name)) is not None:
            raise errors.ConflictError(f"volume {name!r} already exists (on node {home.name})")
        if any(v.name == name for answer in await self._each(lambda n: n.list_volumes(team)) for v in answer):
            raise errors.ConflictError(f"volume {name!r} already exists")
        # a volume takes disk, not compute: any node with room for a small sandbox can hold it
        spec = SandboxSpec(image="", runtime=self.default_runtime, limits=Limits(cpu=0.01, memory_mb=16, disk_mb=16))
        live = [n for n in rows if n.live(self.node_timeout_s)]
        ranked = rank(live, spec, timeout=self.node_timeout_s, overcommit=self.overcommit)
        if not ranked:
            raise errors.RuntimeUnavailableError("no live node of the fleet can hold a volume")
        made = await self.client(ranked[0]).create_volume(team, name, size_mb)
        self._volumes[made.volume_id] = (ranked[0].name, name)
        return made

    async def _locate_volume(self, team: str, name: str) -> tuple[NodeRecord, VolumeInfo]:
        """The team's volume `name` and the node holding it: the one whose heartbeat lists it; else
        (made since the last heartbeats) the live node that has it. A volume whose node is down is
        NodeUnreachableError, naming both: it cannot be used anywhere else."""
        home = _holder_of(await self._registry(), team, name)
        if home is not None and not home.live(self.node_timeout_s):  # the registry as it is now, not cached
            home = _holder_of(await self._registry(fresh=True), team, name)
        if home is not None:
            if not home.live(self.node_timeout_s):
                raise errors.NodeUnreachableError(
                    f"volume {name!r} is on node {home.name}, which is unreachable "
                    f"(no heartbeat for {self.node_timeout_s:.0f}s): it can be used once that node is back"
                )
            try:
                return home, await self.client(home).find_volume(team, name)
            except errors.VolumeNotFoundError:
                pass  # deleted since its heartbeat (and perhaps made again elsewhere)
            except errors.NodeUnreachableError as exc:
                raise errors.NodeUnreachableError(
                    f"volume {name!r} is on node {home.name}, which does not answer ({exc}): "
                    "it can be used once that node is back"
                ) from None
        silent: list[str] = []  # live nodes that did not answer: one of them may hold it
        for rec, found in await self._ask(lambda n: _or_none(n.find_volume(team, name)), silent):
            if found is not None:
                return rec, found
        if silent:
            raise errors.NodeUnreachableError(
                f"volume {name!r} is on no node that answered, and node {', '.join(sorted(silent))} does not "
                "answer: it may be there, and can be used once that node is back"
            )
        raise errors.VolumeNotFoundError(f"volume {name!r} not found")

    async def find_volume(self, team: str, name: str) -> VolumeInfo:
        rec, found = await self._locate_volume(team, name)
        self._volumes[found.volume_id] = (rec.name, name)
        return found

    async def list_volumes(self, team: str) -> list[VolumeInfo]:
        """The team's volumes on every node: as live nodes answer, and as the last heartbeats of the
        others list them (`reachable` false: a volume never moves, so it is still there)."""
        rows = await self._registry(fresh=True)  # (the nodes asked are the live ones of these rows)
        answered = await self._ask(lambda n: n.list_volumes(team))
        out = [v for _, answer in answered for v in answer]
        heard = {rec.name for rec, _ in answered}
        for rec in rows:
            if rec.name in heard or rec.info is None:
                continue
            for v in rec.info.volumes:
                if v.team == team:
                    kept = {"created_at": v.created_at, "size_mb": v.size_mb, "node": rec.name, "reachable": False}
                    out.append(VolumeInfo(name=v.name, volume_id=v.volume_id, **kept))
        return sorted(out, key=lambda v: (v.created_at, v.volume_id))

    async def delete_volume(self, team: str, name: str) -> None:
        rec, found = await self._locate_volume(team, name)
        await self.client(rec).delete_volume(team, name)
        self._volumes.pop(found.volume_id, None)

    # ------------------------------------------------------------ templates (every node)

    async def get_template(self, name: str) -> TemplateInfo | None:
        """From a node whose heartbeat lists it (one request per create, not one per node); else from any."""
        for rec in await self.live():
            if rec.info is not None and name in rec.info.templates:
                try:
                    found = await self.client(rec).get_template(name)
                except errors.NodeUnreachableError:
                    continue
                if found is not None:
                    return found
                break  # deleted since its heartbeat: ask every node
        for answer in await self._each(lambda n: n.get_template(name)):
            if answer is not None:
                return answer
        return None

    async def list_templates(self) -> list[TemplateInfo]:
        seen: dict[str, TemplateInfo] = {}
        for answer in await self._each(lambda n: n.list_templates()):
            for t in answer:
                seen.setdefault(t.name, t)
        return sorted(seen.values(), key=lambda t: t.name)

    async def _builder(self) -> NodeClient:
        spec = SandboxSpec(image="", runtime=self.default_runtime)
        ranked = rank(await self.live(), spec, timeout=self.node_timeout_s, overcommit=self.overcommit)
        if not ranked:
            raise errors.RuntimeUnavailableError("no live node of the fleet is up")
        return self.client(ranked[0])

    async def fetch_template(self, ref: str, auth: RegistryAuth, *, team: str | None = None) -> None:
        await self._each(lambda n: n.fetch_template(ref, auth, team=team))

    async def pull_template(
        self,
        ref: str,
        *,
        name: str | None = None,
        platform: str | None = None,
        auth: RegistryAuth | None = None,
        team: str | None = None,
    ) -> TemplateEvents:
        return await (await self._builder()).pull_template(ref, name=name, platform=platform, auth=auth, team=team)

    async def build_template(
        self,
        name: str,
        context: AsyncIterable[bytes],
        *,
        dockerfile: str = "Dockerfile",
        build_args: Mapping[str, str] | None = None,
        network: Literal["full", "none"] = "full",
        team: str | None = None,
    ) -> TemplateEvents:
        node = await self._builder()
        return await node.build_template(
            name, context, dockerfile=dockerfile, build_args=build_args, network=network, team=team
        )

    async def import_template(
        self, name: str, archive: AsyncIterable[bytes], *, tag: str | None = None, team: str | None = None
    ) -> TemplateEvents:
        return await (await self._builder()).import_template(name, archive, tag=tag, team=team)

    async def export_template(self, name: str, tag: str) -> AsyncIterator[bytes]:
        return await self._first(f"template {name!r}", lambda n: n.export_template(name, tag))

    async def set_template_start(self, name: str, start: TemplateStart | None) -> TemplateInfo:
        answers = [a for a in await self._each(lambda n: _or_none(n.set_template_start(name, start))) if a]
        if not answers:
            raise errors.ImageNotFoundError(f"template {name!r} not found on any live node")
        return answers[0]

    async def delete_template(self, name: str) -> None:
        done = [a for a in await self._each(lambda n: _or_none(_true(n.delete_template(name)))) if a]
        if not done:
            raise errors.ImageNotFoundError(f"template {name!r} not found on any live node")

    # ------------------------------------------------------------ warm pools (per node)

    async def list_pools(self) -> list[PoolInfo]:
        total: dict[tuple[str, str], PoolInfo] = {}
        for answer in await self._each(lambda n: n.list_pools()):
            for p in answer:
                have = total.get((p.template, p.runtime))
                if have is None:
                    total[(p.template, p.runtime)] = p.model_copy()
                else:
                    have.size += p.size
                    have.idle += p.idle
        return list(total.values())

    async def set_pool(self, template: str, runtime: str | None, size: int) -> PoolInfo:
        """Keep `size` started sandboxes ready on every live node (pools are per node)."""
        answers = await self._each(lambda n: n.set_pool(template, runtime, size))
        if not answers:
            raise errors.RuntimeUnavailableError("no live node of the fleet is up")
        first = answers[0]
        return PoolInfo(template=first.template, runtime=first.runtime, size=size, idle=sum(a.idle for a in answers))


def _holder_of(rows: list[NodeRecord], team: str, name: str) -> NodeRecord | None:
    """The node whose last heartbeat lists the team's volume `name` (live or not)."""
    return next((r for r in rows if r.info for v in r.info.volumes if v.team == team and v.name == name), None)


def _volumes_at(spec: SandboxSpec, known: Mapping[str, tuple[str, str]]) -> str:
    """ "volume 'a' is" or "volumes 'a', 'b' are", for the volumes `spec` mounts."""
    names = [repr(known[m.volume_id][1]) if m.volume_id in known else m.volume_id for m in spec.volumes]
    return f"volume {names[0]} is" if len(names) == 1 else f"volumes {', '.join(names)} are"


async def _or_none(call: Awaitable[T]) -> T | None:
    try:
        return await call
    except errors.NotFoundError:
        return None


async def _true(call: Awaitable[None]) -> bool:
    await call
    return True
