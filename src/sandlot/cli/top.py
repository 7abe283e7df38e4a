"""`sandlot top`: a live table of the team's sandboxes by CPU and memory, like `docker stats`.

Each refresh lists the live sandboxes and reads each one's newest metrics sample
(`GET /sandboxes/{id}/metrics`, sampled every 5 s on its node without waking it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import click
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sandlot import errors
from sandlot.cli._common import Api, console, json_option, pass_api, print_json, run_async, table
from sandlot.models import SandboxInfo, SandboxList, SandboxMetric, SandboxMetrics
from sandlot.sdk._transport import Transport

__all__ = ["command"]

#: how far back a refresh looks for a sandbox's newest sample (two sampling intervals and some)
_RECENT_S = 15.0

_SORT: dict[str, Callable[[SandboxMetric], float]] = {
    "cpu": lambda m: m.cpu_used_pct * m.cpu_count,
    "mem": lambda m: m.mem_used,
    "net": lambda m: m.net_rx_bytes + m.net_tx_bytes,
}


def _size(n: int) -> str:
    value, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"


async def _newest(t: Transport, sandbox_id: str) -> SandboxMetric | None:
    try:
        raw = await t.json("GET", f"/sandboxes/{sandbox_id}/metrics", params={"start": time.time() - _RECENT_S})
    except errors.SandboxNotFoundError:  # killed since it was listed
        return None
    samples = SandboxMetrics.model_validate(raw).metrics
    return samples[-1] if samples else None


async def snapshot(t: Transport, sort: str) -> list[tuple[SandboxInfo, SandboxMetric | None]]:
    """The live sandboxes with their newest sample, busiest first (those with none yet last)."""
    listed = SandboxList.model_validate(await t.json("GET", "/sandboxes", params={"limit": 1000})).sandboxes
    newest = await asyncio.gather(*(_newest(t, s.sandbox_id) for s in listed))
    pairs = list(zip(listed, newest, strict=True))
    key = _SORT[sort]
    pairs.sort(key=lambda p: (p[1] is not None, key(p[1]) if p[1] is not None else 0), reverse=True)
    return pairs


def render(pairs: list[tuple[SandboxInfo, SandboxMetric | None]]) -> Table:
    rows: list[list[str | Text]] = []
    for info, m in pairs:
        if m is None:
            rows.append([info.sandbox_id, info.template, info.state.value, "-", "-", "-", "-", "-", "-"])
            continue
        mem_pct = 100 * m.mem_used / m.mem_total if m.mem_total else 0.0
        cpu = Text(f"{m.cpu_used_pct:5.1f}% of {m.cpu_count:g}", style="bold red" if m.cpu_used_pct >= 90 else "")
        rows.append(
            [
                info.sandbox_id,
                info.template,
                info.state.value,
                cpu,
                f"{_size(m.mem_used)} / {_size(m.mem_total)}",
                f"{mem_pct:.1f}%",
                f"{_size(m.disk_used)} / {_size(m.disk_total)}",
                f"{_size(m.net_rx_bytes)} / {_size(m.net_tx_bytes)}",
                str(m.pids),
            ]
        )
    headers = ["ID", "TEMPLATE", "STATE", "CPU", "MEM USAGE / LIMIT", "MEM %", "DISK", "NET IN / OUT", "PIDS"]
    return table(headers, rows)


@click.command("top")
@click.option("--sort", type=click.Choice(sorted(_SORT)), default="cpu", show_default=True, help="order by")
@click.option(
    "--interval", type=click.FloatRange(min=0.5), default=2.0, show_default=True, help="seconds between refreshes"
)
@click.option("--once", is_flag=True, help="print one table and exit")
@json_option
@pass_api
def command(api: Api, sort: str, interval: float, once: bool, as_json: bool) -> None:
    """A live table of the team's sandboxes by CPU and memory (Ctrl-C quits)."""
    run_async(_top(api, sort, interval, once or as_json, as_json))


async def _top(api: Api, sort: str, interval: float, once: bool, as_json: bool) -> None:
    t = Transport(api.url, api.key, None)
    try:
        if once:
            pairs = await snapshot(t, sort)
            if as_json:
                print_json([{"sandbox": i.model_dump(mode="json"), "metrics": m and m.model_dump()} for i, m in pairs])
            else:
                console().print(render(pairs))
            return
        with Live(render(await snapshot(t, sort)), console=console(), auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(render(await snapshot(t, sort)), refresh=True)
    finally:
        await t.close()
