"""KVM or TCG: chosen by booting a probe guest, because /dev/kvm answering is not enough.

On some hosts /dev/kvm exists and runs trivial guests, yet a Linux guest
hangs right after the bootloader (nested virtualization without the features
Linux needs; MEASURED.md). So the runtime boots the real guest kernel and
initramfs under KVM with `sandlot.probe` on its command line (init.c prints
PROBE_OK and powers off) and uses KVM only if that finishes in time; else TCG,
QEMU's own translator. The answer is cached per host boot, kernel and QEMU, so
only the first node after a reboot pays for the probe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["PROBE_OK", "Accel", "choose"]

PROBE_OK = "SANDLOT-PROBE-OK"
#: A KVM guest reaches init in well under a second; one that hangs is given this long.
PROBE_TIMEOUT = 8.0


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    why: str


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def choose(cache: Path, qemu: str, kernel: Path, initrd: Path) -> Accel:
    """KVM when a probe guest boots under it, else TCG (cached per host boot)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
    except OSError as exc:
        return Accel("tcg", f"/dev/kvm is not usable ({exc.strerror})")
    key = hashlib.sha256(f"{_boot_id()}:{kernel}:{kernel.stat().st_mtime_ns}:{qemu}".encode()).hexdigest()[:16]
    cached = cache / f"accel-{key}.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        return Accel(**json.loads(cached.read_text()))
    accel = _probe(qemu, kernel, initrd)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(accel)))
    os.rename(tmp, cached)
    return accel


def _probe(qemu: str, kernel: Path, initrd: Path) -> Accel:
    # The probe guest hangs (spinning a CPU) where KVM does not boot Linux: if this process dies
    # meanwhile (a SIGKILLed server), the kernel kills the probe too instead of leaving it running.
    argv = ["setpriv", "--pdeathsig", "KILL", "--",
            qemu, "-M", "microvm,x-option-roms=off,rtc=on", "-accel", "kvm", "-cpu", "host", "-m", "128",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet panic=-1 reboot=t sandlot.probe"]  # fmt: skip
    started = time.monotonic()
    try:
        res = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Accel("tcg", f"a guest did not boot under KVM within {PROBE_TIMEOUT:.0f}s")
    if PROBE_OK.encode() in res.stdout:
        return Accel("kvm", f"a probe guest booted under KVM in {time.monotonic() - started:.2f}s")
    tail = (res.stdout + res.stderr).decode(errors="replace").strip()[-300:]
    return Accel("tcg", f"a guest did not boot under KVM: {tail or 'no output'}")
