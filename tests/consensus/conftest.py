"""Consensus tests: this directory is put on ``sys.path`` so test modules can
import their helper modules (``pbft_cluster.py``) under ``--import-mode=importlib``."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
