"""Fast checks of the pieces crash recovery stands on: failpoints, write-ahead records, scratch
ownership, database errors, lease ownership."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from sandlot import errors, failpoints
from sandlot.api.store import Store, _unavailable
from sandlot.node import intent
from sandlot.node.network import NetworkManager, SandboxNet
from sandlot.node.oci.layers import LayerStore, owner_tag


def test_failpoints_parse_and_fire_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert failpoints.parse(" a.b=kill, c=hang,d=error ,") == {"a.b": "kill", "c": "hang", "d": "error"}
    for bad in ("a", "a=", "=kill", "a=explode"):
        with pytest.raises(ValueError, match="SANDLOT_FAILPOINTS"):
            failpoints.parse(bad)
    monkeypatch.setattr(failpoints, "_points", {"x.step": "error"})
    failpoints.failpoint("other.step")  # not armed: nothing happens
    with pytest.raises(errors.InternalError, match=r"failpoint x\.step \(ctx\)"):
        failpoints.failpoint("x.step", "ctx")
    failpoints.failpoint("x.step")  # fired once: passes now
    assert failpoints.armed() == {}


def test_async_failpoint_hang_parks_only_its_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failpoints, "_points", {"y": "hang"})

    async def main() -> bool:
        parked = asyncio.ensure_future(failpoints.afailpoint("y"))
        await asyncio.sleep(0.05)
        return not parked.done()  # the loop runs on: we got here

    assert asyncio.run(main())
    monkeypatch.setattr(failpoints, "_points", {"z": "hang"})

    async def wrong() -> None:
        failpoints.failpoint("z")  # a thread hang on the loop's thread would stop the server

    with pytest.raises(AssertionError, match="afailpoint"):
        asyncio.run(wrong())


def test_intent_records_are_whole_or_absent(tmp_path: Path) -> None:
    assert intent.read(tmp_path) is None
    intent.begin(tmp_path, restore="ck-x", staged="/d/sb.img.restore")
    assert intent.read(tmp_path) == {"restore": "ck-x", "staged": "/d/sb.img.restore"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["intent.json"]
    intent.end(tmp_path)
    intent.end(tmp_path)
    assert intent.read(tmp_path) is None


def test_scratch_of_a_dead_process_is_swept_and_nothing_else(tmp_path: Path) -> None:
    store = LayerStore(tmp_path)
    mine = store.scratch("upload")
    assert owner_tag() in mine.name
    dead = subprocess.Popen(["true"])
    dead.wait()
    theirs = store.tmp / f"abc@{dead.pid}.1.1234"  # its start time cannot match a live process's
    theirs.mkdir()
    legacy = store.tmp / "import-xyz"  # no owner: left to the age-based clear
    legacy.mkdir()
    assert store.sweep_tmp() == [theirs]
    assert mine.exists() and legacy.exists() and not theirs.exists()


def test_database_errors_are_clear() -> None:
    full = sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    assert isinstance(_unavailable(full, "sqlite"), errors.NoSpaceError)
    away = sa.exc.OperationalError("SELECT", {}, Exception("connection to server at 127.0.0.1 failed"))
    exc = _unavailable(away, "postgresql")
    assert isinstance(exc, errors.DatabaseUnavailableError) and "postgresql database is unavailable" in str(exc)

    store = Store("sqlite:////nonexistent-dir/sandlot.db")
    with pytest.raises(errors.DatabaseUnavailableError, match="unable to open database file"):
        asyncio.run(store.count_active("t"))


def test_a_repeated_teardown_leaves_the_next_holders_lease(tmp_path: Path) -> None:
    nm = NetworkManager("/data", lease_dir=tmp_path)
    (tmp_path / "5").write_text(json.dumps({"owner": "/other", "sandbox_id": "sb-now", "subnet": nm.subnet}))
    assert not nm._holds(SandboxNet("sb-before", 5, nm.subnet))
    assert nm._holds(SandboxNet("sb-now", 5, nm.subnet))
