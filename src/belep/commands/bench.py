"""`belep bench`: benchmark scripts whose results go in docs/BENCHMARKS.md.

Each area registers its own subcommands from ``belep.commands.bench_<area>``.
"""

from __future__ import annotations

import typer

from belep.commands import bench_consensus, bench_content, bench_ledger, bench_net, bench_sim

bench_app = typer.Typer(
    help="Benchmarks (results with command, machine and date go in docs/BENCHMARKS.md).",
    no_args_is_help=True,
)

for _module in (bench_ledger, bench_content, bench_sim, bench_net, bench_consensus):
    _module.register(bench_app)


def register(app: typer.Typer) -> None:
    """Add ``belep bench`` to the root application."""
    app.add_typer(bench_app, name="bench")
