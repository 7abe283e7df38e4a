"""Failpoints: stop the server at a named step, to test what a crash there leaves behind.

`SANDLOT_FAILPOINTS` is read once, when this module is imported:

    SANDLOT_FAILPOINTS="node.create.after_mount=kill,node.kill.after_runtime=hang"

Each entry names a step and an action, which fires the first time the step is
reached (later passes go through):

- `kill`: SIGKILL this process there, as a crash would;
- `hang`: stop this task (or thread) there for good; the rest of the server
  keeps serving, so a test can bring several operations to different steps
  and then SIGKILL the server once, as if it crashed at all of them at once;
- `error`: raise InternalError there, to test the cleanup of a failed step.

Reaching an armed step writes `sandlot failpoint <name> reached (<context>)`
to stderr first, so a test knows when to act. The names are the `failpoint()`
and `afailpoint()` calls in the code (`grep -rn failpoint src/`); each sits
between two steps whose order matters for recovery. Unset (the default), a
step costs one test of an empty dict.

Async code calls `await afailpoint(name)` (a `hang` there parks the task, never
the event loop); thread code calls `failpoint(name)`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

from sandlot import errors

__all__ = ["ACTIONS", "afailpoint", "armed", "failpoint", "parse"]

ACTIONS = ("kill", "hang", "error")


def parse(text: str) -> dict[str, str]:
    """`name=action,...` -> {name: action}; a malformed entry is an error that names it."""
    points: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, action = entry.partition("=")
        if not sep or not name or action not in ACTIONS:
            raise ValueError(f"SANDLOT_FAILPOINTS: bad entry {entry!r}: want name=ACTION, ACTION one of {ACTIONS}")
        points[name.strip()] = action
    return points


#: armed step -> action; entries leave once they fire. Empty unless SANDLOT_FAILPOINTS is set.
_points: dict[str, str] = parse(os.environ.get("SANDLOT_FAILPOINTS", ""))
_lock = threading.Lock()


def armed() -> dict[str, str]:
    """The failpoints that have not fired yet."""
    return dict(_points)


def _fire(name: str, context: str) -> str | None:
    with _lock:
        action = _points.pop(name, None)
    if action is not None:
        sys.stderr.write(f"sandlot failpoint {name} reached ({context or '-'}): {action}\n")
        sys.stderr.flush()
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "error":
            raise errors.InternalError(f"failpoint {name} ({context or '-'})")
    return action


def failpoint(name: str, context: str = "") -> None:
    """A step in thread (or synchronous) code; see the module docstring."""
    if _points and _fire(name, context) == "hang":
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            threading.Event().wait()
        raise AssertionError(f"failpoint {name} is on the event loop's thread: call afailpoint() there")


async def afailpoint(name: str, context: str = "") -> None:
    """A step in async code; a `hang` parks only the calling task."""
    if _points and _fire(name, context) == "hang":
        await asyncio.Event().wait()
