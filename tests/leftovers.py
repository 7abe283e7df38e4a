"""What a node left behind: the one check of "nothing leaked" for every test that needs it.

`leftovers(data_dir, live=..., gone=...)` returns a list of problems (empty: clean).
It looks only at what belongs to that data directory and to the sandbox ids
named, never at the host as a whole: other nodes (other engineers' tests) run
sandboxes on the same host at the same time, and theirs look exactly like ours.

Checked, for the data directory:
- mounts under it: only the disk store, the `layer`/`rootfs` of live sandboxes and
  spare disks' mounts (`spares/<name>.mnt`, while `spares/<name>.img` is there);
- loop devices backed by files under it: only the disk store's backing file,
  live sandboxes' disks and spares, and none backed by a deleted file (space never freed);
- files in the disk store: only live sandboxes' disks, complete checkpoints
  (`ck-*` with a record) and spare disks, so its used space is what they account for;
- sandbox directories, runtime state (runsc, crun) and network leases: live sandboxes' only;
- debris of interrupted steps (`.tmp`, `.deleting`, `.restore`) anywhere in the stores.

And for every id in `gone` (and any id found above that is not live): no cgroup in
any hierarchy, no network namespace, host interface, nftables table or lease, no
runtime state, no host process whose command line names it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

__all__ = ["assert_clean", "leftovers", "sandbox_ids_in"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
LEASES = Path("/run/sandlot/net/leases")
_ID = re.compile(r"sb-[0-9a-z]{16}")
_SPARE_MOUNT = re.compile(r"\d+-[0-9a-f]{32}\.mnt")


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(prefix) or p == prefix[:-1]]


def _loop_backings() -> list[tuple[str, str]]:
    """(device, backing file) of every loop device in use."""
    out = []
    for dev in sorted(Path("/sys/block").glob("loop*")):
        with_backing = dev / "loop" / "backing_file"
        try:
            out.append((dev.name, with_backing.read_text().strip()))
        except OSError:
            continue
    return out


def _leases(owner: Path) -> dict[str, str]:
    """sandbox id -> lease file, for the leases `owner` (a data dir) holds."""
    found: dict[str, str] = {}
    if not LEASES.is_dir():
        return found
    for lease in LEASES.iterdir():
        try:
            info = json.loads(lease.read_text())
        except (OSError, ValueError):
            continue
        if info.get("owner") == str(owner):
            found[str(info.get("sandbox_id"))] = str(lease)
    return found


def _nft_tables() -> set[str]:
    res = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    return {line.split()[-1] for line in res.stdout.splitlines() if line.startswith("table")}


def _cmdlines_naming(ids: set[str]) -> dict[str, list[int]]:
    hits: dict[str, list[int]] = {}
    if not ids:
        return hits
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue
        for sid in ids:
            if sid in cmd:
                hits.setdefault(sid, []).append(int(proc.name))
    return hits


def sandbox_ids_in(data_dir: Path) -> set[str]:
    """Every sandbox id the data directory still mentions (directories, disks, runtime state, leases)."""
    ids: set[str] = set()
    for d in (data_dir / "sandboxes", data_dir / "disks" / "sandboxes", *(data_dir / "runtime").glob("*")):
        if d.is_dir():
            for entry in d.iterdir():
                ids.update(_ID.findall(entry.name))
    ids.update(_leases(data_dir))
    return ids


def _disk_store_problems(store: Path, live: set[str]) -> list[str]:
    problems = []
    if not store.is_dir():
        return problems
    for path in sorted(store.rglob("*")):
        rel = path.relative_to(store)
        parts = rel.parts
        if path.is_dir():
            if parts[0] in ("sandboxes", "spares", "checkpoints") and len(parts) == 1:
                continue
            if parts[0] == "spares" and _SPARE_MOUNT.fullmatch(parts[1]):
                if len(parts) == 2 or (len(parts) == 3 and parts[2] in ("upper", "work")):
                    continue
            if parts[0] == "checkpoints" and re.fullmatch(r"ck-[0-9a-z]{16}", parts[1]):
                if len(parts) == 2 and not (path / "checkpoint.json").is_file():
                    problems.append(f"disk store: checkpoint {parts[1]} has no record (half made)")
                if len(parts) == 2 or parts[2] == "memory":
                    continue
            problems.append(f"disk store: unexpected directory {rel}")
            continue
        if len(parts) == 2 and parts[0] == "sandboxes" and parts[1].endswith(".img"):
            if parts[1][: -len(".img")] in live:
                continue
        elif len(parts) == 2 and parts[0] == "spares" and re.fullmatch(r"\d+-[0-9a-f]{32}\.img", parts[1]):
            continue
        elif parts[0] == "checkpoints" and len(parts) >= 3 and re.fullmatch(r"ck-[0-9a-z]{16}", parts[1]):
            if (len(parts) == 3 and parts[2] in ("disk.img", "checkpoint.json")) or parts[2] == "memory":
                continue
        problems.append(f"disk store: unaccounted file {rel} ({path.stat().st_blocks * 512 >> 10} KiB)")
    return problems


def leftovers(data_dir: Path, *, live: Iterable[str] = (), gone: Iterable[str] = ()) -> list[str]:
    """What the node on `data_dir` left behind beyond its `live` sandboxes; [] when nothing."""
    data_dir = Path(data_dir)
    live, gone = set(live), set(gone) - set(live)
    problems: list[str] = []

    allowed_mounts = {str((data_dir / "disks").resolve())}
    for sid in live:
        for sub in ("layer", "rootfs"):
            allowed_mounts.add(str((data_dir / "sandboxes" / sid / sub).resolve()))
    spares = (data_dir / "disks" / "spares").resolve()
    spare_files = {str(p) for p in spares.glob("*.img")} if spares.is_dir() else set()
    allowed_mounts |= {f[: -len(".img")] + ".mnt" for f in spare_files}
    problems += [f"mount left: {m}" for m in _mounts_under(data_dir) if m not in allowed_mounts]

    prefix = str(data_dir.resolve()) + "/"
    allowed_backings = {str((data_dir / "disks.img").resolve())}
    allowed_backings |= {str((data_dir / "disks" / "sandboxes" / f"{sid}.img").resolve()) for sid in live}
    allowed_backings |= spare_files
    for dev, backing in _loop_backings():
        if backing.endswith(" (deleted)") and backing.startswith(prefix):
            problems.append(f"loop device {dev} holds a deleted file: {backing}")
        elif backing.startswith(prefix) and backing not in allowed_backings:
            problems.append(f"loop device {dev} left on {backing}")

    problems += _disk_store_problems(data_dir / "disks", live)

    found = sandbox_ids_in(data_dir)
    for sid in sorted(found - live):
        problems.append(f"sandbox {sid} is gone but the data dir still mentions it")
    sandboxes = data_dir / "sandboxes"
    if sandboxes.is_dir():
        problems += [f"stray entry in sandboxes/: {p.name}" for p in sandboxes.iterdir() if not _ID.fullmatch(p.name)]
    for store in (data_dir / "disks" / "checkpoints", data_dir / "disks" / "spares", data_dir / "volumes"):
        if store.is_dir():
            problems += [f"debris of an interrupted step: {p}" for p in store.iterdir() if p.name.startswith(".")]

    check = gone | (found - live)
    if check:
        tables = _nft_tables()
        procs = _cmdlines_naming(check)
        for sid in sorted(check):
            cgroups = [p for h in CGROUP_ROOT.iterdir() if (p := h / "sandlot" / sid).is_dir()]
            problems += [f"cgroup left: {p}" for p in cgroups]
            if Path(f"/run/netns/sandlot-{sid}").exists():
                problems.append(f"network namespace left: sandlot-{sid}")
            if Path(f"/sys/class/net/sl{sid[-13:]}").exists():
                problems.append(f"host interface left: sl{sid[-13:]}")
            if "sandlot_" + sid.replace("-", "_") in tables:
                problems.append(f"nftables table left: sandlot_{sid.replace('-', '_')}")
            if sid in procs:
                problems.append(f"host processes of {sid} left: {procs[sid]}")
            for d in (data_dir / "runtime").glob("*"):
                problems += [f"runtime state left: {p}" for p in d.glob(f"*{sid}*")]
    return problems


def assert_clean(data_dir: Path, *, live: Iterable[str] = (), gone: Iterable[str] = ()) -> None:
    """`leftovers` must find nothing; the failure lists every problem."""
    problems = leftovers(data_dir, live=live, gone=gone)
    assert not problems, "left behind:\n" + "\n".join(problems)
