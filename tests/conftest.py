"""Shared test helpers: ``served`` (a provisioned network whose nodes open without a
network, :mod:`served`) is importable from every test directory."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from served import served, served_template

__all__ = ["served", "served_template"]
