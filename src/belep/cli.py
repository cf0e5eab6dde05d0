"""The ``belep`` command line.

Each command group lives in :mod:`belep.commands` and registers itself on the
root application here; this module only assembles them.
"""

from __future__ import annotations

import typer

from belep import __version__
from belep.commands import bench, chain, content, demo, net, sim

app = typer.Typer(
    name="belep",
    help="BELEP: tamper-evident police evidence on a hierarchical permissioned blockchain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


for _module in (chain, content, sim, bench, demo, net):
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
