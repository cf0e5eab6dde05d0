"""`belep sim`: run consensus protocols in the deterministic simulator.

``belep sim --protocol pbft --nodes 4 --seeds 200 --json`` runs 200 seeds of
mixed faults within the protocol's fault model and prints one JSON object
(see ``docs/spec/simulator.md``). On a safety violation it shrinks the first
failing schedule, and prints the replay seed, the command that replays it,
the shrunk schedule and the tail of its trace; the exit status is 1 when a
safety violation or (within the model) a liveness failure was found.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from belep.commands.sim_failures import experiment_app
from belep.errors import ConfigError
from belep.sim.model import (
    FAULT_KINDS,
    SimParams,
    WorkloadParams,
    schedule_from_json,
    schedule_to_json,
)
from belep.sim.protocols import available_protocols, get_profile
from belep.sim.runner import RunResult, run_seed, shrink, summarize
from belep.sim.scenarios import SCENARIOS, draw_scenario
from belep.sim.trace import trace_digest

sim_app = typer.Typer(
    help="Deterministic consensus simulator: seeds, faults, Byzantine replicas, invariants.",
    invoke_without_command=True,
)

_TRACE_TAIL = 60


def _parse_faults(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise typer.BadParameter(
            f"unknown fault kind(s) {unknown}; choose from {list(FAULT_KINDS)}"
        )
    return kinds


def _read_schedule(path: Path) -> object:
    """The JSON of a ``--schedule`` file; :class:`ConfigError` if unreadable or not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read the schedule file: {reason}", where=str(path)) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the schedule file is not JSON: {exc.msg}", where=f"{path}:{exc.lineno}"
        ) from exc


def _replay_command(
    params: SimParams, seed: int, schedule_file: str | None, scenario: str | None
) -> str:
    parts = [
        "belep sim",
        f"--protocol {params.protocol}",
        f"--nodes {params.nodes}",
        f"--first-seed {seed} --seeds 1",
        f"--faults {','.join(params.faults) or 'none'}",
        f"--byzantine {params.byzantine}",
        f"--duration {params.duration_ms} --stable {params.stable_ms} --drain {params.drain_ms}",
        f"--rate {params.workload.rate_per_s}",
    ]
    if params.observers:
        parts.append(f"--observers {params.observers}")
    if params.beyond_model:
        parts.append("--beyond-model")
    parts.extend(f"--planted-bug {bug}" for bug in sorted(params.planted_bugs))
    if scenario:
        parts.append(f"--scenario {scenario}")
    if schedule_file:
        parts.append(f"--schedule {schedule_file}")
    parts.append("--trace")
    return " ".join(parts)


def _explain_failure(
    params: SimParams, failing: RunResult, do_shrink: bool, scenario: str | None
) -> dict[str, object]:
    profile = get_profile(params.protocol)
    seeded = replace(params, seed=failing.seed)
    kind = failing.violation.kind if failing.violation else "liveness"
    schedule = failing.schedule
    if do_shrink:
        schedule = shrink(seeded, profile, schedule, kind)
    traced = run_seed(replace(seeded, trace=True), profile, schedule)
    trace = traced.trace or ()
    return {
        "seed": failing.seed,
        "kind": kind,
        "replay": _replay_command(params, failing.seed, None, scenario),
        "replay_shrunk": _replay_command(params, failing.seed, "SHRUNK.json", None),
        "shrunk_schedule": schedule_to_json(schedule),
        "shrunk_faults": len(schedule.faults),
        "original_faults": len(failing.schedule.faults),
        "trace_tail": list(trace[-_TRACE_TAIL:]),
        "trace_focus": _focus(trace, traced),
    }


def _focus(trace: tuple[str, ...], result: RunResult) -> list[str]:
    """The trace lines about the failing height: faults, blocks, votes and the verdict."""
    if result.violation is None:
        return []
    mark = f"h={result.violation.height} "
    keep = [
        line
        for line in trace
        if mark in line or " fault " in line or "VIOLATION" in line or " fetch" in line
    ]
    return keep[-2 * _TRACE_TAIL :]


