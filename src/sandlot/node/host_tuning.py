"""What a node changes in its host's kernel so that sandbox starts and stops stop waiting on it.

Starting and stopping a sandbox is mostly kernel bookkeeping: moves between cgroups,
mounts and unmounts, network namespaces, nftables transactions. Many of those end by
waiting for an RCU grace period (every CPU passing a quiescent state), which takes
8-20 ms on a small VM, and a gVisor start waits for a dozen of them. Measured here
(`bench/cold_profile.py`, the same host with and without): a cold create with a network
went from 219 to 139 ms to its first command, raw `runsc run true` from 127 to 73 ms,
one `nft -f` of a sandbox's rules from 20 to 5 ms.

Two kernel settings take the waits away, each for the whole host:

- cgroup2's `favordynmods` (`cgroups.favor_moves`): moving a process into a cgroup no
  longer waits at all; forks and exits take a slightly slower lock instead.
- `/sys/kernel/rcu_expedited`: every wait for a grace period is expedited (the kernel
  interrupts the busy CPUs to end it in microseconds), at the cost of those interrupts.

Both are the kernel's documented trade for hosts whose latency of such changes matters
more, as a sandbox host's does. A node sets them at its start unless told not to
(`NodeConfig.tune_host`, `SANDLOT_TUNE_HOST=0`); the bench's raw baselines set them too,
so that Sandlot and the runtimes it is compared with run on the same host.
"""

from __future__ import annotations

from pathlib import Path

from sandlot.node import cgroups

__all__ = ["RCU_EXPEDITED", "RCU_NORMAL", "expedite_rcu", "tune"]

RCU_EXPEDITED = Path("/sys/kernel/rcu_expedited")
#: when 1 (`rcupdate.rcu_normal`), the kernel never expedites, whatever RCU_EXPEDITED says
RCU_NORMAL = Path("/sys/kernel/rcu_normal")


def expedite_rcu() -> str | None:
    """Make the kernel expedite every RCU grace period; None when it does (now or before), else why not."""
    try:
        if RCU_NORMAL.read_text().strip() == "1":
            return f"{RCU_NORMAL} is 1 (the kernel's rcupdate.rcu_normal): it never expedites"
    except OSError:
        pass  # a kernel without the knob expedites as rcu_expedited says
    try:
        if RCU_EXPEDITED.read_text().strip() != "1":
            RCU_EXPEDITED.write_text("1")
    except OSError as exc:
        return f"cannot set {RCU_EXPEDITED}: {exc.strerror or exc}"
    return None


def tune() -> list[str]:
    """Set both; returns why each that is not set could not be (empty: all set)."""
    return [why for why in (cgroups.favor_moves(), expedite_rcu()) if why]
