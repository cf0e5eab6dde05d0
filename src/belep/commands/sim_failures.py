"""`belep sim experiment failures`: the paper's figure 9 in the deterministic simulator.

``belep sim experiment failures --json --plot fig9.png`` crashes 0 … 6 nodes of
a 7-node domain — PBFT(7), Raft(7), HPBFT(4 seats + 3 standbys) — one after
another (locals first, leader first, standbys first) and all at once, and
prints one JSON row per (protocol, failure count, mode) with
``committed_per_s`` (blocks per second of virtual time after that failure),
plus the normal-case cost of HPBFT(4+3) against PBFT(7). See
:mod:`belep.bench.failures` and ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from belep.bench.failures import MODES, SETUPS, FailureParams, plot_failures, run_failures

experiment_app = typer.Typer(help="Experiments run in the deterministic simulator.")


def _parse(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [x for x in items if x not in allowed]
    if unknown or not items:
        raise typer.BadParameter(f"unknown {what} {unknown}; choose from {list(allowed)}")
    return items


@experiment_app.command("failures")
def failures(
    interval: int = typer.Option(3000, "--interval", min=500, help="Virtual ms between failures."),
    settle: int = typer.Option(
        1000, "--settle", min=0, help="Virtual ms after a failure left out of its window."
    ),
    rate: int = typer.Option(400, "--rate", min=1, help="Client transactions per virtual second."),
    seed: int = typer.Option(1, "--seed", min=0, help="Simulation seed."),
    modes: str = typer.Option(",".join(MODES), "--modes", help="Comma-separated failure modes."),
    protocols: str = typer.Option(
        ",".join(s.protocol for s in SETUPS), "--protocols", help="Comma-separated protocols."
    ),
    normal: bool = typer.Option(
        True, "--normal-case/--no-normal-case", help="Also measure the fault-free cost."
    ),
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write the figure as a PNG here.")
    ] = None,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Committed blocks per virtual second as 0 … 6 of 7 nodes fail (figure 9)."""
    if settle >= interval:
        raise typer.BadParameter("--settle must be shorter than --interval")
    chosen_modes = _parse(modes, MODES, "mode")
    names = _parse(protocols, tuple(s.protocol for s in SETUPS), "protocol")
    fp = FailureParams(interval_ms=interval, settle_ms=settle, rate_per_s=rate, seed=seed)
    result = run_failures(
        fp,
        setups=[s for s in SETUPS if s.protocol in names],
        modes=chosen_modes,
        with_normal_case=normal,
    )
    if plot is not None:
        plot_failures(result, plot)
        result["plot"] = str(plot)
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        _print_table(result)


def _print_table(result: dict[str, Any]) -> None:
    typer.echo(f"{'protocol':<12} {'mode':<26} " + " ".join(f"{k:>6}" for k in range(7)))
    table: dict[tuple[str, str], dict[int, float]] = {}
    for row in result["rows"]:
        table.setdefault((row["protocol"], row["mode"]), {})[row["failures"]] = row[
            "committed_per_s"
        ]
    for (protocol, mode), values in table.items():
        cells = " ".join(f"{values.get(k, float('nan')):>6.1f}" for k in range(7))
        typer.echo(f"{protocol:<12} {mode:<26} {cells}")
    for row in result.get("normal_case", []):
        typer.echo(
            f"{row['protocol']:<12} offered {row['offered_tx_per_s']:>5} tx/s: "
            f"{row['committed_tx_per_s']:>7.1f} tx/s, {row['blocks_per_s']:>6.1f} blocks/s, "
            f"{row['messages_per_block']:>6.1f} messages/block, p50 {row['p50_latency_ms']} ms"
        )
