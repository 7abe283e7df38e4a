"""`sbx.network`: a sandbox's network policy and who may reach its ports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandlot.models import NetworkInfo

if TYPE_CHECKING:
    from sandlot.sdk.sandbox import AsyncSandbox

__all__ = ["AsyncNetwork", "policy_body"]


def policy_body(network: str | dict[str, Any]) -> str | dict[str, Any]:
    """What `network=` of `create` accepts: a mode ("none", "egress", "full") or a policy dict."""
    return network if isinstance(network, str) else dict(network)


class AsyncNetwork:
    """The network of one sandbox (policy, address, exposed-port access)."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sbx = sandbox

    def _path(self, suffix: str = "") -> str:
        return f"/sandboxes/{self._sbx.sandbox_id}{suffix}"

    async def get(self) -> NetworkInfo:
        """The policy in force, the sandbox's address, its access token and public ports."""
        info = NetworkInfo.model_validate(await self._sbx._transport.json("GET", self._path("/network")))
        self._sbx._info.network = info
        return info

    async def update(
        self,
        mode: str,
        *,
        allow: list[str] | None = None,
        deny: list[str] | None = None,
        egress_bytes_per_s: int | None = None,
        max_connections: int | None = None,
    ) -> NetworkInfo:
        """Replace the sandbox's policy; it applies at once, the sandbox keeps running.

        Args:
            mode: "egress" (only `allow`) or "full" (anything but `deny` and what is always
                blocked: the host, other sandboxes, private ranges, 169.254.0.0/16), or "none".
            allow: CIDRs and host names it may reach (also un-blocks private ranges it names).
            deny: CIDRs and host names it may not reach; wins over `allow`.
            egress_bytes_per_s: bandwidth cap of what it sends.
            max_connections: connections it may hold open at once.

        Raises:
            InvalidArgumentError: a bad entry (`field` names the list).
            SandboxStateError: the sandbox was created with network "none" (it has no interface).

        Example:
            >>> sbx.network.update("egress", allow=["pypi.org", "files.pythonhosted.org"])
        """
        body: dict[str, Any] = {"mode": mode, "allow": allow or [], "deny": deny or []}
        if egress_bytes_per_s is not None:
            body["egress_bytes_per_s"] = egress_bytes_per_s
        if max_connections is not None:
            body["max_connections"] = max_connections
        info = NetworkInfo.model_validate(await self._sbx._transport.json("PUT", self._path("/network"), json=body))
        self._sbx._info.network = info
        return info

    async def set_public(self, port: int, public: bool = True) -> NetworkInfo:
        """Let anyone reach `port` without the access token (or, with public=False, stop that)."""
        method = "PUT" if public else "DELETE"
        info = NetworkInfo.model_validate(await self._sbx._transport.json(method, self._path(f"/public-ports/{port}")))
        self._sbx._info.network = info
        return info
