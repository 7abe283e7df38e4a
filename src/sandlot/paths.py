"""Where Sandlot keeps its state on this machine (shared by the server, node and SDK)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_dir"]


def default_data_dir() -> Path:
    """/var/lib/sandlot for root, else $XDG_DATA_HOME/sandlot (~/.local/share/sandlot)."""
    if os.geteuid() == 0:
        return Path("/var/lib/sandlot")
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "sandlot"
