"""`sandlot image pull` and `sandlot template ls|inspect|rm`: templates on the server."""

from __future__ import annotations

import os

import click

from sandlot.cli._common import Api, console, fmt_ago, json_option, pairs, pass_api, print_json, run_async, table
from sandlot.sdk import AsyncTemplates, TemplateInfo

__all__ = ["image_group", "template_group"]


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@click.group("image")
def image_group() -> None:
    """Images in registries (pulled into templates)."""


@image_group.command("pull")
@click.argument("ref")
@click.option("--name", default=None, help="template name (default: REF itself)")
@click.option(
    "--platform", default=None, metavar="OS/ARCH", help="pick from a multi-platform image (default linux/amd64)"
)
@click.option("--username", "-u", default=None, help="registry user (password from $SANDLOT_REGISTRY_PASSWORD)")
@click.option("--quiet", "-q", is_flag=True, help="no progress lines")
@json_option
@pass_api
def pull(
    api: Api, ref: str, name: str | None, platform: str | None, username: str | None, quiet: bool, as_json: bool
) -> None:
    """Pull REF (host[:port]/repo[:tag]) into a template; progress on stderr."""
    password = os.environ.get("SANDLOT_REGISTRY_PASSWORD") if username else None
    info = run_async(
        AsyncTemplates.pull(
            ref,
            name=name,
            platform=platform,
            username=username,
            password=password,
            on_progress=None if quiet else (lambda line: click.echo(line, err=True)),
            api_url=api.url,
            api_key=api.key,
        )
    )
    if as_json:
        print_json(info)
    else:
        click.echo(f"{info.name} {info.digest} ({info.layers} layers, {_size(info.size)})")


@image_group.command("import")
@click.argument("path", type=click.Path(exists=True))
@click.option("--name", required=True, help="the template to make")
@click.option("--tag", default=None, help="which image, when the file holds several")
@pass_api
def import_(api: Api, path: str, name: str, tag: str | None) -> None:
    """Import a docker save / podman save tarball, or an OCI layout (directory or tar), as a template."""
    info = run_async(
        AsyncTemplates.import_image(
            path, name, tag=tag, on_progress=lambda line: click.echo(line, err=True), api_url=api.url, api_key=api.key
        )
    )
    click.echo(f"{info.name} {info.digest} ({info.layers} layers, {_size(info.size)})")


@image_group.command("export")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--template", "-t", "name", default=None, help="the template to export")
@click.option("--sandbox", "-s", "sandbox_id", default=None, help="or a sandbox's filesystem")
@click.option("--tag", default="latest", show_default=True, help="the image's tag in the layout")
@pass_api
def export(api: Api, dest: str, name: str | None, sandbox_id: str | None, tag: str) -> None:
    """Write a template or a sandbox as an OCI image layout directory DEST (skopeo: oci:DEST:TAG)."""
    out = run_async(
        AsyncTemplates.export(dest, name=name, sandbox_id=sandbox_id, tag=tag, api_url=api.url, api_key=api.key)
    )
    click.echo(f"oci:{out}:{tag}")


@click.group("template")
def template_group() -> None:
    """Templates: what sandboxes start from."""


@template_group.command("build")
@click.argument("context", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--file", "-f", "dockerfile", default=None, type=click.Path(dir_okay=False), help="default CONTEXT/Dockerfile"
)
@click.option("--tag", "-t", "name", required=True, help="the template to make")
@click.option("--build-arg", multiple=True, metavar="KEY=VALUE", help="a Dockerfile ARG (repeatable)")
@click.option(
    "--network", type=click.Choice(["full", "none"]), default="full", show_default=True, help="RUN steps' network"
)
@click.option("--quiet", "-q", is_flag=True, help="no step output")
@json_option
@pass_api
def build(
    api: Api,
    context: str,
    dockerfile: str | None,
    name: str,
    build_arg: tuple[str, ...],
    network: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Build template NAME from a Dockerfile; RUN steps run in sandboxes, their output on stderr."""
    info = run_async(
        AsyncTemplates.build(
            context,
            name,
            dockerfile=dockerfile,
            build_args=pairs(build_arg, "--build-arg"),
            network=network,
            on_progress=None if quiet else (lambda line: click.echo(line, err=True)),
            api_url=api.url,
            api_key=api.key,
        )
    )
    if as_json:
        print_json(info)
    else:
        click.echo(f"{info.name} ({info.layers} layers, {_size(info.size)})")


@template_group.command("ls")
@json_option
@pass_api
def ls(api: Api, as_json: bool) -> None:
    """List the server's templates."""
    templates = run_async(AsyncTemplates.list(api_url=api.url, api_key=api.key))
    if as_json:
        print_json(templates)
    elif templates:
        rows = [[t.name, t.source, str(t.layers), _size(t.size), fmt_ago(t.created_at)] for t in templates]
        console().print(table(["NAME", "SOURCE", "LAYERS", "SIZE", "CREATED"], rows))  # type: ignore[arg-type]
    else:
        click.echo("no templates", err=True)


@template_group.command("inspect")
@click.argument("name")
@pass_api
def inspect(api: Api, name: str) -> None:
    """A template's source, digest, layers and config, as JSON."""
    info: TemplateInfo = run_async(AsyncTemplates.get(name, api_url=api.url, api_key=api.key))
    print_json(info)


@template_group.command("start")
@click.argument("name")
@click.option("--cmd", default=None, help="shell command every new sandbox starts (omit to remove it)")
@click.option("--ready-cmd", default=None, help="ready once this command exits 0")
@click.option("--ready-port", type=int, default=None, help="ready once this TCP port listens")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="seconds a create waits")
@pass_api
def start(api: Api, name: str, cmd: str | None, ready_cmd: str | None, ready_port: int | None, timeout: float) -> None:
    """Set (or, without --cmd, remove) the template's start command and readiness check."""
    info = run_async(
        AsyncTemplates.set_start(
            name, cmd, ready_cmd=ready_cmd, ready_port=ready_port, timeout=timeout, api_url=api.url, api_key=api.key
        )
    )
    click.echo(f"{info.name}: " + (f"starts {info.start.cmd!r}" if info.start else "no start command"))


@template_group.command("rm")
@click.argument("names", nargs=-1, required=True)
@pass_api
def rm(api: Api, names: tuple[str, ...]) -> None:
    """Delete templates (admin key) and free the layers nothing else uses."""
    for name in names:
        run_async(AsyncTemplates.delete(name, api_url=api.url, api_key=api.key))
        click.echo(name)
