"""How a server is set up: where its state lives, which database, which limits."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from sandlot import errors
from sandlot.agent.client import RESPONSE_TIMEOUT
from sandlot.api.fleet.placement import Overcommit
from sandlot.api.teams import Quotas
from sandlot.node.protocol import RegistryConfig
from sandlot.paths import default_data_dir

__all__ = ["ApiConfig", "load_registries"]


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
    #: registry host[:port] -> credentials and `insecure` (plain HTTP); default: the JSON file
    #: $SANDLOT_REGISTRIES, else <data_dir>/registries.json, when there is one:
    #: {"10.0.0.5:5000": {"insecure": true}, "ghcr.io": {"username": "u", "password": "token"}}
    #: (registries on the loopback speak plain HTTP without an entry: node/oci/registry.py)
    registries: dict[str, RegistryConfig] = field(default_factory=dict)
    #: pull only from the registries above
    registries_only: bool = False
    #: sandbox ports are also served at `{port}-{sandbox id}.{ports_domain}` (point a wildcard DNS name here)
    ports_domain: str = "localhost"
    #: resolvers for sandboxes' DNS and policy host names (None: the host's own, non-loopback; []: no DNS)
    dns_servers: list[str] | None = None
    #: a persistent sandbox with no request for this many seconds hibernates
    hibernate_after_s: float = 900.0
    #: sandbox starts run at once (default: 2 per core); more queue in order (node/admission.py)
    max_concurrent_starts: int | None = None
    #: starts that may wait in that queue; a create beyond it gets 503 with Retry-After
    max_queued_starts: int = 256
    #: seconds between sweeps of expired checkpoints (teams' retention)
    housekeeping_interval_s: float = 60.0
    #: size of the node's disk store (sandbox disks, checkpoints); None: the data dir's filesystem's
    disk_store_bytes: int | None = None
    #: how long a call waits for a sandbox agent's first answer before checking that it is alive
    agent_timeout_s: float = RESPONSE_TIMEOUT
    #: the SSH gateway's port (`ssh -p PORT SANDBOX_ID@host`); None: no SSH gateway
    ssh_port: int | None = None
    #: the address the SSH gateway listens on
    ssh_host: str = "127.0.0.1"
    #: an API replica of a fleet: no node in this process; sandboxes run on node daemons
    #: (`sandlot node`) that join it, and every replica shares `database_url` (PostgreSQL)
    no_local_node: bool = False
    #: the fleet's shared secret: node daemons and replicas authenticate each other with it
    #: (default: $SANDLOT_NODE_TOKEN)
    node_token: str | None = None
    #: a node whose last heartbeat is older than this is unreachable (its sandboxes `unknown`)
    node_timeout_s: float = 30.0
    #: how far the cpu and memory limits of a node's sandboxes may add up past its cores and
    #: memory before a fleet places nothing more there (api/fleet/placement.py)
    overcommit: Overcommit = field(default_factory=Overcommit)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.database_url is None:
            self.database_url = os.environ.get("SANDLOT_DATABASE_URL") or None
        if self.node_token is None:
            self.node_token = os.environ.get("SANDLOT_NODE_TOKEN") or None
        if self.no_local_node and not (self.database_url or "").startswith(("postgres://", "postgresql")):
            raise errors.InvalidArgumentError(
                "an API replica without a local node keeps its state in PostgreSQL: give --database-url postgresql://...",
                field="database_url",
            )
        if self.images_dir is not None:
            self.images_dir = Path(self.images_dir)
        if not self.registries:
            self.registries = load_registries(
                Path(os.environ.get("SANDLOT_REGISTRIES") or self.data_dir / "registries.json")
            )


def load_registries(path: Path) -> dict[str, RegistryConfig]:
    """The registries file, or nothing when there is none; a malformed one is an error that names it."""
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("the top level must be an object of host -> settings")
        return {str(host): RegistryConfig.from_dict(dict(v)) for host, v in raw.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError) as exc:
        raise errors.InvalidArgumentError(f"registries file {path}: {exc}", field="registries") from None
