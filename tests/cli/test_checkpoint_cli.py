"""`sandlot checkpoint create|ls|rm`, `sandlot restore` and `sandlot fork` against a live server."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import Cli

pytestmark = pytest.mark.integration


def test_checkpoint_restore_fork_rm(cli: Cli) -> None:
    sid = cli("create", "--timeout", "120", check=True).stdout.strip()
    cli("exec", sid, "echo saved > /f", check=True)
    ck = cli("checkpoint", "create", sid, "saved", check=True).stdout.strip()
    assert ck.startswith("ck-")
    listed = json.loads(cli("checkpoint", "ls", sid, "--json", check=True).stdout)
    assert [(c["checkpoint_id"], c["name"]) for c in listed] == [(ck, "saved")]
    assert "saved" in cli("checkpoint", "ls", sid, check=True).stdout
    cli("exec", sid, "echo changed > /f", check=True)
    assert cli("restore", sid, ck, check=True).stdout.strip() == sid
    assert cli("exec", sid, "cat /f", check=True).stdout == "saved\n"
    kids = cli("fork", ck, "-n", "2", check=True).stdout.split()
    assert len(kids) == 2 and all(k.startswith("sb-") for k in kids)
    assert cli("exec", kids[1], "cat /f", check=True).stdout == "saved\n"
    res = cli("checkpoint", "create", sid, "saved")
    assert res.returncode == 2 and "already has a checkpoint named 'saved'" in res.stderr, res.stderr
    assert cli("checkpoint", "rm", ck, check=True).stdout.strip() == ck
    res = cli("fork", ck)
    assert res.returncode == 2 and f"checkpoint {ck} not found" in res.stderr, res.stderr
    cli("kill", sid, *kids, check=True)


def test_pause_with_memory(cli: Cli) -> None:
    sid = cli("create", "--timeout", "120", check=True).stdout.strip()
    crun = cli("create", "--runtime", "container", "--timeout", "120", check=True).stdout.strip()
    cli("exec", sid, "echo kept > /tmp/f", check=True)
    mem = json.loads(cli("checkpoint", "create", "--memory", sid, "mem", "--json", check=True).stdout)
    assert mem["memory"] is True
    assert cli("restore", sid, mem["checkpoint_id"], check=True).stdout.strip() == sid
    assert cli("pause", "--memory", sid, check=True).stdout.split() == [sid]
    assert json.loads(cli("ls", "--state", "paused", "--json", check=True).stdout)[0]["sandbox_id"] == sid
    assert cli("resume", sid, check=True).stdout.split() == [sid]
    assert cli("exec", sid, "cat /tmp/f", check=True).stdout == "kept\n"
    res = cli("pause", "--memory", crun)
    assert res.returncode == 2 and "runtime 'container' cannot pause a sandbox with its memory" in res.stderr
    info = json.loads(cli("create", "--persistent", "--on-timeout", "pause", "--json", check=True).stdout)
    assert info["persistent"] is True and info["on_timeout"] == "pause"
    cli("kill", sid, crun, info["sandbox_id"], check=True)


def test_volumes(cli: Cli) -> None:
    assert cli("volume", "create", "cli-vol", check=True).stdout.strip() == "cli-vol"
    sid = cli("create", "--volume", "cli-vol:/data", check=True).stdout.strip()
    cli("exec", sid, "echo hi > /data/f", check=True)
    ro = cli("create", "-v", "cli-vol:/data:ro", check=True).stdout.strip()
    assert cli("exec", ro, "cat /data/f", check=True).stdout == "hi\n"
    assert "cli-vol" in cli("volume", "ls", check=True).stdout
    res = cli("volume", "rm", "cli-vol")
    assert res.returncode == 2 and "mounted by" in res.stderr, res.stderr
    res = cli("create", "--volume", "cli-vol")
    assert res.returncode == 2 and "--volume wants NAME:/path[:ro]" in res.stderr, res.stderr
    cli("kill", sid, ro, check=True)
    assert cli("volume", "rm", "cli-vol", check=True).stdout.strip() == "cli-vol"
