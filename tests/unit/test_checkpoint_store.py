"""CheckpointStore's listing: what is on disk, each record read once, never a stale or shared one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sandlot.node.checkpoints import CheckpointStore, spec_from_dict
from sandlot.node.spec import SandboxSpec


def _take(store: CheckpointStore, sandbox_id: str, name: str, size: int = 4096) -> str:
    async def snapshot(path: Path) -> None:
        path.write_bytes(b"x" * size)

    spec = SandboxSpec(image="busybox", env={"A": "1"})
    return asyncio.run(store.take(sandbox_id, name, spec, snapshot)).id


def test_a_listing_follows_takes_and_deletes(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    assert store.list() == []
    a = _take(store, "sb-a", "one")
    b = _take(store, "sb-b", "two")
    c = _take(store, "sb-a", "three")
    assert [ck.id for ck in store.list()] == [a, b, c]  # oldest first
    assert [ck.name for ck in store.list("sb-a")] == ["one", "three"]
    (tmp_path / "checkpoints" / ".ck-0000000000000000.tmp").mkdir()  # a take cut short: not listed
    store.delete(b)
    assert [ck.id for ck in store.list()] == [a, c]
    d = _take(store, "sb-b", "two")  # the name is free again
    assert [ck.id for ck in store.list("sb-b")] == [d]


def test_a_record_replaced_by_a_move_is_listed_as_it_is_now(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    ck_id = _take(store, "sb-a", "one", size=4096)
    (old,) = store.list()
    disk = tmp_path / "moved.img"
    disk.write_bytes(b"y" * (1 << 20))
    record = old.record() | {"name": "moved"}
    store.adopt(record, disk)  # an earlier, cut-short move's copy is replaced
    (now,) = store.list()
    assert (now.id, now.name) == (ck_id, "moved")
    assert now.size_bytes >= 1 << 20 > old.size_bytes


def test_a_spec_rebuilt_from_a_listed_checkpoint_shares_nothing_with_it(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    _take(store, "sb-a", "one")
    (ck,) = store.list()
    spec = spec_from_dict(ck.spec)
    spec.env["A"] = "changed"
    spec.env["B"] = "added"
    (again,) = store.list()
    assert again.spec["env"] == {"A": "1"}
    assert spec_from_dict(again.spec).env == {"A": "1"}


def test_another_store_on_the_same_directory_sees_the_same(tmp_path: Path) -> None:
    """A node restarted on its disk store lists what the last one left."""
    first = CheckpointStore(tmp_path / "checkpoints")
    ids = [_take(first, "sb-a", f"n{i}") for i in range(3)]
    first.list()
    second = CheckpointStore(tmp_path / "checkpoints")
    assert [ck.id for ck in second.list()] == ids
    second.delete(ids[1])
    assert [ck.id for ck in first.list()] == [ids[0], ids[2]]
