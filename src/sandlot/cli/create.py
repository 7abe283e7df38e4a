"""`sandlot create`: start a sandbox and print its id (or its record as JSON)."""

from __future__ import annotations

import click

from sandlot.cli._common import Api, json_option, pairs, pass_api, print_json, run_async
from sandlot.cli.network import network_options, policy
from sandlot.cli.volume import parse_mount
from sandlot.sdk import AsyncSandbox, SandboxInfo

__all__ = ["command"]


@click.command("create")
@click.option("--template", "-t", default=None, help="template (default: the server's, usually base)")
@click.option("--image", "-i", default=None, metavar="REF", help="an image reference instead, pulled on first use")
@click.option("--runtime", default=None, help="gvisor (default), microvm or container")
@click.option("--cpu", type=float, default=None, help="cores")
@click.option("--memory-mb", type=int, default=None, help="memory limit in MiB")
@click.option("--disk-mb", type=int, default=None, help="writable disk in MiB")
@click.option("--timeout", type=int, default=300, show_default=True, help="seconds until the server kills it")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE", help="environment of every command (repeatable)")
@click.option("--metadata", "-m", multiple=True, metavar="KEY=VALUE", help="label (repeatable)")
@click.option("--network", type=click.Choice(["none", "egress", "full"]), default=None, help="default: none")
@network_options
@click.option("--volume", "-v", "volumes", multiple=True, metavar="NAME:/PATH[:ro]", help="mount a volume (repeatable)")
@click.option("--persistent", is_flag=True, help="never killed by its timeout; hibernates when idle")
@click.option(
    "--on-timeout",
    type=click.Choice(["kill", "pause", "hibernate"]),
    default="kill",
    show_default=True,
    help="what the timeout does (hibernate: processes stopped, files kept)",
)
@click.option("--auto-resume", is_flag=True, help="paused or hibernated, the next request to it resumes it")
@json_option
@pass_api
def command(
    api: Api,
    template: str | None,
    image: str | None,
    runtime: str | None,
    cpu: float | None,
    memory_mb: int | None,
    disk_mb: int | None,
    timeout: int,
    env: tuple[str, ...],
    metadata: tuple[str, ...],
    network: str | None,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    egress_bytes_per_s: int | None,
    max_connections: int | None,
    volumes: tuple[str, ...],
    persistent: bool,
    on_timeout: str,
    auto_resume: bool,
    as_json: bool,
) -> None:
    """Start a sandbox; print its id."""

    async def create() -> SandboxInfo:
        sbx = await AsyncSandbox.create(
            template,
            image=image,
            timeout=timeout,
            runtime=runtime,
            cpu=cpu,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            env=pairs(env, "--env"),
            metadata=pairs(metadata, "--metadata"),
            network=policy(network or "none", allow, deny, egress_bytes_per_s, max_connections)
            if network or allow or deny
            else None,
            persistent=persistent,
            on_timeout=on_timeout,
            auto_resume=auto_resume,
            volumes=[parse_mount(v) for v in volumes],
            api_url=api.url,
            api_key=api.key,
        )
        try:
            return await sbx.get_info()
        finally:
            await sbx.close()

    info = run_async(create())
    if as_json:
        print_json(info)
    else:
        click.echo(info.sandbox_id)
