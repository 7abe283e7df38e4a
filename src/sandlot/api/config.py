"""How a server is set up: where its state lives, which database, which limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sandlot.api.service import Quotas
from sandlot.paths import default_data_dir

__all__ = ["ApiConfig"]


@dataclass
class ApiConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    #: SQLAlchemy/PostgreSQL URL; default: $SANDLOT_DATABASE_URL, else SQLite in data_dir.
    database_url: str | None = None
    #: where images are built and cached (default: <data_dir>/images)
    images_dir: Path | None = None
    gvisor_platform: str = "ptrace"
    default_runtime: str = "gvisor"
    default_template: str = "base"
    quotas: Quotas = field(default_factory=Quotas)
    #: seconds between reaper ticks (timeouts, dead sandboxes)
    reap_interval: float = 1.0
    #: kill every sandbox when the server stops (tests); `sandlot serve` keeps them
    kill_on_shutdown: bool = False
    #: build the default template at start, so /health means "create will be quick"
    warm_default_template: bool = True
    #: template -> started sandboxes to keep ready (warm pools; also PUT /pools/{template})
    warm_pools: dict[str, int] = field(default_factory=dict)
    #: a persistent sandbox with no request for this many seconds hibernates
    hibernate_after_s: float = 900.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.database_url is None:
            self.database_url = os.environ.get("SANDLOT_DATABASE_URL") or None
        if self.images_dir is not None:
            self.images_dir = Path(self.images_dir)
