"""Every dependency of the API's routes is a coroutine: FastAPI runs a plain function in its thread pool,
a hop (and two wake-ups) on every request that uses it."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from sandlot.api.app import create_app
from sandlot.api.config import ApiConfig


def _is_async(call: Any) -> bool:
    for fn in (call, getattr(call, "__call__", None)):  # noqa: B004 (a callable object's own __call__)
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            return True
    return False


def test_every_dependency_of_the_api_is_a_coroutine(tmp_path: Path) -> None:
    app = create_app(ApiConfig(data_dir=tmp_path / "api"))
    seen: set[str] = set()
    sync: set[str] = set()

    def walk(dependant: Any) -> None:
        for sub in dependant.dependencies:
            if sub.call is not None:
                name = getattr(sub.call, "__qualname__", repr(sub.call))
                seen.add(name)
                if not _is_async(sub.call):
                    sync.add(name)
            walk(sub)

    def routes(items: list[Any]) -> None:
        for route in items:
            if getattr(route, "dependant", None) is not None:
                walk(route.dependant)
            # (an included router holds its routes: FastAPI 0.165 keeps them on `original_router`)
            routes(getattr(route, "routes", None) or getattr(getattr(route, "original_router", None), "routes", []))

    routes(list(app.routes))
    assert {"principal", "get_service"} <= seen, "the walk found the API's dependencies"
    assert not sync, f"dependencies that would run in FastAPI's thread pool: {sorted(sync)}"
