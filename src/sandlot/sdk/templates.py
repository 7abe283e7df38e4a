"""Templates on a Sandlot server: pull images into them, list, inspect, delete.

`AsyncTemplates` is the implementation; `Templates` (sandlot.sdk.sync) is its generated blocking twin.

    from sandlot.sdk import Templates
    Templates.pull("127.0.0.1:5000/team/app:1", on_progress=print)
    Sandbox.create(image="127.0.0.1:5000/team/app:1")
"""

from __future__ import annotations

import builtins
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sandlot import errors
from sandlot.models import TemplateInfo, TemplateList
from sandlot.safetar import extract_all
from sandlot.sdk._transport import Transport

__all__ = ["AsyncTemplates"]

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
        return await _template_from("/images/pull", f"the pull of {ref}", on_progress, api_url, api_key, json=body)

    @classmethod
    async def build(
        cls,
        context: str | os.PathLike[str],
        name: str,
        *,
        dockerfile: str | os.PathLike[str] | None = None,
        build_args: dict[str, str] | None = None,
        network: str = "full",
        on_progress: ProgressHandler | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> TemplateInfo:
        """Build a template from a Dockerfile; RUN steps run in sandboxes on the server.

        Args:
            context: the build context directory (sent to the server as a tar).
            name: the template to make (replaced if it exists, once the build worked).
            dockerfile: its path (default: `context`/Dockerfile); may lie outside the context.
            build_args: values for the Dockerfile's ARGs.
            network: the RUN steps' network, "full" (default, as `docker build`) or "none".
            on_progress: called with each step line and each line of output.

        Returns:
            The template made.

        Raises:
            DockerfileError: the Dockerfile does not parse (`line` says where).
            BuildError: a step failed (`exit_code`, and its output in the message).
            ImageNotFoundError: the FROM image does not exist.

        Example:
            >>> AsyncTemplates.build("./app", "my-app", on_progress=print)
        """
        root = Path(context)
        if not root.is_dir():
            raise errors.InvalidArgumentError(f"build context {root} is not a directory", field="context")
        df = Path(dockerfile) if dockerfile is not None else root / "Dockerfile"
        if not df.is_file():
            raise errors.InvalidArgumentError(f"no Dockerfile at {df}", field="dockerfile")
        with tempfile.TemporaryFile() as tar_file:
            with tarfile.open(fileobj=tar_file, mode="w") as tar:
                tar.add(root, arcname=".")
                if df.resolve().is_relative_to(root.resolve()):
                    df_name = str(df.resolve().relative_to(root.resolve()))
                else:
                    df_name = ".sandlot-dockerfile"
                    tar.add(df, arcname=df_name)
            tar_file.seek(0)
            body = tar_file.read()
        params: list[tuple[str, str]] = [("name", name), ("dockerfile", df_name), ("network", network)]
        params += [("build_arg", f"{k}={v}") for k, v in (build_args or {}).items()]
        return await _template_from(
            "/templates/build", f"the build of {name}", on_progress, api_url, api_key, params=params, tar=body
        )

    @classmethod
    async def import_image(
        cls,
        path: str | os.PathLike[str],
        name: str,
        *,
        tag: str | None = None,
        on_progress: ProgressHandler | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> TemplateInfo:
        """Import a `docker save` / `podman save` tarball, or an OCI layout (a directory or its tar).

        Args:
            path: the tarball, or an OCI image layout directory (sent as a tar).
            name: the template to make.
            tag: which image, when the file holds several (a RepoTag, or the layout's ref name).

        Raises:
            ImageCorruptError: a blob does not match its digest (nothing is kept).
            InvalidArgumentError: not an image archive, or several images and no `tag`.
        """
        src = Path(path)
        with tempfile.TemporaryFile() as tmp:
            if src.is_dir():
                with tarfile.open(fileobj=tmp, mode="w") as tar:
                    for child in sorted(src.iterdir()):
                        tar.add(child, arcname=child.name)
                tmp.seek(0)
                body = tmp.read()
            else:
                body = src.read_bytes()
        params = [("name", name)] + ([("tag", tag)] if tag else [])
        return await _template_from(
            "/templates/import", f"the import of {src}", on_progress, api_url, api_key, params=params, tar=body
        )

    @classmethod
    async def export(
        cls,
        dest: str | os.PathLike[str],
        *,
        name: str | None = None,
        sandbox_id: str | None = None,
        tag: str = "latest",
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> Path:
        """Write a template, or a sandbox's filesystem, as an OCI image layout directory `dest`.

        skopeo, podman and umoci read it: `skopeo copy oci:DEST:TAG docker://...`.

        Raises:
            ImageNotFoundError / SandboxNotFoundError: no such template or sandbox.
        """
        if (name is None) == (sandbox_id is None):
            raise errors.InvalidArgumentError("give a template name or a sandbox_id", field="name")
        url = _path(name) + "/export" if name is not None else f"/sandboxes/{sandbox_id}/export"
        out = Path(dest)
        transport = Transport(api_url, api_key, None)
        try:
            with tempfile.TemporaryFile() as tmp:
                async for chunk in transport.stream("GET", url, params={"tag": tag}):
                    tmp.write(chunk)
                tmp.seek(0)
                out.mkdir(parents=True, exist_ok=True)
                with tarfile.open(fileobj=tmp) as tar:
                    extract_all(tar, out)
        finally:
            await transport.close()
        return out

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
    async def set_start(
        cls,
        name: str,
        cmd: str | None,
        *,
        ready_cmd: str | None = None,
        ready_port: int | None = None,
        timeout: float = 60.0,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> TemplateInfo:
        """Make every new sandbox of `name` start `cmd` and wait until it is ready (admin key).

        Args:
            name: the template.
            cmd: a shell command left running (a server); None removes the start command.
            ready_cmd: ready once this command exits 0.
            ready_port: ready once this TCP port listens inside the sandbox.
            timeout: seconds a create waits before failing with TimeoutError_.

        Example:
            >>> AsyncTemplates.set_start("web", "python3 -m http.server 8000", ready_port=8000)
        """
        transport = Transport(api_url, api_key, None)
        try:
            if cmd is None:
                raw = await transport.json("DELETE", _path(name) + "/start")
            else:
                body = {"cmd": cmd, "ready_cmd": ready_cmd, "ready_port": ready_port, "timeout": timeout}
                raw = await transport.json("PUT", _path(name) + "/start", json=body)
            return TemplateInfo.model_validate(raw)
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


async def _template_from(
    path: str,
    what: str,
    on_progress: ProgressHandler | None,
    api_url: str | None,
    api_key: str | None,
    *,
    tar: bytes | None = None,
    **kw: Any,
) -> TemplateInfo:
    """POST to a pull, build or import route and follow its event stream to the template it made."""
    if tar is not None:
        kw.update(content=tar, headers={"Content-Type": "application/x-tar"})
    transport = Transport(api_url, api_key, None)
    try:
        async for event in transport.lines("POST", path, **kw):
            if event.get("type") == "progress" and on_progress is not None:
                on_progress(str(event.get("message", "")))
            elif event.get("type") == "template":
                return TemplateInfo.model_validate(event["template"])
    finally:
        await transport.close()
    raise errors.InternalError(f"{what} ended without a result")
