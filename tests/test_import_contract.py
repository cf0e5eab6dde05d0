"""The import contract (STYLE.md principle 1): the pure cores do no I/O, read no clock and
draw no randomness — directly, or through anything they import.

Pure: every module of the packages ``belep.consensus``, ``belep.ledger`` and ``belep.app``
(``belep.receipts`` joins when it exists) except the ledger's declared I/O edges, and the
content importer's core. For each of them the check follows every ``belep`` module it
imports, transitively (an import inside a function body counts), and fails if that
closure

* imports an I/O, clock, randomness or dynamic-import module of the standard library or an
  HTTP library (:data:`BANNED`), whatever the name it is bound to;
* imports an I/O edge module (:data:`IO_EDGES`: the ledger's SQLite stores and file
  helpers) — an edge may use the pure core, never the other way round;
* calls a built-in that does I/O or runs code (:data:`BANNED_CALLS`: ``open``, ``print``,
  ``input``, ``exec``, ``eval``, ``compile``, ``__import__``, ``breakpoint``).

The check is static (``ast``). The tests at the end plant each kind of violation in a
throw-away tree, directly and through a helper module, and require the check to find it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

BANNED = frozenset(
    {
        # I/O
        "os",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
        "glob",
        "fileinput",
        "mmap",
        "sqlite3",
        "dbm",
        "shelve",
        "pickle",
        "socket",
        "ssl",
        "select",
        "selectors",
        "subprocess",
        "signal",
        "logging",
        "http",
        "urllib",
        "httpx",
        "requests",
        "aiohttp",
        "starlette",
        "fastapi",
        "uvicorn",
        # concurrency and the event loop
        "asyncio",
        "threading",
        "multiprocessing",
        "concurrent",
        # clocks and randomness
        "time",
        "datetime",
        "random",
        "secrets",
        "uuid",
        # code loading
        "importlib",
        "runpy",
        "pkgutil",
    }
)
BANNED_CALLS = frozenset(
    {"open", "print", "input", "exec", "eval", "compile", "__import__", "breakpoint"}
)

#: Packages whose every module must be pure (those that exist).
PURE_PACKAGES = ("belep.consensus", "belep.ledger", "belep.app", "belep.receipts")
#: Modules inside those packages that are the I/O edge (they are not checked, and no pure
#: module may import them).
IO_EDGES = frozenset(
    {
        "belep.ledger.store",
        "belep.ledger.state_store",
        "belep.ledger.sqlite",
        "belep.ledger.genesis_file",
        "belep.ledger.datadir",
    }
)
#: Single pure modules outside those packages (the content importer's core).
PURE_MODULES = (
    "belep.content.importer",
    "belep.content.cid",
    "belep.content.multiformats",
    "belep.content.dagpb",
    "belep.content.exporter",
)


@dataclass(frozen=True, slots=True)
class Violation:
    chain: tuple[str, ...]  # modules from the pure root to the offending module
    what: str  # the banned module, edge or call

    def __str__(self) -> str:
        return f"{' -> '.join(self.chain)}: {self.what}"


def module_path(name: str, src: Path = SRC) -> Path | None:
    base = src.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _parse(name: str, src: Path) -> tuple[ast.Module, str] | None:
    path = module_path(name, src)
    if path is None:
        return None
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return tree, package


def imports_of(name: str, src: Path = SRC) -> set[str]:
    """Absolute names of every module ``name`` imports (any scope)."""
    parsed = _parse(name, src)
    if parsed is None:
        return set()
    tree, package = parsed
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


def banned_calls_of(name: str, src: Path = SRC) -> set[str]:
    """Built-ins of :data:`BANNED_CALLS` that ``name`` calls or takes by name."""
    parsed = _parse(name, src)
    if parsed is None:
        return set()
    tree, _ = parsed
    return {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and node.id in BANNED_CALLS and isinstance(node.ctx, ast.Load)
    }


def violations(root: str, src: Path = SRC, edges: frozenset[str] = IO_EDGES) -> list[Violation]:
    """Every way the import closure of ``root`` breaks the contract."""
    found: list[Violation] = []
    seen: set[str] = set()
    stack: list[tuple[str, ...]] = [(root,)]
    while stack:
        chain = stack.pop()
        current = chain[-1]
        if current in seen:
            continue
        seen.add(current)
        found.extend(
            Violation(chain, f"calls {call}()") for call in sorted(banned_calls_of(current, src))
        )
        for imported in sorted(imports_of(current, src)):
            top = imported.split(".")[0]
            if top in BANNED:
                found.append(Violation(chain, f"imports {imported}"))
            elif imported in edges:
                found.append(Violation(chain, f"imports the I/O edge {imported}"))
            elif top == "belep" and imported not in seen:
                stack.append((*chain, imported))
    return found


def pure_modules(src: Path = SRC) -> list[str]:
    names: list[str] = []
    for package in PURE_PACKAGES:
        directory = src.joinpath(*package.split("."))
        if not directory.is_dir():
            continue  # a package still to come (receipts)
        for path in sorted(directory.rglob("*.py")):
            relative = path.relative_to(src).with_suffix("")
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
    problems = violations(module)
    assert not problems, "\n".join(str(v) for v in problems)


def test_contract_covers_the_cores() -> None:
    modules = pure_modules()
    for name in (
        "belep.ledger.merkle",
        "belep.ledger.execution",
        "belep.ledger.config",
        "belep.consensus.types",
        "belep.consensus.hpbft",
        "belep.app.machine",
    ):
        assert name in modules
    assert not IO_EDGES & set(modules)
    for edge in IO_EDGES:
        assert module_path(edge) is not None, f"the declared edge {edge} does not exist"


# --------------------------------------------------------------------------
# The check catches what it must (a throw-away tree)
# --------------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for relative, text in {
        "belep/__init__.py": "",
        "belep/fakecore/__init__.py": "",
        "belep/fakeedge.py": "import sqlite3\n",
        **files,
    }.items():
        path = src / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


PLANTED = {
    "open()": "def f(path):\n    return open(path).read()\n",
    "datetime.now()": "def f():\n    import datetime\n    return datetime.datetime.now()\n",
    "from datetime import datetime": "from datetime import datetime as d\n\ndef f():\n    return d.now()\n",
    "os.urandom": "import os\n\ndef f():\n    return os.urandom(32)\n",
    "import sqlite3": "import sqlite3\n",
    "time.time()": "from time import time\n",
    "random": "import random\n",
    "print()": "def f(x):\n    print(x)\n",
    "importlib": "import importlib\n\nM = importlib.import_module('json')\n",
    "__import__": "M = __import__('os')\n",
    "an I/O edge": "from belep import fakeedge\n",
    "pathlib": "from pathlib import Path\n",
}


@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_the_check_finds_a_violation_in_the_module_itself(tmp_path: Path, planted: str) -> None:
    src = _tree(tmp_path, {"belep/fakecore/core.py": PLANTED[planted]})
    assert violations("belep.fakecore.core", src, frozenset({"belep.fakeedge"}))


@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_the_check_finds_a_violation_through_a_helper_module(tmp_path: Path, planted: str) -> None:
    src = _tree(
        tmp_path,
        {
            "belep/fakecore/helper.py": PLANTED[planted],
            "belep/fakecore/core.py": "from . import helper\n\ndef f():\n    return helper\n",
        },
    )
    found = violations("belep.fakecore.core", src, frozenset({"belep.fakeedge"}))
    assert found
    assert all(v.chain == ("belep.fakecore.core", "belep.fakecore.helper") for v in found)


def test_a_clean_module_passes(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "belep/fakecore/helper.py": "import hashlib\n\ndef h(b):\n    return hashlib.sha256(b)\n",
            "belep/fakecore/core.py": "from belep.fakecore.helper import h\n",
        },
    )
    assert violations("belep.fakecore.core", src, frozenset({"belep.fakeedge"})) == []
