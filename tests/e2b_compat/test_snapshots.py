"""The `e2b` SDK's snapshots, fork and memory pause, mapped onto Sandlot's checkpoints and fork."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def sbx(e2b_env: dict[str, str]) -> Iterator[Sandbox]:
    s = Sandbox.create(template="base", timeout=300, metadata={"suite": "snapshots"}, envs={"FROM_CREATE": "yes"})
    yield s
    s.kill()


def test_snapshot_create_from_it_fork_list_delete(sbx: Sandbox) -> None:
    sbx.files.write("/home/user/state.txt", "before")
    snap = sbx.create_snapshot()
    assert snap.snapshot_id.startswith("ck-") and len(snap.names) == 1
    sbx.files.write("/home/user/state.txt", "after")

    listed = [s.snapshot_id for s in Sandbox.list_snapshots().next_items()]
    assert snap.snapshot_id in listed
    assert [s.snapshot_id for s in sbx.list_snapshots().next_items()] == [snap.snapshot_id]

    forks = sbx.fork(count=2, timeout=120)
    try:
        assert len(forks) == 2
        for f in forks:
            assert isinstance(f, Sandbox), f
            assert f.files.read("/home/user/state.txt") == "after"
            assert f.get_info().metadata == {"suite": "snapshots"}
    finally:
        for f in forks:
            if isinstance(f, Sandbox):
                f.kill()
    # the fork's own checkpoint is gone once its sandboxes started
    assert [s.snapshot_id for s in sbx.list_snapshots().next_items()] == [snap.snapshot_id]

    sbx.kill()  # a snapshot outlives its sandbox
    child = Sandbox.create(template=snap.snapshot_id, timeout=120, metadata={"from": "snapshot"})
    try:
        assert child.sandbox_id != sbx.sandbox_id
        assert child.files.read("/home/user/state.txt") == "before"
        assert child.commands.run("echo $FROM_CREATE").stdout == "yes\n"  # the snapshot's environment
        assert child.get_info().metadata == {"from": "snapshot"}
    finally:
        child.kill()
    with pytest.raises(SandboxException, match="envVars"):
        Sandbox.create(template=snap.snapshot_id, envs={"A": "b"})

    assert Sandbox.delete_snapshot(snap.snapshot_id) is True
    assert snap.snapshot_id not in [s.snapshot_id for s in Sandbox.list_snapshots().next_items()]
    assert Sandbox.delete_snapshot(snap.snapshot_id) is False
    with pytest.raises(SandboxException, match="not found") as ei:
        Sandbox.create(template=snap.snapshot_id)
    assert ei.value.status_code == 404  # type: ignore[attr-defined]


def test_pause_with_memory_keeps_processes(sbx: Sandbox) -> None:
    """`mode="full"` is Sandlot's memory pause under gVisor: the processes are saved to disk and restored."""
    sleeper = sbx.commands.run("sleep 600", background=True)
    sbx.files.write("/home/user/kept.txt", "kept")
    assert sbx.pause(mode="full") is True
    assert sbx.get_info().state.value == "paused"
    assert sbx.pause(mode="full") is False  # already paused
    resumed = Sandbox.connect(sbx.sandbox_id)
    assert resumed.get_info().state.value == "running"
    assert sleeper.pid in [p.pid for p in resumed.commands.list()]
    assert resumed.files.read("/home/user/kept.txt") == "kept"
