"""`belep bench` subcommands for the content area."""

from __future__ import annotations

import typer


def register(bench_app: typer.Typer) -> None:
    """Add this area's benchmark commands to `belep bench`."""
