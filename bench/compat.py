"""E2B compatibility figures: the official SDKs against a real server, beside Sandlot's own SDK.

- create → first command: `e2b.Sandbox.create(template="base")` then `commands.run("true")`,
  against `AsyncSandbox.create(template="base")` then `commands.run("true")`;
- `run_code("1+1")` round trip: `e2b_code_interpreter` against `sbx.run_code`, on the
  same sandbox and kernel.

Both sides run in the same process against the same server, one after the other.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from api_server import Server
from baselines import Plan
from lib import IMAGE_CACHE, arepeat, repeat, summary

from sandlot.node.bundle import ensure_bundle

__all__ = ["e2b_figures"]


@contextmanager
def _e2b_environment(url: str, key: str) -> Iterator[None]:
    from sandlot.api.e2b import env_exports

    saved = dict(os.environ)
    os.environ.update(env_exports(url, key))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def e2b_figures(data_dir: Path, bundle_cache: Path, plan: Plan) -> dict[str, Any]:
    try:
        import e2b
        import e2b_code_interpreter
    except ImportError as exc:
        print(f"e2b: skipped ({exc}; pip install -e '.[test]')", flush=True)
        return {}
    from sandlot.node.images import ImageStore
    from sandlot.sdk import AsyncSandbox

    print("e2b: the base and code-interpreter images", flush=True)
    images = ImageStore(IMAGE_CACHE)
    await asyncio.to_thread(images.ensure, "base")
    await asyncio.to_thread(images.ensure, "code-interpreter")
    built = ensure_bundle(bundle_cache)
    shutil.copytree(built.path, data_dir / "bundle" / built.path.name, symlinks=True, dirs_exist_ok=True)
    server = Server(data_dir).start()
    conn = {"api_url": server.url, "api_key": server.admin_key, "request_timeout": 120.0}
    out: dict[str, Any] = {}
    try:
        with _e2b_environment(server.url, server.admin_key):

            def e2b_cold() -> float:
                t0 = time.perf_counter()
                sbx = e2b.Sandbox.create(template="base", timeout=120)
                sbx.commands.run("true")
                took = time.perf_counter() - t0
                sbx.kill()
                return took

            async def own_cold() -> float:
                t0 = time.perf_counter()
                sbx = await AsyncSandbox.create(template="base", timeout=120, **conn)
                try:
                    await sbx.commands.run("true")
                    return time.perf_counter() - t0
                finally:
                    await sbx.kill()
                    await sbx.close()

            print("e2b: create → first command, e2b SDK and Sandlot SDK", flush=True)
            e2b_cold()
            await own_cold()
            out["e2b cold"] = summary(await asyncio.to_thread(repeat, e2b_cold, plan.slow, plan.budget))
            out["e2b cold own sdk"] = summary(await arepeat(own_cold, plan.slow, plan.budget))

            print("e2b: run_code('1+1'), e2b-code-interpreter and Sandlot SDK", flush=True)
            ci = await asyncio.to_thread(e2b_code_interpreter.Sandbox.create, timeout=600)
            own = await AsyncSandbox.connect(ci.sandbox_id, **conn)
            try:

                def e2b_rt() -> None:
                    assert ci.run_code("1+1").text == "2"

                async def own_rt() -> None:
                    assert (await own.run_code("1+1")).text == "2"

                await asyncio.to_thread(e2b_rt)
                await own_rt()
                out["e2b run_code"] = summary(await asyncio.to_thread(repeat, e2b_rt, plan.medium, plan.budget))
                out["e2b run_code own sdk"] = summary(await arepeat(own_rt, plan.medium, plan.budget))
            finally:
                await own.close()
                await asyncio.to_thread(ci.kill)
    finally:
        server.stop()
    return out


def e2b_rows(s: dict[str, Any]) -> list[tuple[str, float, str, str, float, str]]:
    """Report rows: each E2B SDK figure against Sandlot's own SDK doing the same, in the same run."""
    nan = float("nan")

    def get(key: str, q: str) -> float:
        v = s.get(key, {}).get(q)
        return float(v) if isinstance(v, (int, float)) else nan

    rows = []
    for q in ("p50_ms", "p99_ms"):
        tag = q[:3]
        for metric, key, base in (
            ("create → first command", "e2b cold", "Sandlot SDK, same template"),
            ('run_code("1+1") round trip', "e2b run_code", "Sandlot SDK sbx.run_code, same kernel"),
        ):
            runs = get(key, "runs")
            rows.append((f"E2B SDK: {metric} {tag}", get(key, q), "ms", base, get(f"{key} own sdk", q), f"{runs:.0f}"))
    return rows
