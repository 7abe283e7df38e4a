"""The `sandlot` command line: one module per command, each a thin layer over the SDK.

    sandlot serve                          run the API server (sandlot.api.serve)
    sandlot node --api-url URL --token T   run this host's node daemon in a fleet (sandlot.node.daemon)
    sandlot nodes ls|drain|rm              the fleet's node daemons (admin)
    sandlot create [--image REF] [options] start a sandbox, print its id
    sandlot ls [--state S] [--metadata K=V]
    sandlot top [--sort cpu|mem|net]       a live table of sandboxes by CPU and memory, like docker stats
    sandlot exec SANDBOX_ID -- CMD...      run a command, stream its output, exit with its code
    sandlot shell SANDBOX_ID               an interactive terminal
    sandlot cp SRC DST                     copy files and directories (SANDBOX_ID:/path on one side)
    sandlot logs SANDBOX_ID [PID]          output of the sandbox's processes
    sandlot kill SANDBOX_ID...
    sandlot pause|resume SANDBOX_ID...
    sandlot checkpoint create|ls|rm        filesystem checkpoints of a sandbox
    sandlot restore SANDBOX_ID CHECKPOINT_ID
    sandlot fork CHECKPOINT_ID [-n COUNT]  new sandboxes from a checkpoint
    sandlot network SANDBOX_ID [--mode M ...]  show or change its network policy (live)
    sandlot port url|public|private SANDBOX_ID PORT   a server in the sandbox, through the API
    sandlot volume create|ls|rm            named volumes (mount with create --volume NAME:/path[:ro])
    sandlot keys create|list|revoke        API keys (admin)
    sandlot keys ssh add|list|rm           the team's SSH keys (sandlot serve --ssh-port)
    sandlot teams ls|show|set-quota        teams' limits and usage (admin)
    sandlot image pull REF                 pull an image from a registry into a template
    sandlot image import|export            docker-save tarballs and OCI layouts in, OCI layouts out
    sandlot template build -t NAME DIR     build a template from a Dockerfile (RUN steps in sandboxes)
    sandlot template ls|inspect|rm         the server's templates
    sandlot template start NAME --cmd ...  a start command (and readiness check) for its sandboxes
    sandlot run -- CMD...                  one command in a fresh sandbox on this host (embeds a node)
    sandlot e2b-env                        export lines that point the E2B SDKs here
    sandlot mcp                            Sandlot's tools for MCP clients, over stdio

`serve` and `run` need the server part (`pip install 'sandlot[server]'`), `mcp`
the `mcp` package (`sandlot[mcp]`); they say so when it is missing.
Every command but `run` and `serve` talks to the API at --api-url / $SANDLOT_API_URL
with --api-key / $SANDLOT_API_KEY (else a local server's admin key). A user error
prints `sandlot: <message>` on stderr and exits 2; a command's own exit code is
passed through by `exec`, `shell` and `run`.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from sandlot import errors
from sandlot.cli import (
    checkpoint,
    cp,
    create,
    e2b_env,
    exec_,
    keys,
    kill,
    logs,
    ls,
    mcp,
    network,
    node,
    nodes,
    pause,
    port,
    run,
    serve,
    shell,
    teams,
    templates,
    top,
    volume,
)
from sandlot.cli._common import Api, OutputClosed

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api-url", default=None, metavar="URL", help="the API (default $SANDLOT_API_URL, else :7770 locally)")
@click.option(
    "--api-key", default=None, metavar="KEY", help="API key (default $SANDLOT_API_KEY, else the local admin key)"
)
@click.pass_context
def cli(ctx: click.Context, api_url: str | None, api_key: str | None) -> None:
    """Secure sandboxes for AI code execution."""
    ctx.obj = Api(url=api_url, key=api_key)


for _module in (
    serve,
    node,
    nodes,
    create,
    ls,
    top,
    exec_,
    shell,
    cp,
    logs,
    kill,
    keys,
    teams,
    run,
    network,
    port,
    e2b_env,
    mcp,
):
    cli.add_command(_module.command)
cli.add_command(pause.pause_command)
cli.add_command(pause.resume_command)
cli.add_command(checkpoint.checkpoint_group)
cli.add_command(checkpoint.restore_command)
cli.add_command(checkpoint.fork_command)
cli.add_command(templates.image_group)
cli.add_command(templates.template_group)
cli.add_command(volume.volume_group)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    try:
        result = cli.main(args=argv, prog_name="sandlot", standalone_mode=False)
    except errors.SandlotError as exc:
        print(f"sandlot: {exc}", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        print(file=sys.stderr)
        return 130
    except OutputClosed:  # `sandlot ... | head`: stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 128 + signal.SIGPIPE
    except OSError as exc:  # a local file: cp's source missing, destination unwritable, ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"sandlot: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
