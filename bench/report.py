"""Turn one run's results into the Markdown table, the plots and the one-line summary.

Missing or skipped figures show as "n/a": a report never fails on a number.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from compat import e2b_rows
from density import density_markdown, density_plot, density_rows
from microvm_bench import microvm_rows

__all__ = ["ANCHORS", "NOT_YET", "markdown", "plots", "rows", "summary_line"]

#: Published figures of hosted products, for scale; not measured here.
ANCHORS = [
    ("E2B", "~150 ms sandbox start"),
    ("Daytona", '"sub-90 ms" sandbox creation'),
    ("Northflank", "1-2 s sandbox start"),
    ("Sprites (Fly.io)", "rollback to a checkpoint under a second"),
]

NOT_YET: list[str] = []


def _get(results: dict[str, Any], *path: str) -> float:
    cur: Any = results
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return math.nan
        cur = cur[key]
    return float(cur) if isinstance(cur, (int, float)) else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _port_rows(ports: dict[str, Any]) -> list[tuple[str, float, str, str, float, str]]:
    conc = f"{_get(ports, 'concurrency'):.0f}"
    base = "the same server at its sandbox address, direct"
    out = []
    for label, figs in (("gVisor, direct route", ports), ("crun, direct route", ports.get("crun", {}))):
        runs = f"{_get(figs, 'port proxy', 'runs'):.0f}"
        ws_runs = f"{_get(figs, 'ws proxy', 'runs'):.0f}"
        flow_runs = f"{_get(figs, 'ws flow proxy', 'runs'):.0f}"
        downloads = f"{_get(figs, 'stream proxy', 'runs'):.0f}"
        out += [
            (f"HTTP through the port proxy, requests/s ({conc} clients; {label})",
             _get(figs, "port proxy", "rps"), "req/s", base, _get(figs, "port direct", "rps"), runs),
            (f"HTTP through the port proxy, p50 latency ({label})",
             _get(figs, "port proxy", "p50_ms"), "ms", base, _get(figs, "port direct", "p50_ms"), runs),
            (f"streamed download of {_get(figs, 'stream_mb'):.0f} MB through the port proxy ({label})",
             _get(figs, "stream proxy", "mb_per_s"), "MB/s", base, _get(figs, "stream direct", "mb_per_s"), downloads),
            (f"WebSocket echo round trips/s through the port proxy ({label})",
             _get(figs, "ws proxy", "rps"), "msg/s", base, _get(figs, "ws direct", "rps"), ws_runs),
            (f"WebSocket echo round trip p50 ({label})",
             _get(figs, "ws proxy", "p50_ms"), "ms", base, _get(figs, "ws direct", "p50_ms"), ws_runs),
            (f"WebSocket messages/s, {_get(figs, 'ws_window'):.0f} in flight, through the port proxy ({label})",
             _get(figs, "ws flow proxy", "rps"), "msg/s", base, _get(figs, "ws flow direct", "rps"), flow_runs),
        ]  # fmt: skip
    return out


def rows(r: dict[str, Any]) -> list[tuple[str, float, str, str, float, str]]:
    """(metric, sandlot, unit, nearest baseline, baseline value, runs) for each Sandlot figure."""
    b, s = r["baselines"], r["sandlot"]
    n = _get(s, "core concurrent", "n")
    out = []

    def lat(metric: str, skey: str, bname: str, bkey: str, q: str = "p50_ms", sub: str | None = None) -> None:
        spath = (skey, sub, q) if sub else (skey, q)
        runs = _get(s, *((skey, sub, "runs") if sub else (skey, "runs")))
        out.append((metric, _get(s, *spath), "ms", bname, _get(b, bkey, q), f"{runs:.0f}"))

    for q in ("p50_ms", "p99_ms"):
        tag = q[:3]
        lat(f"cold create → first command {tag}, gVisor (core)", "core cold gvisor", "`runsc run true`", "runsc run", q)
        lat(f"cold create → first command {tag}, crun (core)", "core cold container", "`crun run true`", "crun run", q)
        lat(
            f"cold create → first command {tag}, gVisor (HTTP+SDK)",
            "http cold gvisor",
            "`runsc run true`",
            "runsc run",
            q,
        )
    out.append(
        (
            "HTTP create → first command p50 vs core",
            _get(s, "http cold gvisor", "p50_ms"),
            "ms",
            "the same through the core Node",
            _get(s, "core cold gvisor", "p50_ms"),
            f"{_get(s, 'http cold gvisor', 'runs'):.0f}",
        )
    )
    for q in ("p50_ms", "p99_ms"):
        tag = q[:3]
        lat(f"command round trip {tag}, gVisor (core)", "core round trip gvisor", "`runsc exec true`", "runsc exec", q)
        lat(f"command round trip {tag}, crun (core)", "core round trip container", "`crun exec true`", "crun exec", q)
        lat(
            f"command round trip {tag}, gVisor (HTTP+SDK)",
            "http round trip gvisor",
            "`runsc exec true`",
            "runsc exec",
            q,
        )
    for op in ("write", "read"):
        host = f"host file {op} 100 MB"
        lat(f"file {op} 100 MB p50 (core agent)", "core files", f"{op} on the host disk", host, sub=op)
        lat(f"file {op} 100 MB p50 (HTTP+SDK)", "http files", f"{op} on the host disk", host, sub=op)
    core_p50 = _get(s, "core cold gvisor", "p50_ms")
    out.append(
        (
            f"{n:.0f} concurrent creates, total (errors: {_get(s, 'core concurrent', 'errors'):.0f})",
            _get(s, "core concurrent", "total_s") * 1000,
            "ms",
            f"{n:.0f} x core cold p50, one at a time",
            n * core_p50,
            "1",
        )
    )
    lat(f"{n:.0f} concurrent creates, per-create p50", "core concurrent", "`runsc run true`", "runsc run", sub="create")
    if "core warm pool gvisor" in s:
        lat(
            "create from a warm pool → first command p50, gVisor",
            "core warm pool gvisor",
            "`runsc run true`",
            "runsc run",
        )
        warm, runs = _get(s, "core warm pool gvisor", "p50_ms"), f"{_get(s, 'core warm pool gvisor', 'runs'):.0f}"
        out.append(("  the same vs a cold create", warm, "ms", "Sandlot cold create → first command", core_p50, runs))
    if "core pause resume" in s:
        for op in ("pause", "resume"):
            pr = s["core pause resume"]
            out.append(
                (
                    f"{op} p50 (freeze), gVisor",
                    _get(pr, op, "p50_ms"),
                    "ms",
                    f"`runsc {op}` of the same sandbox",
                    _get(pr, f"raw {op}", "p50_ms"),
                    f"{_get(pr, op, 'runs'):.0f}",
                )
            )
    if "http ports" in s:
        out += _port_rows(s["http ports"])
    big = s.get("http big transfer")
    if big:
        mb = f"{_get(big, 'mb'):.0f} MB"
        out += [
            (f"{mb} streamed in (HTTP+SDK)", _get(big, "upload_ms"), "ms",
             "the same bytes written to the host's disk", _get(big, "host_write_ms"), "1"),
            (f"{mb} streamed out (HTTP+SDK)", _get(big, "download_ms"), "ms",
             "the same bytes read from the host's disk", _get(big, "host_read_ms"), "1"),
            (f"server peak RSS, through a {mb} transfer", _get(big, "server_peak_rss_mb"), "MB",
             "the file's size", _get(big, "mb"), "1"),
            (f"client peak RSS growth, through a {mb} transfer", _get(big, "client_rss_growth_mb"), "MB",
             "the file's size", _get(big, "mb"), "1"),
        ]  # fmt: skip
    out += _checkpoint_rows(s)
    m = s.get("core memory pause")
    if m:
        for op, raw in (("pause", "checkpoint"), ("resume", "restore")):
            out.append(
                (
                    f"{op} with memory to disk p50, Python holding {_get(m, 'held_mb'):.0f} MB",
                    _get(m, op, "p50_ms"),
                    "ms",
                    f"raw `runsc {raw}` of the same Python",
                    _get(m, f"raw {raw}", "p50_ms"),
                    f"{_get(m, op, 'runs'):.0f}",
                )
            )
    if "p50_ms" in s.get("image pull", {}):
        pull = s["image pull"]
        out.append(
            (
                f"pull + unpack a {pull['unpacked_mb']:.0f} MB image ({pull['layers']:.0f} layers), local registry",
                pull["p50_ms"],
                "ms",
                "`skopeo copy` + `umoci unpack` of it",
                _get(s, "skopeo copy + umoci unpack", "p50_ms"),
                f"{pull['runs']:.0f}",
            )
        )
    if "rebuild last line changed" in s:
        out.append(
            (
                "Dockerfile rebuild, only the last line changed",
                _get(s, "rebuild last line changed", "p50_ms"),
                "ms",
                "the same build with an empty step cache",
                _get(s, "build with an empty cache", "p50_ms"),
                "1",
            )
        )
    for rt, raw in (("gvisor", "runsc"), ("container", "crun")):
        out.append(
            (
                f"idle memory per sandbox (PSS), {'gVisor' if rt == 'gvisor' else 'crun'}",
                _get(s, f"core idle {rt}", "pss_mb"),
                "MB",
                f"raw {raw} sandbox running `sleep`",
                _get(b, f"{raw} idle sleeper", "pss_mb"),
                f"{_get(s, f'core idle {rt}', 'sandboxes'):.0f}",
            )
        )
    return out


def _checkpoint_rows(s: dict[str, Any]) -> list[tuple[str, float, str, str, float, str]]:
    c = s.get("core checkpoints")
    if not c:
        return []
    mb, n = f"{_get(c, 'written_mb'):.0f} MB", f"{_get(c, 'fork n'):.0f}"
    cp = _get(c, "cp -a upper", "p50_ms")

    def runs(key: str) -> str:
        return f"{_get(c, key, 'runs'):.0f}"

    same_cp = "`cp -a` of the same upper"
    return [
        (f"checkpoint p50, {mb} written", _get(c, "checkpoint", "p50_ms"), "ms", same_cp, cp, runs("checkpoint")),
        ("  first checkpoint (flushes the writes)", _get(c, "first checkpoint", "p50_ms"), "ms", same_cp, cp, "1"),
        (f"restore p50 (running again), {mb}", _get(c, "restore", "p50_ms"), "ms", same_cp, cp, runs("restore")),
        ("  restore → first command p50", _get(c, "restore to command", "p50_ms"), "ms", same_cp, cp,
         runs("restore to command")),
        (f"fork x{n} → all ran a command", _get(c, "fork", "p50_ms"), "ms",
         f"{n} fresh creates at once → all ran a command", _get(c, "fresh creates", "p50_ms"), runs("fork")),
    ]  # fmt: skip


def _fmt(x: float | None, unit: str) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    if unit == "ms" and x >= 10000:
        return f"{x / 1000:.2f} s"
    return f"{x:.3g} {unit}" if x < 100 else f"{x:.0f} {unit}"


def _ratio_str(a: float, b: float) -> str:
    r = _ratio(a, b)
    return "n/a" if math.isnan(r) else f"{r:.2f}x"


def baseline_rows(r: dict[str, Any]) -> list[str]:
    lines = []
    for name, fig in r["baselines"].items():
        if "skipped" in fig:
            lines.append(f"| {name} | skipped: {fig['skipped']} | | |")
        elif "pss_mb" in fig:
            lines.append(f"| {name} (idle PSS) | {_fmt(fig['pss_mb'], 'MB')} | | 1 |")
        else:
            lines.append(f"| {name} | {_fmt(fig['p50_ms'], 'ms')} | {_fmt(fig['p99_ms'], 'ms')} | {fig['runs']} |")
    return lines


def markdown(r: dict[str, Any]) -> str:
    meta = r["meta"]
    lines = [
        f"# Sandlot benchmarks, {meta['date']} ({'quick' if meta['quick'] else 'full'} run)",
        "",
        f"{meta['host']}. Every baseline was measured in the same run; ratios are Sandlot / baseline "
        f"(below 1 is faster or smaller). Run time {meta['wall_s']:.0f} s. Command: `{meta['command']}`.",
        "",
        "| metric | sandlot | nearest baseline | baseline | ratio | runs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    # The E2B and microvm rows are NaN where they did not run here (no E2B SDK, no microvm): left out.
    optional = [row for row in [*e2b_rows(r["sandlot"]), *microvm_rows(r["sandlot"])] if row[1] == row[1]]
    for metric, ours, unit, bname, base, runs in [*rows(r), *density_rows(r["sandlot"]), *optional]:
        lines.append(
            f"| {metric} | {_fmt(ours, unit)} | {bname} | {_fmt(base, unit)} | {_ratio_str(ours, base)} | {runs} |"
        )
    for name in NOT_YET:
        lines.append(f"| {name} | not yet implemented | | | | |")
    lines += ["", *density_markdown(r["sandlot"], _fmt)]
    lines += ["## Baselines (measured in this run)", "", "| baseline | p50 | p99 | runs |", "| --- | --- | --- | --- |"]
    lines += baseline_rows(r)
    lines += ["", "## Published anchors (not measured here)", ""]
    lines += [f"- {who}: {what}" for who, what in ANCHORS]
    lines += ["", f"![latency]({meta['date']}-latency.png)", "", f"![density]({meta['date']}-density.png)", ""]
    return "\n".join(lines)


def summary_line(r: dict[str, Any]) -> str:
    b, s = r["baselines"], r["sandlot"]
    cold = _ratio(_get(s, "core cold gvisor", "p50_ms"), _get(b, "runsc run", "p50_ms"))
    rt = _ratio(_get(s, "core round trip gvisor", "p50_ms"), _get(b, "runsc exec", "p50_ms"))
    http = _ratio(_get(s, "http cold gvisor", "p50_ms"), _get(s, "core cold gvisor", "p50_ms"))
    idle = _get(s, "core idle gvisor", "pss_mb")
    idle_cpu = _ratio(_get(s, "idle cpu", "sandlot_pct"), _get(s, "idle cpu", "raw_pct"))
    n = _get(s, "http burst", "n")
    total = _get(s, "http burst", "total_s")
    errors = _get(s, "http burst", "errors")
    return (
        f"summary: cold start {cold:.2f}x runsc run, round trip {rt:.2f}x runsc exec, "
        f"HTTP create {http:.2f}x core, idle {idle:.1f} MB/sandbox, idle CPU {idle_cpu:.2f}x a runsc sleeper, "
        f"{n:.0f} concurrent HTTP creates in {total:.1f} s ({errors:.0f} errors)"
    )


def _series(r: dict[str, Any]) -> list[tuple[str, list[float]]]:
    b, s = r["baselines"], r["sandlot"]
    picks = [
        ("host fork/exec", b.get("host fork/exec")),
        ("bwrap", b.get("bwrap")),
        ("crun run", b.get("crun run")),
        ("Sandlot crun (core)", s.get("core cold container")),
        ("runsc run", b.get("runsc run")),
        ("runsc do", b.get("runsc do")),
        ("podman run (crun)", b.get("podman run (crun)")),
        ("podman run (runsc)", b.get("podman run (runsc)")),
        ("Sandlot gVisor (core)", s.get("core cold gvisor")),
        ("Sandlot gVisor (HTTP)", s.get("http cold gvisor")),
        ("crun exec", b.get("crun exec")),
        ("Sandlot crun round trip", s.get("core round trip container")),
        ("runsc exec", b.get("runsc exec")),
        ("Sandlot gVisor round trip", s.get("core round trip gvisor")),
        ("Sandlot HTTP round trip", s.get("http round trip gvisor")),
    ]
    return [(name, fig["samples_ms"]) for name, fig in picks if isinstance(fig, dict) and fig.get("samples_ms")]


def plots(r: dict[str, Any], latency_png: Path, density_png: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("no plots: matplotlib is missing (pip install -e '.[bench]')")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(r)
    fig, ax = plt.subplots(figsize=(9, 0.45 * max(len(series), 4) + 1.5))
    if series:
        names, data = zip(*series, strict=True)
        # Labels set by hand: boxplot's keyword for them was renamed in matplotlib 3.9.
        box = ax.boxplot(data, vert=False, showfliers=True, patch_artist=True)
        ax.set_yticks(range(1, len(names) + 1), names)
        for patch, name in zip(box["boxes"], names, strict=True):
            patch.set_facecolor("#f4a261" if name.startswith("Sandlot") else "#a8dadc")
        ax.set_xscale("log")
    ax.set_xlabel("ms (log scale): create → first command done, or command round trip")
    ax.set_title(f"Latency distributions, {r['meta']['date']} (orange: Sandlot; blue: baselines)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(latency_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    density_plot(r["sandlot"], ax)
    ax.set_xlabel("idle gVisor sandboxes running")
    ax.set_title(f"Density, {r['meta']['date']}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(density_png, dpi=110)
    plt.close(fig)
