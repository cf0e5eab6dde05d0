"""The import contract (STYLE.md principle 1): the pure cores do no I/O.

Nothing under ``belep.consensus``, ``belep.ledger`` (except its SQLite store
module) or the content importer's core may import asyncio, socket, sqlite3,
time, random, threading or an HTTP library — directly, or through another
``belep`` module it imports. The check is static (it reads the source with
``ast``), so an import hidden in a function body is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

BANNED = frozenset(
    {
        "asyncio",
        "socket",
        "sqlite3",
        "time",
        "random",
        "threading",
        "http",
        "urllib",
        "httpx",
        "requests",
        "aiohttp",
        "starlette",
        "fastapi",
        "uvicorn",
    }
)

#: Packages whose every module must be pure.
PURE_PACKAGES = ("belep.consensus", "belep.ledger")
#: Modules inside those packages that are allowed to do I/O (the I/O edge).
IO_EDGES = frozenset({"belep.ledger.store"})
#: Single pure modules outside those packages (the content importer's core).
PURE_MODULES = (
    "belep.content.importer",
    "belep.content.cid",
    "belep.content.multiformats",
    "belep.content.dagpb",
    "belep.content.exporter",
)


def module_path(name: str, src: Path = SRC) -> Path | None:
    base = src.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imports_of(name: str, src: Path = SRC) -> set[str]:
    """Absolute names of every module ``name`` imports (any scope)."""
    path = module_path(name, src)
    if path is None:
        return set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from belep.x import y` may import the submodule belep.x.y
            for alias in node.names:
                if module_path(f"{module}.{alias.name}", src) is not None:
                    found.add(f"{module}.{alias.name}")
    return found


def banned_imports(root: str, src: Path = SRC) -> dict[str, list[str]]:
    """Map of banned module -> import chain that reaches it, following belep modules."""
    chains: dict[str, list[str]] = {}
    seen: set[str] = set()
    stack: list[list[str]] = [[root]]
    while stack:
        chain = stack.pop()
        current = chain[-1]
        if current in seen:
            continue
        seen.add(current)
        for imported in sorted(imports_of(current, src)):
            top = imported.split(".")[0]
            if top in BANNED:
                chains.setdefault(imported, [*chain, imported])
            elif top == "belep" and imported not in seen and imported not in IO_EDGES:
                stack.append([*chain, imported])
    return chains


def pure_modules() -> list[str]:
    names: list[str] = []
    for package in PURE_PACKAGES:
        directory = SRC.joinpath(*package.split("."))
        for path in sorted(directory.rglob("*.py")):
            relative = path.relative_to(SRC).with_suffix("")
            parts = list(relative.parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            if name not in IO_EDGES:
                names.append(name)
    names.extend(PURE_MODULES)
    return names


@pytest.mark.parametrize("module", pure_modules())
def test_pure_core_does_no_io(module: str) -> None:
    assert module_path(module) is not None, f"{module} is listed as a pure core but does not exist"
    violations = banned_imports(module)
    assert not violations, "\n".join(
        f"{module} reaches {banned} via {' -> '.join(chain)}"
        for banned, chain in violations.items()
    )


def test_contract_covers_the_cores() -> None:
    modules = pure_modules()
    assert "belep.ledger.merkle" in modules
    assert "belep.consensus.types" in modules
    assert "belep.ledger.store" not in modules


def test_checker_catches_a_hidden_import(tmp_path: Path) -> None:
    """The check must fail for a module that imports time inside a function, or via a helper."""
    fake_src = tmp_path / "src"
    package = fake_src / "belep" / "fakecore"
    package.mkdir(parents=True)
    (fake_src / "belep" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("def now():\n    import time\n    return time.time()\n")
    (package / "core.py").write_text("from . import helper\n\ndef f():\n    return helper.now()\n")
    chains = banned_imports("belep.fakecore.core", fake_src)
    assert "time" in chains
    assert chains["time"] == ["belep.fakecore.core", "belep.fakecore.helper", "time"]
