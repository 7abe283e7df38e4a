#!/usr/bin/env python3
"""Run the E2B compatibility tests against the newest E2B SDK releases; warn about what changed.

    .venv/bin/python scripts/e2b_newest.py [--force]

Run by .ci/run after the tests. It never fails the build (exit 0 whatever happens): it
reports. It asks PyPI and npm for the newest `e2b` and `e2b-code-interpreter` (Python) and
`e2b` and `@e2b/code-interpreter` (JavaScript); when they are the releases the tests pin
(pyproject's test extra, tests/e2b_compat_js/package.json) there is nothing new to try, unless
`--force`. Otherwise it installs them into a scratch venv (the project with its server and test
extras, then the newest SDKs over the pins) and a scratch node_modules, runs tests/e2b_compat
and tests/e2b_compat_js there, and prints every test that fails with them: each names a
behaviour that the pinned releases have and the newest do not (the tests pass with the pins, or
the build would have failed before this).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "tests" / "e2b_compat_js"
PY_PACKAGES = ("e2b", "e2b-code-interpreter")
JS_PACKAGES = ("e2b", "@e2b/code-interpreter")
TIME_LIMIT_S = 1500


def say(line: str) -> None:
    print(f"[e2b-newest] {line}", flush=True)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw)  # type: ignore[call-overload, no-any-return]


def pinned() -> dict[str, str]:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    pins = {}
    for req in extra:
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)", req)
        if m and m.group(1) in PY_PACKAGES:
            pins[f"py:{m.group(1)}"] = m.group(2)
    deps = json.loads((JS / "package.json").read_text())["dependencies"]
    pins.update({f"js:{name}": deps[name] for name in JS_PACKAGES})
    return pins


def newest() -> dict[str, str]:
    found = {}
    for name in PY_PACKAGES:
        out = run([sys.executable, "-m", "pip", "index", "versions", name, "--disable-pip-version-check"]).stdout
        m = re.search(rf"^{re.escape(name)} \(([^)]+)\)", out, re.M)
        if not m:
            raise RuntimeError(f"pip index versions {name}: no version in {out[:200]!r}")
        found[f"py:{name}"] = m.group(1)
    for name in JS_PACKAGES:
        found[f"js:{name}"] = run(["npm", "view", name, "version"]).stdout.strip()
    return found


def install(scratch: Path, versions: dict[str, str]) -> tuple[Path, Path]:
    venv, js = scratch / "venv", scratch / "js"
    run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run([*pip, "-e", f"{ROOT}[server,test]"])
    run([*pip, "--no-warn-conflicts", *(f"{n}=={versions[f'py:{n}']}" for n in PY_PACKAGES)])
    js.mkdir()
    deps = json.loads((JS / "package.json").read_text())["dependencies"]
    deps.update({name: versions[f"js:{name}"] for name in JS_PACKAGES})  # e2b-keycheck stays pinned
    package = {"private": True, "type": "module", "dependencies": deps}
    (js / "package.json").write_text(json.dumps(package))
    run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=js)
    return venv, js


def failures(report: Path) -> list[tuple[str, str]]:
    out = []
    for case in ET.parse(report).iter("testcase"):
        for bad in [*case.iter("failure"), *case.iter("error")]:
            first = (bad.get("message") or bad.text or "").strip().splitlines()
            out.append((f"{case.get('classname')}::{case.get('name')}", first[0][:300] if first else ""))
    return out


def main() -> int:
    force = "--force" in sys.argv[1:]
    pins = pinned()
    try:
        latest = newest()
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        say(f"WARNING: could not ask the registries for the newest E2B SDKs: {exc}")
        return 0
    described = ", ".join(f"{k} {latest[k]} (pinned {pins[k]})" for k in sorted(latest))
    if latest == pins and not force:
        say(f"the pinned E2B SDKs are the newest releases ({described}): nothing new to test")
        return 0
    say(f"testing the newest E2B SDKs: {described}")
    scratch = Path(tempfile.mkdtemp(prefix="sandlot-e2b-newest-", dir="/var/tmp"))
    try:
        try:
            venv, js = install(scratch, latest)
        except subprocess.CalledProcessError as exc:
            say(f"WARNING: could not install the newest E2B SDKs: {(exc.stderr or exc.stdout or '')[-1000:]}")
            return 0
        report = scratch / "report.xml"
        env = {**os.environ, "SANDLOT_E2B_JS_DIR": str(js)}
        tests = ["tests/e2b_compat", "tests/e2b_compat_js"]
        cmd = [str(venv / "bin" / "python"), "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider"]
        cmd += ["--timeout", "900", f"--junitxml={report}"]
        try:
            res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIME_LIMIT_S)
        except subprocess.TimeoutExpired:
            say(f"WARNING: the compatibility tests with the newest SDKs ran past {TIME_LIMIT_S} s")
            return 0
        if not report.exists():
            say(f"WARNING: the compatibility tests did not run (exit {res.returncode}):\n{res.stdout[-2000:]}")
            return 0
        failed = failures(report)
        if not failed:
            say("every compatibility test passes with the newest releases: the pins can be bumped")
            return 0
        say(f"WARNING: {len(failed)} behaviour(s) changed with the newest E2B SDKs (they pass with the pins):")
        for name, why in failed:
            say(f"  {name}: {why}")
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # a report, never a failed build
        say(f"WARNING: the newest-SDK check broke: {type(exc).__name__}: {exc}")
        sys.exit(0)
