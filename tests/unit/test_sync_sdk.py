"""The blocking SDK is derived from the async one: no parameter, default or method may drift.

`scripts/gen_sync_sdk.py` writes sandlot/sdk/sync.py from the async classes;
these tests fail when that file is stale (someone changed an async signature
and did not regenerate) or was edited by hand so that a twin differs.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sandlot.sdk import sync
from sandlot.sdk.commands import AsyncCommandHandle, AsyncCommands
from sandlot.sdk.files import AsyncFiles, AsyncWatchHandle
from sandlot.sdk.network import AsyncNetwork
from sandlot.sdk.pty import AsyncPty, AsyncPtyHandle
from sandlot.sdk.sandbox import AsyncSandbox
from sandlot.sdk.templates import AsyncTemplates
from sandlot.sdk.volumes import AsyncVolumes

ROOT = Path(__file__).resolve().parents[2]

PAIRS: list[tuple[type, type]] = [
    (AsyncSandbox, sync.Sandbox),
    (AsyncCommands, sync.Commands),
    (AsyncCommandHandle, sync.CommandHandle),
    (AsyncFiles, sync.Files),
    (AsyncWatchHandle, sync.WatchHandle),
    (AsyncPty, sync.Pty),
    (AsyncPtyHandle, sync.PtyHandle),
    (AsyncNetwork, sync.Network),
    (AsyncTemplates, sync.Templates),
    (AsyncVolumes, sync.Volumes),
]
DUNDERS = {"__aenter__": "__enter__", "__aexit__": "__exit__", "__aiter__": "__iter__"}


def _blocking_text(annotation: Any) -> str:
    text = re.sub(r"\bAsync(Iterator|Iterable)\b", r"\1", str(annotation))
    return re.sub(r"\bAsync(\w+)\b", r"\1", text)


def _public(cls: type) -> dict[str, Any]:
    return {
        DUNDERS.get(name, name): member
        for name, member in vars(cls).items()
        if (not name.startswith("_") or name in DUNDERS) and callable(getattr(cls, name, None))
    }


def test_sync_module_is_what_the_generator_makes_of_the_async_sdk() -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/gen_sync_sdk.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=[s.__name__ for _, s in PAIRS])
def test_every_async_method_has_a_blocking_twin_with_its_signature(async_cls: type, sync_cls: type) -> None:
    for name, member in _public(async_cls).items():
        twin = getattr(sync_cls, name, None)
        assert twin is not None, f"{sync_cls.__name__} lacks {name} (its async twin has it)"
        want = inspect.signature(getattr(async_cls, {v: k for k, v in DUNDERS.items()}.get(name, name)))
        got = inspect.signature(twin)
        assert list(got.parameters) == list(want.parameters), f"{sync_cls.__name__}.{name}: parameters differ"
        for p_want, p_got in zip(want.parameters.values(), got.parameters.values(), strict=True):
            where = f"{sync_cls.__name__}.{name}({p_want.name})"
            assert p_got.kind == p_want.kind, where
            assert p_got.default == p_want.default, where
            assert str(p_got.annotation) == _blocking_text(p_want.annotation), where
        assert str(got.return_annotation) == _blocking_text(want.return_annotation), f"{sync_cls.__name__}.{name}"
        assert inspect.getdoc(twin) == inspect.getdoc(member) or name in ("__enter__", "__exit__", "__iter__")


def test_properties_are_read_through_to_the_async_object() -> None:
    for cls, names in ((sync.Sandbox, ("sandbox_id", "access_token")), (sync.CommandHandle, ("pid", "stdout"))):
        for name in names:
            assert isinstance(inspect.getattr_static(cls, name), property), f"{cls.__name__}.{name}"
