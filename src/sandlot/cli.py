"""The `sandlot` command line.

    sandlot run [options] -- CMD [ARG...]   run one command in a fresh sandbox on this host

`run` embeds a node (no server needed): it creates a sandbox, streams the
command's output as it is produced, kills the sandbox and exits with the
command's exit code (128 + N for a death by signal N).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from sandlot import errors

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sandlot", description="Secure sandboxes for AI code execution.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a command in a fresh sandbox, then kill it")
    run.add_argument("--image", default="base", help="image name (base, debian, busybox); default: base")
    run.add_argument("--runtime", default="gvisor", help="gvisor (default) or container")
    run.add_argument("--cpu", type=float, default=1.0, help="cores (default 1)")
    run.add_argument("--memory-mb", type=int, default=512, help="memory limit in MiB (default 512)")
    run.add_argument("--disk-mb", type=int, default=1024, help="writable layer size in MiB (default 1024)")
    run.add_argument("--timeout", type=float, default=None, help="kill the command after this many seconds")
    run.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--data-dir", type=Path, default=None, help="node state (default /var/lib/sandlot as root)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="the command; one argument runs through /bin/sh -c")
    return parser


async def _run(args: argparse.Namespace) -> int:
    from sandlot.node import Limits, Node, NodeConfig, SandboxSpec

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise errors.InvalidArgumentError("no command given: sandlot run -- CMD [ARG...]", field="cmd")
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise errors.InvalidArgumentError(f"--env wants KEY=VALUE, got {item!r}", field="env")
        env[key] = value
    config = NodeConfig(data_dir=args.data_dir) if args.data_dir else NodeConfig()
    node = Node(config)
    spec = SandboxSpec(
        image=args.image,
        runtime=args.runtime,
        limits=Limits(cpu=args.cpu, memory_mb=args.memory_mb, disk_mb=args.disk_mb),
        env=env,
    )
    sbx = await node.create(spec)
    try:
        res = await sbx.run(
            cmd[0] if len(cmd) == 1 else cmd,
            timeout=args.timeout,
            on_stdout=lambda s: (sys.stdout.write(s), sys.stdout.flush()),
            on_stderr=lambda s: (sys.stderr.write(s), sys.stderr.flush()),
        )
    finally:
        await node.close()
    if res.oom_killed:
        print("sandlot: the command ran out of memory and was killed", file=sys.stderr)
    if res.timed_out:
        print(f"sandlot: the command timed out after {args.timeout}s", file=sys.stderr)
    if res.signal is not None:
        return 128 + res.signal
    return res.exit_code if res.exit_code is not None else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return asyncio.run(_run(args))
    except errors.SandlotError as exc:
        print(f"sandlot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
