"""Templates on a Sandlot server: pull images into them, list, inspect, delete.

`AsyncTemplates` is the implementation; `Templates` is its blocking twin (a thin wrapper).

    from sandlot.sdk import Templates
    Templates.pull("127.0.0.1:5000/team/app:1", on_progress=print)
    Sandbox.create(image="127.0.0.1:5000/team/app:1")
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from sandlot import errors
from sandlot.api.models import TemplateInfo, TemplateList
from sandlot.sdk._transport import Transport
from sandlot.sdk.sync import _Portal

__all__ = ["AsyncTemplates", "Templates"]

ProgressHandler = Callable[[str], None]


def _path(name: str) -> str:
    return "/templates/" + quote(name, safe="/:@")


class AsyncTemplates:
    """Template operations (all class methods: templates belong to the server, not to a sandbox)."""

    @classmethod
    async def pull(
        cls,
        ref: str,
        *,
        name: str | None = None,
        platform: str | None = None,
        username: str | None = None,
        password: str | None = None,
        on_progress: ProgressHandler | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> TemplateInfo:
        """Pull an image from its registry into a template (again, if it is already there).

        Args:
            ref: `host[:port]/repository[:tag][@sha256:...]`.
            name: the template's name (default: `ref` itself).
            platform: `os/arch[/variant]` to pick from a multi-platform image (default linux/amd64).
            username: registry user (with `password`); else the server's configured credentials.
            password: registry password or token.
            on_progress: called with each progress line as the server reports it.

        Returns:
            The template made.

        Raises:
            ImageNotFoundError: no such image (or no such platform in it).
            RegistryAuthError: the registry wants credentials, or refused them.
            RegistryUnreachableError: the registry could not be reached.
            ImageCorruptError: a blob did not match its digest (nothing was kept).
            InvalidArgumentError: a malformed reference or name.

        Example:
            >>> AsyncTemplates.pull("127.0.0.1:5000/t/app:1", on_progress=print)
        """
        body: dict[str, Any] = {"ref": ref}
        if name is not None:
            body["name"] = name
        if platform is not None:
            body["platform"] = platform
        if username is not None:
            body["auth"] = {"username": username, "password": password or ""}
        transport = Transport(api_url, api_key, None)
        try:
            async for event in transport.lines("POST", "/images/pull", json=body):
                if event.get("type") == "progress" and on_progress is not None:
                    on_progress(str(event.get("message", "")))
                elif event.get("type") == "template":
                    return TemplateInfo.model_validate(event["template"])
        finally:
            await transport.close()
        raise errors.InternalError(f"the pull of {ref} ended without a result")

    @classmethod
    async def list(cls, *, api_url: str | None = None, api_key: str | None = None) -> builtins.list[TemplateInfo]:
        """Every template on the server."""
        transport = Transport(api_url, api_key, None)
        try:
            return TemplateList.model_validate(await transport.json("GET", "/templates")).templates
        finally:
            await transport.close()

    @classmethod
    async def get(cls, name: str, *, api_url: str | None = None, api_key: str | None = None) -> TemplateInfo:
        """One template: its source, digest, layers, size and config.

        Raises:
            ImageNotFoundError: no such template.
        """
        transport = Transport(api_url, api_key, None)
        try:
            return TemplateInfo.model_validate(await transport.json("GET", _path(name)))
        finally:
            await transport.close()

    @classmethod
    async def delete(cls, name: str, *, api_url: str | None = None, api_key: str | None = None) -> None:
        """Delete a template (admin key) and free the layers no other template uses.

        Raises:
            ImageNotFoundError: no such template.
            ConflictError: running sandboxes (or a warm pool) use it.
        """
        transport = Transport(api_url, api_key, None)
        try:
            await transport.request("DELETE", _path(name))
        finally:
            await transport.close()


class Templates:
    """The blocking twin of `AsyncTemplates` (same arguments, same errors)."""

    @classmethod
    def pull(cls, ref: str, **kw: Any) -> TemplateInfo:
        return _Portal.call(AsyncTemplates.pull(ref, **kw))

    @classmethod
    def list(cls, **kw: Any) -> builtins.list[TemplateInfo]:
        return _Portal.call(AsyncTemplates.list(**kw))

    @classmethod
    def get(cls, name: str, **kw: Any) -> TemplateInfo:
        return _Portal.call(AsyncTemplates.get(name, **kw))

    @classmethod
    def delete(cls, name: str, **kw: Any) -> None:
        _Portal.call(AsyncTemplates.delete(name, **kw))
