"""The transport's cores do no I/O: only the edge modules touch asyncio or sockets.

Same static check as tests/test_import_contract.py, applied to belep.net:
every module except the asyncio edge must not reach a banned module,
directly or through another belep module it imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
BANNED = frozenset(
    {"asyncio", "socket", "selectors", "time", "random", "threading", "multiprocessing"}
)
PURE = (
    "belep.net.wire",
    "belep.net.handshake",
    "belep.net.session",
    "belep.net.connection",
    "belep.net.policy",
    "belep.net.config",
)


def _path(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str) -> set[str]:
    path = _path(module)
    if path is None:
        return set()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(
                f"{node.module}.{a.name}" for a in node.names if _path(f"{node.module}.{a.name}")
            )
    return found


def _reaches(module: str) -> dict[str, list[str]]:
    chains: dict[str, list[str]] = {}
    seen: set[str] = set()
    stack = [[module]]
    while stack:
        chain = stack.pop()
        if chain[-1] in seen:
            continue
        seen.add(chain[-1])
        for imported in sorted(_imports(chain[-1])):
            top = imported.split(".")[0]
            if top in BANNED:
                chains.setdefault(imported, [*chain, imported])
            elif top == "belep":
                stack.append([*chain, imported])
    return chains


@pytest.mark.parametrize("module", PURE)
def test_transport_core_does_no_io(module: str) -> None:
    assert _path(module) is not None
    assert _reaches(module) == {}


def test_the_edge_is_where_asyncio_lives() -> None:
    """The check is not vacuous: the edge module does reach asyncio."""
    assert "asyncio" in _reaches("belep.net.transport")
