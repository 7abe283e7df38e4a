"""`sandlot nodes ls|drain|rm`: the node daemons of a fleet (admin; an API replica run with --no-local-node).

Spoken through the SDK's HTTP transport (GET /nodes, POST /nodes/{name}/drain,
DELETE /nodes/{name}), which maps error bodies to SandlotError like every call.
"""

from __future__ import annotations

import click
import httpx
from rich.text import Text

from sandlot.cli._common import Api, call_api, console, fmt_ago, json_option, pass_api, print_json, run_async, table
from sandlot.models import DrainResult, NodeList, NodeSummary

__all__ = ["command"]

#: a drain ships disks before it answers: no read timeout
_NO_READ_TIMEOUT = httpx.Timeout(10.0, read=None)

_STYLE = {"active": "green", "draining": "yellow", "unreachable": "red"}


def _runtimes(n: NodeSummary) -> str:
    """gvisor,container,microvm(tcg): each runtime, with what it runs on where it chose."""
    return ",".join(f"{r}({n.accelerators[r]})" if r in n.accelerators else r for r in n.runtimes)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def _committed(n: NodeSummary) -> list[str]:
    """cpu and memory limits committed / the most placement commits ("-": no fleet places there)."""
    if not n.committed_cpu_max:
        return ["-", "-"]
    memory = f"{n.committed_memory_bytes / (1 << 30):.1f}/{_gib(n.committed_memory_max_bytes)}"
    return [f"{n.committed_cpu:g}/{n.committed_cpu_max:g}", memory]


@click.group("nodes")
def command() -> None:
    """The fleet's node daemons: list them, drain one, remove one (admin)."""


@command.command("ls")
@json_option
@pass_api
def ls(api: Api, as_json: bool) -> None:
    """Name, state, address, sandboxes, cpus, committed cpu/memory limits (of what the replica allows),
    free memory/disk, version and runtimes of each node (microvm with its accelerator: kvm, or tcg
    where KVM does not work)."""
    nodes = NodeList.model_validate(run_async(call_api(api, lambda t: t.json("GET", "/nodes")))).nodes
    if as_json:
        print_json(nodes)
        return
    rows: list[list[str | Text]] = [
        [
            n.name,
            Text(n.state, style=_STYLE.get(n.state, "")),
            n.address,
            str(n.sandboxes),
            str(n.cpus),
            *_committed(n),
            _gib(n.memory_available_bytes),
            _gib(n.disk_free_bytes),
            n.version,
            _runtimes(n),
            fmt_ago(n.last_seen),
            ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())),
        ]
        for n in nodes
    ]
    headers = ["NAME", "STATE", "ADDRESS", "SANDBOXES", "CPUS", "CPU LIMITS", "MEM LIMITS", "FREE MEM", "FREE DISK"]
    headers += ["VERSION", "RUNTIMES"]
    headers += ["SEEN", "LABELS"]
    console().print(table(headers, rows))


@command.command("drain")
@click.argument("name")
@pass_api
def drain(api: Api, name: str) -> None:
    """No new sandboxes on NAME; its persistent sandboxes move to other nodes.

    Each persistent sandbox is hibernated and its disk shipped to a node that
    placement picks; it keeps its id, files and metadata, and wakes there on
    its next request. Its processes do not move: it boots afresh from its disk.
    Only nodes that carry a sandbox's labels take it. A sandbox that no other
    node can take stays, and moves when it is next woken. Returns once NAME
    holds no more that could move (minutes for large disks), saying where each
    moved and why any stayed. Ephemeral sandboxes run on until their timeout.
    """
    node = DrainResult.model_validate(
        run_async(call_api(api, lambda t: t.json("POST", f"/nodes/{name}/drain", timeout=_NO_READ_TIMEOUT)))
    )
    click.echo(f"{node.name} {node.state}")
    for sid, to in sorted(node.moved.items()):
        click.echo(f"  {sid} moved to {to}")
    for sid, why in sorted(node.stayed.items()):
        click.echo(f"  {sid} stayed: {why}")


@command.command("rm")
@click.argument("name")
@pass_api
def rm(api: Api, name: str) -> None:
    """Forget NAME; a daemon still running joins again.

    While NAME is reachable its persistent sandboxes move to other nodes first
    (as `drain` moves them); the records of the sandboxes left on it say killed.
    """
    run_async(call_api(api, lambda t: t.request("DELETE", f"/nodes/{name}", timeout=_NO_READ_TIMEOUT)))
    click.echo(name)
