"""The paper's figure 9, done properly: committed blocks per second as nodes fail.

Owns the failure experiment of ``docs/BENCHMARKS.md`` (HPBFT section): a
7-node domain — PBFT(7), Raft(7) and HPBFT(4 seats + 3 standbys) — runs in
the deterministic simulator (:mod:`belep.sim`) under a steady client load
while 0, 1, … 6 of its nodes crash for good, and the experiment reports how
many blocks per second of **virtual** time it still commits after each
failure. Three ways to fail:

* ``sequential`` — one node every ``interval_ms`` (time to react: a view
  change, a substitution, an election), local validators first as in the
  paper (``n3, n2, n1, n0, s0, s1, s2`` for HPBFT; ``n6 … n0`` otherwise);
* ``sequential-leader-first`` — the same pace, always killing the node that
  proposed the latest committed block (the primary or leader): the worst order
  for PBFT and Raft (every failure also costs a view change or an election);
  for HPBFT also ``sequential-standbys-first`` (the standbys it would heal with
  go first);
* ``simultaneous`` — ``k`` nodes (locals first) crash at the same instant.

Each window starts ``settle_ms`` after a failure (reaction time, excluded)
and ends at the next failure; every run is also checked for safety (no fork,
valid certificates), so "stops" means "stops safely". The normal-case cost
(messages per committed block, committed transactions per virtual second)
of HPBFT(4+3) against PBFT(7) is measured in the same call.

Everything is a pure function of the parameters and the seed; nothing reads
a wall clock except the reported ``wall_s``. :func:`plot_failures` writes the
PNG (matplotlib, Agg backend).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from belep.consensus.types import NodeId
from belep.sim.engine import Simulation
from belep.sim.model import (
    CrashFault,
    FaultSchedule,
    SimParams,
    WorkloadParams,
    member_ids,
    observer_ids,
)
from belep.sim.protocols import ProtocolProfile, get_profile
from belep.sim.runner import run_seed

__all__ = [
    "MODES",
    "SETUPS",
    "FailureParams",
    "Setup",
    "normal_case",
    "plot_failures",
    "run_failures",
    "run_mode",
]


@dataclass(frozen=True, slots=True)
class Setup:
    """One committee of the experiment."""

    label: str
    protocol: str
    seats: int
    standbys: int = 0


SETUPS = (
    Setup("PBFT(7)", "pbft", 7),
    Setup("Raft(7)", "raft", 7),
    Setup("HPBFT(4+3)", "hpbft", 4, 3),
)
MODES = (
    "sequential",
    "sequential-leader-first",
    "sequential-standbys-first",
    "simultaneous",
)


@dataclass(frozen=True, slots=True)
class FailureParams:
    """Pace and load of the experiment (virtual milliseconds)."""

    interval_ms: int = 3000
    settle_ms: int = 1000
    max_failures: int = 6
    rate_per_s: int = 400
    seed: int = 1
    normal_ms: int = 4000
    normal_rates: tuple[int, ...] = (400, 800)


def profile_for(protocol: str) -> ProtocolProfile:
    """The registered profile (HPBFT certificates are checked against each epoch's seats)."""
    return get_profile(protocol)


def locals_first(setup: Setup) -> tuple[NodeId, ...]:
    """Local validators first, highest index first (the primary of view 0 last), then standbys."""
    return (*reversed(member_ids(setup.seats)), *observer_ids(setup.standbys))


def standbys_first(setup: Setup) -> tuple[NodeId, ...]:
    return (*observer_ids(setup.standbys), *reversed(member_ids(setup.seats)))


def _params(setup: Setup, fp: FailureParams, end_ms: int, rate: int | None = None) -> SimParams:
    return SimParams(
        protocol=setup.protocol,
        nodes=setup.seats,
        observers=setup.standbys,
        seed=fp.seed,
        duration_ms=end_ms - 1,
        stable_ms=1,
        drain_ms=0,
        faults=(),
        beyond_model=True,
        workload=WorkloadParams(rate_per_s=fp.rate_per_s if rate is None else rate),
    )


def _schedule(kills: Sequence[tuple[NodeId, int]], end_ms: int) -> FaultSchedule:
    crashes = tuple(CrashFault(node, at, end_ms + 1) for node, at in kills)
    return FaultSchedule(crashes, (), end_ms - 1)


def _rate(times: Sequence[int], start: int, end: int) -> float:
    count = sum(1 for t in times if start <= t < end)
    return round(count * 1000 / (end - start), 2) if end > start else 0.0


def _leader_at(setup: Setup, fp: FailureParams, kills: list[tuple[NodeId, int]], at: int) -> NodeId:
    """The proposer of the latest block committed by ``at`` (a pilot run to that instant)."""
    profile = profile_for(setup.protocol)
    sim = Simulation(_params(setup, fp, at), profile, _schedule(kills, at))
    sim.run()
    dead = {node for node, _ in kills}
    if sim.checker.canonical:
        proposer = sim.checker.canonical[-1].header.proposer
        if proposer not in dead:
            return proposer
    return next(n for n in locals_first(setup) if n not in dead)


def run_mode(setup: Setup, mode: str, fp: FailureParams) -> list[dict[str, Any]]:
    """Rows ``(protocol, failures, mode, committed_per_s, …)`` for one setup and mode."""
    if mode == "simultaneous":
        return _simultaneous(setup, fp)
    interval = fp.interval_ms
    end = interval * (fp.max_failures + 1)
    kills: list[tuple[NodeId, int]] = []
    order: Callable[[int], NodeId]
    if mode == "sequential":
        fixed = locals_first(setup)
        order = lambda k: fixed[k]  # noqa: E731 (a one-line strategy)
    elif mode == "sequential-standbys-first":
        if not setup.standbys:
            return []
        fixed = standbys_first(setup)
        order = lambda k: fixed[k]  # noqa: E731
    elif mode == "sequential-leader-first":
        order = lambda k: _leader_at(setup, fp, kills, interval * (k + 1))  # noqa: E731
    else:
        raise ValueError(f"unknown mode {mode!r}")
    for k in range(fp.max_failures):
        kills.append((order(k), interval * (k + 1)))
    result = run_seed(_params(setup, fp, end), profile_for(setup.protocol), _schedule(kills, end))
    rows = []
    for k in range(fp.max_failures + 1):
        start = interval * k + (fp.settle_ms if k else 0)
        stop = interval * (k + 1)
        rows.append(
            _row(setup, mode, k, [n for n, _ in kills[:k]], result.commit_times_ms, start, stop)
            | {"safe": result.violation is None}
        )
    return rows


def _simultaneous(setup: Setup, fp: FailureParams) -> list[dict[str, Any]]:
    rows = []
    at = fp.interval_ms
    end = 2 * fp.interval_ms
    order = locals_first(setup)
    for k in range(fp.max_failures + 1):
        kills = [(node, at) for node in order[:k]]
        result = run_seed(
            _params(setup, fp, end), profile_for(setup.protocol), _schedule(kills, end)
        )
        row = _row(
            setup,
            "simultaneous",
            k,
            list(order[:k]),
            result.commit_times_ms,
            at + fp.settle_ms,
            end,
        )
        rows.append(row | {"safe": result.violation is None})
    return rows


def _row(
    setup: Setup,
    mode: str,
    failures: int,
    failed: list[NodeId],
    times: Sequence[int],
    start: int,
    stop: int,
) -> dict[str, Any]:
    return {
        "protocol": setup.label,
        "mode": mode,
        "failures": failures,
        "failed_nodes": [str(n) for n in failed],
        "committed_per_s": _rate(times, start, stop),
        "window_ms": [start, stop],
    }


def normal_case(fp: FailureParams) -> list[dict[str, Any]]:
    """Fault-free cost of HPBFT(4+3) and PBFT(7) at each offered rate, same seed and load."""
    rows = []
    for setup in (SETUPS[2], SETUPS[0]):
        for rate in fp.normal_rates:
            params = _params(setup, fp, fp.normal_ms, rate)
            result = run_seed(params, profile_for(setup.protocol), FaultSchedule())
            committed_txs = sum(1 for _ in result.latencies_ms)
            seconds = fp.normal_ms / 1000
            rows.append(
                {
                    "protocol": setup.label,
                    "offered_tx_per_s": rate,
                    "committed_blocks": result.committed_blocks,
                    "committed_tx_per_s": round(committed_txs / seconds, 1),
                    "blocks_per_s": round(result.committed_blocks / seconds, 1),
                    "messages_per_block": round(
                        result.messages / max(result.committed_blocks, 1), 1
                    ),
                    "p50_latency_ms": _median(result.latencies_ms),
                    "safe": result.violation is None,
                }
            )
    return rows


def _median(values: Sequence[int]) -> int | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def run_failures(
    fp: FailureParams,
    *,
    setups: Sequence[Setup] = SETUPS,
    modes: Sequence[str] = MODES,
    with_normal_case: bool = True,
) -> dict[str, Any]:
    """The whole experiment as one JSON-ready object (``rows``, ``normal_case``, ``params``)."""
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for setup in setups:
        for mode in modes:
            rows.extend(run_mode(setup, mode, fp))
    out: dict[str, Any] = {"params": asdict(fp), "rows": rows}
    if with_normal_case:
        out["normal_case"] = normal_case(fp)
    out["wall_s"] = round(time.perf_counter() - started, 1)
    return out


def plot_failures(result: dict[str, Any], out: Path) -> None:
    """Committed blocks per second against failed nodes, one line per protocol and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "sequential": "-",
        "sequential-leader-first": "--",
        "sequential-standbys-first": "-.",
        "simultaneous": ":",
    }
    colours = {"PBFT(7)": "tab:blue", "Raft(7)": "tab:orange", "HPBFT(4+3)": "tab:green"}
    fig, ax = plt.subplots(figsize=(9, 5.2))
    lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in result["rows"]:
        lines.setdefault((row["protocol"], row["mode"]), []).append(row)
    for (protocol, mode), rows in sorted(lines.items()):
        rows.sort(key=lambda r: r["failures"])
        ax.plot(
            [r["failures"] for r in rows],
            [r["committed_per_s"] for r in rows],
            styles.get(mode, "-"),
            marker="o",
            color=colours.get(protocol),
            label=f"{protocol} {mode}",
        )
    params = result["params"]
    ax.set_xlabel("failed nodes (of 7)")
    ax.set_ylabel("committed blocks per virtual second")
    ax.set_title(
        "Figure 9 (simulated): nodes crash one after another "
        f"({params['interval_ms']} ms apart) or at once; load {params['rate_per_s']} tx/s"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="center right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
