"""Sandlot: secure sandboxes for AI code execution.

    from sandlot import Sandbox          # or AsyncSandbox

The SDK loads on first use, so `import sandlot.node` (the server side) never
pulls in the HTTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandlot.sdk import AsyncSandbox, AsyncTemplates, Sandbox, Templates

__all__ = ["AsyncSandbox", "AsyncTemplates", "Sandbox", "Templates"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sandlot import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'sandlot' has no attribute {name!r}")
