"""`belep bench ledger`: append and verify throughput next to raw SQLite inserts.

Results, with the command, machine and date, go in the Ledger section of
``docs/BENCHMARKS.md``; the method is in :mod:`belep.bench.ledger`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from belep.bench.ledger import run_ledger_bench


def register(bench_app: typer.Typer) -> None:
    """Add this area's benchmark commands to `belep bench`."""

    @bench_app.command("ledger")
    def ledger_command(
        blocks: Annotated[int, typer.Option("--blocks", min=1)] = 10_000,
        txs: Annotated[int, typer.Option("--txs", min=1, help="Transactions per block.")] = 100,
        payload: Annotated[int, typer.Option("--payload", min=64, help="Bytes per tx.")] = 300,
        signers: Annotated[
            int, typer.Option("--signers", min=1, max=16, help="Certificate signatures.")
        ] = 3,
        directory: Annotated[
            Path | None, typer.Option("--dir", help="Work here (default: a temp dir, removed).")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ) -> None:
        """Append BLOCKS blocks of TXS transactions, verify the chain, compare with raw SQLite."""
        console = Console(stderr=True)
        work = directory or Path(tempfile.mkdtemp(prefix="belep-bench-ledger-"))
        work.mkdir(parents=True, exist_ok=True)
        if any(work.glob("*.sqlite3")):
            console.print(f"[red]{work} already holds databases; use an empty directory[/]")
            raise typer.Exit(2)
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=as_json or not console.is_terminal,
        )
        try:
            with progress:
                tasks = {
                    "append": progress.add_task("append + raw insert", total=blocks),
                    "verify": progress.add_task("verify", total=blocks),
                }
                result = run_ledger_bench(
                    work,
                    blocks=blocks,
                    txs=txs,
                    payload_size=payload,
                    signers=signers,
                    on_progress=lambda phase, h: progress.update(tasks[phase], completed=h),
                )
        finally:
            if directory is None:
                shutil.rmtree(work, ignore_errors=True)
        if as_json:
            typer.echo(json.dumps(result.to_json(), indent=2))
        else:
            m = result.machine
            table = Table(
                "phase",
                "tx/s",
                "vs raw SQLite",
                "seconds",
                title=(
                    f"{result.blocks} blocks x {result.txs_per_block} tx "
                    f"(~{result.payload_bytes} B), {result.signers} signatures per certificate"
                ),
            )
            table.add_row(
                "raw SQLite INSERT", f"{result.raw_tx_per_s:,}", "1.00", f"{result.raw_s}"
            )
            table.add_row("BELEP append", f"{result.append_tx_per_s:,}", f"{result.append_vs_raw:.2f}", f"{result.append_s}")  # fmt: skip
            table.add_row("BELEP verify", f"{result.verify_tx_per_s:,}", f"{result.verify_vs_raw:.2f}", f"{result.verify_s}")  # fmt: skip
            table.add_row("BELEP verify + execute", f"{result.verify_execute_tx_per_s:,}", "", f"{result.verify_execute_s}")  # fmt: skip
            Console().print(table)
            Console().print(
                f"{m['nproc']} x {m['cpu']}, Python {m['python']}, SQLite {m['sqlite']}, {m['date']}; "
                f"block building + signing {result.build_s} s; database {result.db_bytes:,} bytes"
            )
        if not result.verified:
            raise typer.Exit(1)
