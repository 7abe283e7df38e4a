"""What the API and a node say to each other: plain data, imported by both ends.

Everything that crosses the API -> node seam (`node/client.py`) is defined or
re-exported here, so that `api/` imports nothing else of the node:

- specs in: `SandboxSpec` (with `Limits`, `NetworkPolicy`, `VolumeMount`), plain
  dataclasses that validate themselves and round-trip through dicts
  (`spec_to_dict` / `spec_from_dict`); `RegistryConfig` for a node's registries;
- answers out: pydantic models. The node's own facts are the models below;
  where the API answers what the node knows unchanged (templates, checkpoints,
  volumes, pools, progress lines) the node answers `sandlot.models`' model, so
  there is one model per fact.

A node's identity (`NodeInfo.name`) is what `SandboxInfo.node` shows; the node
embedded in `sandlot serve` is named `LOCAL_NODE`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from sandlot.models import (
    CheckpointInfo,
    PoolInfo,
    ProgressEvent,
    RegistryAuth,
    SandboxMetric,
    TemplateEvent,
    TemplateInfo,
    TemplateStart,
    VolumeInfo,
)
from sandlot.node.checkpoints import CHECKPOINT_ID_RE, MAX_FORK, spec_from_dict, spec_to_dict
from sandlot.node.netpolicy import NetworkPolicy
from sandlot.node.oci.registry import RegistryConfig
from sandlot.node.oci.store import BUILT_IN_SOURCE
from sandlot.node.spec import Limits, SandboxSpec
from sandlot.node.volumes import VolumeMount

__all__ = [
    "BUILT_IN_SOURCE",
    "CHECKPOINT_ID_RE",
    "LOCAL_NODE",
    "MAX_FORK",
    "CheckpointInfo",
    "Limits",
    "NetworkPolicy",
    "NodeInfo",
    "NodeVolume",
    "PoolInfo",
    "ProgressEvent",
    "RecoveryReport",
    "RegistryAuth",
    "RegistryConfig",
    "SandboxMetric",
    "SandboxSpec",
    "SandboxStatus",
    "TemplateEvent",
    "TemplateInfo",
    "TemplateStart",
    "VolumeInfo",
    "VolumeMount",
    "spec_from_dict",
    "spec_to_dict",
]

#: The name of the node that `sandlot serve` embeds.
LOCAL_NODE = "local"


class SandboxStatus(BaseModel):
    """A sandbox as its node sees it now."""

    sandbox_id: str
    node: str
    #: starting, running, paused, hibernated or killed (`sandlot.models.SandboxState`'s values)
    state: str
    exit_reason: str | None = None
    runtime: str
    template: str
    #: its runtime can write its processes and memory to disk (pause with memory, hibernate)
    saves_memory: bool = False
    #: its network policy, as `NetworkPolicy.to_dict()` (mode, allow, deny, ...)
    network: dict[str, Any] = Field(default_factory=dict)
    #: its IPv4 address; None without a network interface
    address: str | None = None
    #: the policy's host names, as last resolved
    resolved: dict[str, list[str]] = Field(default_factory=dict)

    @property
    def killed(self) -> bool:
        return self.state == "killed"


class RecoveryReport(BaseModel):
    """What a node found again after a restart (see node/recovery.py)."""

    adopted: list[str] = Field(default_factory=list)
    #: sandbox id -> why it is gone (it was cleaned up)
    lost: dict[str, str] = Field(default_factory=dict)
    #: cleanup failures, per sandbox id
    problems: dict[str, list[str]] = Field(default_factory=dict)


class NodeVolume(BaseModel):
    """A volume a node holds, as its heartbeat lists it: volumes never leave the node that made them,
    so a fleet places every sandbox that mounts one there."""

    volume_id: str
    team: str
    name: str
    created_at: float = 0.0
    size_mb: int | None = None


class NodeInfo(BaseModel):
    """A node's identity, health and free capacity (what placement will weigh)."""

    name: str
    version: str
    default_runtime: str
    #: runtimes that passed their check on this node so far
    runtimes: list[str] = Field(default_factory=list)
    #: the hardware a runtime chose to run on, once chosen at its start (microvm: "kvm" or "tcg")
    accelerators: dict[str, str] = Field(default_factory=dict)
    #: sandboxes handed out (not counting idle ones of warm pools)
    sandboxes: int
    cpus: int
    memory_total_bytes: int
    memory_available_bytes: int
    disk_total_bytes: int
    disk_free_bytes: int
    #: the host's load average over the last minute (runnable tasks)
    load_1m: float = 0.0
    #: templates cached on the node
    templates: list[str] = Field(default_factory=list)
    #: the volumes on the node
    volumes: list[NodeVolume] = Field(default_factory=list)
