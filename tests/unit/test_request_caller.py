"""A request to a sandbox learns its caller and the sandbox's record in one trip to the store
(`auth.principal_and_sandbox`), with the same answers as the two lookups it replaces."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sandlot import errors
from sandlot.api import auth
from sandlot.api.store import SandboxRecord, Store


def _request(store: Store, headers: dict[str, str]) -> Any:
    """What `principal_and_sandbox` reads of a request: its headers, and the app's store."""
    return SimpleNamespace(headers=headers, app=SimpleNamespace(state=SimpleNamespace(store=store)))


def _record(sandbox_id: str, team: str) -> SandboxRecord:
    now = time.time()
    return SandboxRecord(sandbox_id, team, "base", "gvisor", 1, 512, 1024, "running", now, now + 300,
                         metadata={"job": "a"})  # fmt: skip


def test_one_trip_finds_the_caller_and_its_teams_sandbox(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'api.db'}")
    trips = 0
    run = store._run

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await run(*args, **kwargs)

    async def scenario() -> None:
        nonlocal trips
        await store.init()
        ours, key = await auth.create_key(store, "red")
        _, other_key = await auth.create_key(store, "blue")
        revoked, revoked_key = await auth.create_key(store, "red")
        await store.revoke_key(revoked.key_id)
        await store.add_sandbox(_record("sb-0123456789abcdef", "red"))
        store._run = counted  # type: ignore[method-assign]

        trips = 0
        who, rec = await auth.principal_and_sandbox(_request(store, {"x-api-key": key}), "sb-0123456789abcdef")
        assert trips == 1
        assert who == auth.Principal(ours.key_id, "red", False)
        assert rec is not None and rec.team == "red" and rec.metadata == {"job": "a"}
        # The same answer as the two lookups it replaces.
        assert rec == await store.get_sandbox("sb-0123456789abcdef", "red")

        # Bearer form, and a sandbox the team does not have.
        who, rec = await auth.principal_and_sandbox(
            _request(store, {"authorization": f"Bearer {key}"}), "sb-fedcba9876543210"
        )
        assert who.team == "red" and rec is None
        # Another team's key finds nothing of red's.
        who, rec = await auth.principal_and_sandbox(_request(store, {"x-api-key": other_key}), "sb-0123456789abcdef")
        assert who.team == "blue" and rec is None

        for headers, why in (
            ({}, "no API key"),
            ({"x-api-key": "sl_" + "0" * 52}, "unknown or revoked"),
            ({"x-api-key": revoked_key}, "unknown or revoked"),
            ({"x-api-key": "k" * 300}, "not valid"),
        ):
            with pytest.raises(errors.AuthenticationError, match=why):
                await auth.principal_and_sandbox(_request(store, headers), "sb-0123456789abcdef")
        await store.close()

    asyncio.run(scenario())
