"""The HTTP layer stays small rooms: route modules of short functions over the node's service.

The node's HTTP app used to be one 362-line function of 16 closures (``node/api.py``). This
guards the layout that replaced it: no function or method in ``src/belep/api`` is longer than
80 lines, and nothing under ``src/belep/node`` imports the HTTP layer (the node hands the
server to ``belep node``; arrows run down, never back up).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "belep"
LIMIT = 80


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (f"{path.relative_to(SRC)}:{node.name}", (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_function_of_the_http_layer_is_over_80_lines() -> None:
    found = [f for path in sorted((SRC / "api").rglob("*.py")) for f in _functions(path)]
    assert found, "the HTTP layer has no functions?"
    too_long = [(name, lines) for name, lines in found if lines > LIMIT]
    assert too_long == []


def test_the_node_does_not_import_the_http_layer() -> None:
    for path in sorted((SRC / "node").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("belep.api"), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("belep.api") for a in node.names), path
