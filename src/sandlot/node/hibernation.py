"""Hibernation: an idle sandbox gives back its compute and memory and keeps its filesystem.

With a runtime that saves memory (gvisor), hibernating is a pause with memory
to disk (memory_pause.py) and waking restores the processes where they were.
Without (container), or when asked to drop the memory (E2B's filesystem-only
pause), the processes are stopped and waking boots the sandbox again on the
same filesystem. Either way a `hibernated` file in the sandbox's
directory marks it, so a restarted node adopts it as hibernated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sandlot import errors
from sandlot.failpoints import afailpoint
from sandlot.node import memory_pause
from sandlot.node.sandbox import Sandbox

if TYPE_CHECKING:
    from sandlot.node.node import Node

__all__ = ["hibernate", "mark", "marked", "unmark", "wake"]

log = logging.getLogger("sandlot.node")


def _marker(sbx: Sandbox) -> Path:
    return sbx.dir / "hibernated"


def mark(sbx: Sandbox) -> None:
    _marker(sbx).touch()


def marked(sbx: Sandbox) -> bool:
    return _marker(sbx).exists()


async def hibernate(node: Node, sbx: Sandbox, memory: bool = True) -> None:
    """Release a running sandbox's processes (with `memory`, saving it where the runtime can).

    The marker is written first: a node killed after the processes are gone
    must find it hibernated, not dead; one killed before finds it running and
    drops the marker (a running sandbox wins over any record of it).
    """
    mark(sbx)
    try:
        if memory and sbx.runtime.saves_memory:
            try:
                await memory_pause.save(node, sbx)
            except errors.SandlotError as exc:  # e.g. runsc refuses: the sandbox runs on; stop it instead
                log.warning("hibernating %s without its memory: %s", sbx.id, exc)
                await node.halt(sbx)
        else:
            await node.halt(sbx)
    except BaseException:
        unmark(sbx)
        raise
    await afailpoint("node.hibernate.after_release", sbx.id)


def unmark(sbx: Sandbox) -> None:
    _marker(sbx).unlink(missing_ok=True)


async def wake(node: Node, sbx: Sandbox) -> None:
    """Bring a hibernated sandbox back: its saved processes, or a fresh boot on its filesystem."""
    if memory_pause.saved(sbx):
        await memory_pause.load(node, sbx)
    else:
        await node.reboot(sbx)
    await afailpoint("node.wake.before_unmark", sbx.id)
    unmark(sbx)
