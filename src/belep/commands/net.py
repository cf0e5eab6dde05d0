"""`belep` commands: network (init, node, up, status, submit)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from belep.deploy.presets import PRESETS
from belep.errors import BelepError

if TYPE_CHECKING:
    from belep.deploy.launcher import NodeProcess


class LogLevel(enum.StrEnum):
    """The log levels ``belep node`` accepts (typer lists them and refuses others)."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class _UpConsole:
    """``belep up``'s report (:class:`belep.deploy.launcher.UpReporter`) on the console."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def generated(self, name: str, directory: Path, note: str) -> None:
        if note:
            self.console.print(f"[yellow]note:[/yellow] {note}")
        self.console.print(f"generated network {name} in {directory}")

    def reusing(self, directory: Path) -> None:
        self.console.print(f"reusing the network already generated in {directory}")

    def started(self, nodes: Sequence[NodeProcess]) -> None:
        for node in nodes:
            c = node.config
            self.console.print(
                f"  {c.node_id:<16} unit {c.unit:<12} http {c.http_url:<24} p2p {c.host}:{c.p2p_port}"
                f"  log {node.log_path}",
                soft_wrap=True,
            )

    def ready(self, count: int, network_file: Path, duration: float | None) -> None:
        self.console.print(f"[green]all {count} nodes ready[/green]; wrote {network_file}")
        self.console.print(
            "stop with Ctrl-C (or SIGTERM)"
            + (f"; stopping after {duration:.0f} s" if duration else "")
        )

    def exited(self, node: NodeProcess, status: int) -> None:
        self.console.print(
            f"[red]node {node.node_id} exited with status {status}[/red]; see {node.log_path}"
        )

    def stopping(self) -> None:
        self.console.print("stopping…")

    def stopped(self, statuses: Mapping[str, int | None]) -> None:
        from belep.deploy.launcher import unusual_statuses

        bad = unusual_statuses(statuses)
        if bad:
            self.console.print(f"[yellow]exit statuses:[/yellow] {bad}")
        self.console.print(f"stopped {len(statuses)} nodes")


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
        from belep.deploy.presets import load_topology
        from belep.deploy.provision import provision

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
        log_level: Annotated[
            LogLevel, typer.Option("--log-level", help="How much the node logs.")
        ] = LogLevel.info,
    ) -> None:
        """Run one node until SIGTERM or Ctrl-C (JSON logs on stderr)."""
        import asyncio

        from belep.api.server import start_http
        from belep.node.logs import configure_logging
        from belep.node.runtime import run_node

        console = Console(stderr=True)
        configure_logging(config.parent.name, log_level.value)
        try:
            status = asyncio.run(run_node(config, start_http))
        except BelepError as exc:
            raise _fail(console, exc) from exc
        raise typer.Exit(status)

    @app.command("up")
    def up_command(
        directory: Annotated[
            Path, typer.Option("--dir", help="Network directory (created by init if empty).")
        ],
        preset: Annotated[
            str | None, typer.Option("--preset", help="Generate this preset first.")
        ] = None,
        topology: Annotated[
            Path | None, typer.Option("--topology", help="Generate from this topology first.")
        ] = None,
        base_port: Annotated[
            int | None, typer.Option("--base-port", help="First port of a preset.")
        ] = None,
        duration: Annotated[
            float | None, typer.Option("--duration", help="Stop after this many seconds.")
        ] = None,
        timeout: Annotated[
            float, typer.Option("--timeout", help="Seconds to wait for readiness.")
        ] = 90.0,
    ) -> None:
        """Start every node of a network as its own process; stop them all on Ctrl-C or SIGTERM."""
        from belep.deploy.launcher import run_up

        console = Console()
        try:
            status = run_up(
                _UpConsole(console), directory, preset, topology, base_port, duration, timeout
            )
        except BelepError as exc:
            raise _fail(console, exc) from exc
        raise typer.Exit(status)

    @app.command("status")
    def status_command(
        directory: Annotated[Path, typer.Option("--dir", help="Network directory.")],
        as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    ) -> None:
        """Each node's height, view, peers and lag, per domain."""
        import json

        from rich.table import Table

        from belep.deploy.launcher import LocalNetwork
        from belep.deploy.status import collect_status

        console = Console()
        try:
            rows = collect_status(LocalNetwork.open(directory))
        except BelepError as exc:
            raise _fail(console, exc) from exc
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False))
            return
        table = Table(title=f"network {directory}")
        for column in (
            "node",
            "unit",
            "domain",
            "role",
            "protocol",
            "height",
            "view",
            "leader",
            "peers",
            "lag",
            "tip",
        ):
            table.add_column(column)
        for r in rows:
            if not r.up:
                table.add_row(r.node, r.unit, "[red]down[/red]", *[""] * 8)
                continue
            table.add_row(
                r.node,
                r.unit,
                r.domain,
                r.role,
                r.protocol,
                str(r.height),
                "" if r.view is None else str(r.view),
                r.leader or "",
                f"{r.peers_connected}/{r.peers}",
                str(r.lag),
                (r.tip_hash or "")[:12],
            )
        console.print(table)
        if not all(r.up for r in rows):
            raise typer.Exit(1)
