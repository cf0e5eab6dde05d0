"""`belep` commands: network (init, node, up, status, submit)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from belep.errors import BelepError
from belep.node.presets import PRESETS


def _fail(console: Console, exc: BelepError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root application."""

    @app.command("init")
    def init_command(
        out: Annotated[Path, typer.Option("--out", help="Directory to create (absent or empty).")],
        topology: Annotated[
            Path | None, typer.Option("--topology", help="Topology TOML file.")
        ] = None,
        preset: Annotated[
            str | None, typer.Option("--preset", help=f"Ready topology: {', '.join(PRESETS)}.")
        ] = None,
        base_port: Annotated[
            int | None, typer.Option("--base-port", help="First port of a preset.")
        ] = None,
    ) -> None:
        """Generate keys, signed genesis files and node configurations for a topology."""
        from belep.node.presets import load_topology
        from belep.node.provision import provision

        console = Console()
        try:
            topo, text, note = load_topology(topology, preset, base_port)
            result = provision(topo, out, topology_text=text)
        except BelepError as exc:
            raise _fail(console, exc) from exc
        if note:
            console.print(f"[yellow]note:[/yellow] {note}")
        console.print(
            f"network [bold]{topo.name}[/bold]: {len(result.geneses)} domains, "
            f"{len(result.configs)} nodes, written to {out}"
        )
        for node in topo.nodes:
            roles = ", ".join(f"{p.domain}:{r}" for p, r in topo.domains_of(node.node_id))
            typer.echo(
                f"  {node.node_id:<16} p2p {node.host}:{node.p2p_port}  http {node.http_url}  {roles}"
            )

    @app.command("node")
    def node_command(
        config: Annotated[Path, typer.Option("--config", help="The node's node.toml.")],
        log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning.")] = "info",
    ) -> None:
        """Run one node until SIGTERM or Ctrl-C (JSON logs on stderr)."""
        import asyncio

        from belep.node.logs import configure_logging
        from belep.node.runtime import run_node

        console = Console(stderr=True)
        configure_logging(config.parent.name, log_level)
        try:
            status = asyncio.run(run_node(config))
        except BelepError as exc:
            raise _fail(console, exc) from exc
        raise typer.Exit(status)
