"""`sandlot run [options] -- CMD [ARG...]`: run one command in a fresh sandbox on this host.

`run` embeds a node (no server needed): it creates a sandbox, streams the
command's output as it is produced, kills the sandbox and exits with the
command's exit code (128 + N for a death by signal N).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sandlot import errors
from sandlot.cli._common import exit_status, pairs, require_extra, run_async, writer

__all__ = ["command"]


async def _run(
    cmd: list[str],
    *,
    image: str,
    runtime: str,
    cpu: float,
    memory_mb: int,
    disk_mb: int,
    timeout: float | None,
    env: dict[str, str],
    data_dir: Path | None,
) -> int:
    from sandlot.node import Limits, Node, NodeConfig, SandboxSpec

    config = NodeConfig(data_dir=data_dir) if data_dir else NodeConfig()
    node = Node(config)
    spec = SandboxSpec(
        image=image, runtime=runtime, limits=Limits(cpu=cpu, memory_mb=memory_mb, disk_mb=disk_mb), env=env
    )
    sbx = await node.create(spec)
    try:
        res = await sbx.run(
            cmd[0] if len(cmd) == 1 else cmd,
            timeout=timeout,
            on_stdout=writer(sys.stdout),
            on_stderr=writer(sys.stderr),
        )
    except errors.TimeoutError_ as exc:
        if exc.result is None:
            raise
        res = exc.result
    finally:
        await node.close()
    if res.oom_killed:
        print("sandlot: the command ran out of memory and was killed", file=sys.stderr)
    if res.timed_out:
        print(f"sandlot: the command timed out after {timeout}s", file=sys.stderr)
    return exit_status(res.exit_code, res.signal)


@click.command("run", context_settings={"allow_interspersed_args": False})
@click.option("--image", default="base", show_default=True, help="image name (base, debian, busybox)")
@click.option("--runtime", default="gvisor", show_default=True, help="gvisor, microvm or container")
@click.option("--cpu", type=float, default=1.0, show_default=True, help="cores")
@click.option("--memory-mb", type=int, default=512, show_default=True, help="memory limit in MiB")
@click.option("--disk-mb", type=int, default=1024, show_default=True, help="writable layer size in MiB")
@click.option("--timeout", type=float, default=None, help="kill the command after this many seconds")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE", help="environment variable (repeatable)")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help="node state (default /var/lib/sandlot as root)"
)
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def command(
    image: str,
    runtime: str,
    cpu: float,
    memory_mb: int,
    disk_mb: int,
    timeout: float | None,
    env: tuple[str, ...],
    data_dir: Path | None,
    cmd: tuple[str, ...],
) -> int:
    """Run a command in a fresh sandbox on this host (no server), then kill it.

    One argument runs through /bin/sh -c. Exits with the command's exit code.
    """
    require_extra("server", "run")
    if not cmd:
        raise errors.InvalidArgumentError("no command given: sandlot run -- CMD [ARG...]", field="cmd")
    return run_async(
        _run(
            list(cmd),
            image=image,
            runtime=runtime,
            cpu=cpu,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            timeout=timeout,
            env=pairs(env, "--env"),
            data_dir=data_dir,
        )
    )
