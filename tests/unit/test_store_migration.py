"""A database made by an older release gains the columns added since, and its rows read as before."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from sandlot.api.store import ADDED_COLUMNS, Store, metadata_obj


def test_an_older_database_gets_the_new_columns(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    added = {c for t, c, _ in ADDED_COLUMNS if t == "sandboxes"}
    older = sa.MetaData()
    columns = [c for c in metadata_obj.tables["sandboxes"].c if c.name not in added]
    sa.Table("sandboxes", older, *(sa.Column(c.name, c.type, primary_key=c.primary_key) for c in columns))
    older.create_all(store.engine)
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO sandboxes (sandbox_id, team, template, runtime, cpu, memory_mb, disk_mb, state, "
                "created_at, ends_at) VALUES ('sb-0123456789abcdef', 't', 'base', 'gvisor', 1, 512, 1024, "
                "'running', 1, 2)"
            )
        )

    async def start_twice() -> object:
        await store.init()
        await store.init()  # nothing left to add the second time
        return await store.get_sandbox("sb-0123456789abcdef")

    rec = asyncio.run(start_twice())
    assert rec is not None
    assert (rec.persistent, rec.on_timeout, rec.node) == (False, "kill", "local")  # type: ignore[attr-defined]
    assert rec.node_labels == {}  # type: ignore[attr-defined]


def test_a_sandboxs_node_labels_are_kept(tmp_path: Path) -> None:
    from sandlot.api.store import SandboxRecord

    store = Store(f"sqlite:///{tmp_path / 'new.db'}")
    rec = SandboxRecord("sb-0123456789abcdef", "t", "base", "gvisor", 1, 512, 1024, "running", 1, 2,
                        node_labels={"zone": "b", "gpu": "true"})  # fmt: skip

    async def scenario() -> object:
        await store.init()
        await store.add_sandbox(rec)
        return await store.get_sandbox(rec.sandbox_id)

    got = asyncio.run(scenario())
    assert got is not None and got.node_labels == {"zone": "b", "gpu": "true"}  # type: ignore[attr-defined]
