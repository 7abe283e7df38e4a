"""The API reaches nodes through one seam (`sandlot.node.client.NodeClient`) and nothing else.

Scans every module of `sandlot.api` (and of what it drives, the code
interpreter): the node may be imported only as its wire protocol and its
client interface; only the composition root (`api/app.py`, `api/__init__.py`)
may name the in-process implementation it builds. A second test checks that
`LocalNode` implements every method of the interface with the same
parameters, so the HTTP implementation to come has one contract to meet.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from sandlot.node.client import NodeClient
from sandlot.node.local import LocalNode

SRC = Path(__file__).resolve().parents[2] / "src" / "sandlot"
#: what any API module may import from the node package
SEAM = {"sandlot.node.protocol", "sandlot.node.client"}
#: what the composition root may import besides (it builds the local node)
ROOT_ONLY = {"sandlot.node", "sandlot.node.local"}
ROOTS = {SRC / "api" / "app.py", SRC / "api" / "__init__.py"}


def _node_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for stmt in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
            names = [stmt.module] + [f"{stmt.module}.{a.name}" for a in stmt.names if stmt.module == "sandlot"]
        elif isinstance(stmt, ast.Import):
            names = [a.name for a in stmt.names]
        else:
            continue
        found += [(stmt.lineno, n) for n in names if n == "sandlot.node" or n.startswith("sandlot.node.")]
    return found


def _modules() -> list[Path]:
    return sorted([*(SRC / "api").rglob("*.py"), *(SRC / "interpreter").rglob("*.py")])


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_api_imports_only_the_seam(path: Path) -> None:
    allowed = SEAM | (ROOT_ONLY if path in ROOTS else set())
    bad = [f"line {n}: {name}" for n, name in _node_imports(path) if name not in allowed]
    assert not bad, f"{path.relative_to(SRC)} reaches into the node past its seam: {bad}"


def test_scan_sees_imports(tmp_path: Path) -> None:
    """The scan itself: it must catch every form of import (else the test above cannot fail)."""
    mod = tmp_path / "m.py"
    mod.write_text(
        "import sandlot.node.node\nfrom sandlot.node import Node\nfrom sandlot import node\n"
        "from sandlot.node.protocol import SandboxSpec\n"
    )
    names = [n for _, n in _node_imports(mod)]
    assert names == ["sandlot.node.node", "sandlot.node", "sandlot.node", "sandlot.node.protocol"]


def test_local_node_implements_the_interface() -> None:
    assert not LocalNode.__abstractmethods__
    for name, method in inspect.getmembers(NodeClient, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = getattr(LocalNode, name)
        assert inspect.signature(ours).parameters.keys() == inspect.signature(method).parameters.keys(), name
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(method), name
