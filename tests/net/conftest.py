"""Transport tests: the ``loopback`` marker and the shared helper module.

Helpers live in ``net_testkit.py`` next to this file; this directory is put
on ``sys.path`` so test modules can import it under ``--import-mode=importlib``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "loopback: real sockets on 127.0.0.1 (ephemeral ports) inside one process"
    )
