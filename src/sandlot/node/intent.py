"""Write-ahead records of the operations that stop a sandbox on the way (restore, memory saves).

A restore halts the sandbox, swaps its disk and boots it again; a memory save
ends its processes once their image is on disk. A node killed in between
would find a sandbox that is not running and could not tell it from one that
died. So such an operation writes `<sandbox dir>/intent.json` before its first
step that stops anything and removes it after its last; recovery (recovery.py)
reads it and finishes the operation, or brings the sandbox back from what it
names:

- `{"restore": ck_id, "staged": path}`: the checkpoint's disk clone `staged`
  replaces the sandbox's disk (if it still exists), then the sandbox boots
  (or restores the checkpoint's memory);
- `{"memory_image": dir}`: the processes are being saved to `dir` (written
  as `dir.tmp`, renamed when complete); a complete image brings them back.

The record is replaced atomically (written beside, renamed), so it is whole or absent
after a crash of the process; it is not fsynced (a host that loses power loses the
sandboxes' processes anyway, and this runs on the event loop).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["begin", "end", "read"]

_NAME = "intent.json"


def begin(sandbox_dir: Path, **record: Any) -> None:
    path = Path(sandbox_dir) / _NAME
    tmp = path.with_name(_NAME + ".tmp")
    tmp.write_text(json.dumps(record))
    os.rename(tmp, path)


def end(sandbox_dir: Path) -> None:
    (Path(sandbox_dir) / _NAME).unlink(missing_ok=True)


def read(sandbox_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((Path(sandbox_dir) / _NAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
