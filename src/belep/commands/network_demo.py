"""The console report of ``belep demo`` (the live network; :mod:`belep.deploy.demo` runs it).

Owns :class:`NetworkDemoConsole`, a :class:`~belep.deploy.demo.DemoReporter`
that prints each step as Rich lines and tables. Console output only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from belep.deploy.demo import AnchorCheck, ChainCheck, CommittedRecord, Presence
from belep.deploy.launcher import NodeProcess

__all__ = ["NetworkDemoConsole"]


def _mark(good: bool) -> str:
    return "✓" if good else "✗"


class NetworkDemoConsole:
    """Prints the network demo as it goes."""

    def __init__(self, out: Console) -> None:
        self.out = out

    def note(self, text: str) -> None:
        self.out.print(f"[yellow]note:[/yellow] {text}")

    def starting(self, count: int, directory: Path) -> None:
        self.out.print(
            f"starting {count} nodes (city 3, district 3, two stations × 4) in {directory} …"
        )

    def started(self, nodes: Sequence[NodeProcess]) -> None:
        for node in nodes:
            self.out.print(
                f"  {node.node_id:<14} {node.config.http_url}  domains {', '.join(node.config.domains)}",
                soft_wrap=True,
            )

    def uploaded(self, cid: str, size: int) -> None:
        self.out.print(f"uploaded a sample evidence file: {cid} ({size} bytes)")

    def committed(self, records: Sequence[CommittedRecord]) -> None:
        table = Table(title="records committed (the paper's table 1)")
        for column in ("record", "station", "height", "tx hash"):
            table.add_column(column)
        for done in records:
            record = done.record
            table.add_row(record.what, record.station, str(done.height), done.tx_hash[:16] + "…")
        self.out.print(table)

    def everywhere(self, presence: Sequence[Presence]) -> None:
        table = Table(title="each record on every node holding its domain")
        table.add_column("record")
        table.add_column("nodes (✓ = committed there, same block)")
        for found in presence:
            marks = "  ".join(f"{node} {_mark(good)}" for node, good in found.holders)
            table.add_row(found.what, marks)
        self.out.print(table)

    def pinned(self, cid: str, holders: Sequence[tuple[str, bool]]) -> None:
        marks = "  ".join(f"{node} {_mark(good)}" for node, good in holders)
        self.out.print(f"evidence file {cid} pinned on: {marks}")

    def anchors(self, check: AnchorCheck) -> None:
        if not check.ok:
            found = {a.child: (a.height, a.at) for a in check.found}
            self.out.print(
                f"[red]anchors missing[/red]: needed {dict(check.needed)}, found {found}"
            )
            return
        for anchor in check.found:
            self.out.print(
                f"anchor: {anchor.child} height {anchor.height} is committed in"
                f" {anchor.parent} block {anchor.at}"
            )

    def verified(self, checks: Sequence[ChainCheck]) -> None:
        ok = all(c.problem is None for c in checks)
        lines = [
            f"{c.node}/{c.domain}:{c.blocks}{'' if c.problem is None else f' FAILED {c.problem}'}"
            for c in checks
        ]
        self.out.print(
            ("[green]every chain verifies[/green]: " if ok else "[red]verification failed[/red]: ")
            + ", ".join(lines),
            soft_wrap=True,
        )

    def running(self, directory: Path, duration: float | None) -> None:
        self.out.print(
            f"network running: [bold]belep status --dir {directory}[/bold] shows it;"
            + (f" stopping in {duration:.0f} s." if duration else " Ctrl-C stops it.")
        )

    def stopping(self) -> None:
        self.out.print("stopping …")

    def finished(self, ok: bool) -> None:
        self.out.print(
            "[green]demo checks passed[/green]" if ok else "[red]demo checks failed[/red]"
        )
