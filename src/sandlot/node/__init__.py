"""One host's sandboxes: runtimes, images, writable layers and the agent link."""

from __future__ import annotations

from sandlot.node.node import Node, NodeConfig
from sandlot.node.sandbox import CommandResult, Sandbox, State
from sandlot.node.spec import Limits, SandboxSpec

__all__ = ["CommandResult", "Limits", "Node", "NodeConfig", "Sandbox", "SandboxSpec", "State"]