@sim_app.callback()
def sim(
    ctx: typer.Context,
    protocol: str = typer.Option(
        "pbft",
        "--protocol",
        help=f"Consensus protocol: {', '.join(available_protocols()) or '(none registered)'}.",
    ),
    nodes: int = typer.Option(4, "--nodes", min=1, help="Voting members."),
    observers: int = typer.Option(
        0, "--observers", "--standbys", min=0, help="Non-voting observers (standbys)."
    ),
    seeds: int = typer.Option(20, "--seeds", min=1, help="Number of seeds to run."),
    first_seed: int = typer.Option(
        0, "--first-seed", min=0, help="First seed (replay: the seed printed)."
    ),
    byzantine: int = typer.Option(
        0, "--byzantine", min=0, help="Byzantine members (BFT protocols)."
    ),
    faults: str = typer.Option(
        ",".join(FAULT_KINDS), "--faults", help="Comma-separated fault kinds, or 'none'."
    ),
    duration: int = typer.Option(1000, "--duration", min=0, help="Virtual ms of the fault phase."),
    stable: int = typer.Option(3000, "--stable", min=1, help="Virtual ms of fault-free tail."),
    drain: int = typer.Option(
        1000, "--drain", min=0, help="Clients stop this many ms before the end."
    ),
    scenario: str | None = typer.Option(
        None,
        "--scenario",
        help=f"Draw schedules from a targeted family: {', '.join(sorted(SCENARIOS))}, or mixture.",
    ),
    rate: int = typer.Option(400, "--rate", min=0, help="Client transactions per virtual second."),
    beyond_model: bool = typer.Option(
        False, "--beyond-model", help="Allow more faults than the protocol tolerates (safety only)."
    ),
    planted_bug: Annotated[
        list[str] | None,
        typer.Option("--planted-bug", help="Test-only switch planting a known protocol bug."),
    ] = None,
    schedule_file: Annotated[
        Path | None,
        typer.Option(
            "--schedule",
            help="Replay this fault schedule (JSON, as printed) instead of drawing one.",
        ),
    ] = None,
    trace: bool = typer.Option(False, "--trace", help="Print the full event trace of each seed."),
    do_shrink: bool = typer.Option(True, "--shrink/--no-shrink", help="Shrink the first failure."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Run SEEDS seeds and check safety (always) and liveness (within the fault model)."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        profile = get_profile(protocol)
        params = SimParams(
            protocol=protocol,
            nodes=nodes,
            observers=observers,
            duration_ms=duration,
            stable_ms=stable,
            drain_ms=min(stable, drain),
            faults=_parse_faults(faults),
            byzantine=byzantine,
            beyond_model=beyond_model,
            workload=WorkloadParams(rate_per_s=rate),
            planted_bugs=frozenset(planted_bug or ()),
            trace=trace,
        )
        fixed = None
        if schedule_file is not None:
            fixed = schedule_from_json(_read_schedule(schedule_file))
        results = []
        for seed in range(first_seed, first_seed + seeds):
            seeded = replace(params, seed=seed)
            schedule = fixed
            if schedule is None and scenario is not None:
                schedule = draw_scenario(scenario, seeded)
            results.append(run_seed(seeded, profile, schedule))
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    summary = summarize(params, results)
    failing = next((r for r in results if r.violation is not None), None)
    if failing is None and not beyond_model:
        failing = next((r for r in results if r.liveness_failure is not None), None)
    if failing is not None:
        summary["first_failure"] = _explain_failure(
            params, failing, do_shrink and fixed is None, scenario
        )
    if trace:
        summary["trace_sha256"] = {str(r.seed): trace_digest(r.trace or ()) for r in results}
        for r in results:
            typer.echo(f"# seed {r.seed}", err=as_json)
            for line in r.trace or ():
                typer.echo(line, err=as_json)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_human(summary)
    bad = summary["safety_violations"] or (not beyond_model and summary["liveness_failures"])
    if bad:
        raise typer.Exit(1)


def _print_human(summary: dict[str, object]) -> None:
    for key in (
        "protocol",
        "nodes",
        "seeds",
        "byzantine",
        "faults",
        "safety_violations",
        "liveness_failures",
        "committed_blocks",
        "virtual_latency_ms",
        "blocks_per_wall_s",
    ):
        typer.echo(f"{key:>20}: {summary.get(key)}")
    failure = summary.get("first_failure")
    if isinstance(failure, dict):
        typer.echo(f"\nFIRST FAILURE (seed {failure['seed']}, {failure['kind']})")
        typer.echo(f"  replay: {failure['replay']}")
        typer.echo(
            f"  shrunk schedule ({failure['shrunk_faults']} of {failure['original_faults']} faults):"
        )
        typer.echo("  " + json.dumps(failure["shrunk_schedule"]))
        typer.echo(
            f"  replay shrunk: save the schedule as SHRUNK.json, then {failure['replay_shrunk']}"
        )
        for title, key in (
            ("trace about the failing height", "trace_focus"),
            ("trace tail", "trace_tail"),
        ):
            lines = failure[key]
            typer.echo(f"  {title}:")
            for line in lines if isinstance(lines, list) else ():
                typer.echo(f"    {line}")


def register(app: typer.Typer) -> None:
    """Add ``belep sim`` (and its ``experiment`` group) to the root application."""
    sim_app.add_typer(experiment_app, name="experiment")
    app.add_typer(sim_app, name="sim")
