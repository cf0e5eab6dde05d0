"""``belep bench sweep``: the paper's figures 7 (throughput) and 8 (latency) against offered load.

Owns :func:`run_system` (one system — BELEP under one protocol, or the
PySyncObj reference — over a list of load points on one freshly started
network), :func:`run_sweep` (every system of the run, one after the other on
the same machine) and :func:`plot_sweep` (one PNG, two panels: committed
throughput vs offered load, and p50/p99 submit-to-commit latency vs offered
load, one line per system).

Each system first gets a light-load point (a closed loop with a window of
one transaction: the latency floor), then the open-loop rates in ascending
order, then optionally a saturation point (a closed loop with a large
window: the most it commits). The network is started once per system;
between points the client drains every outstanding batch, so a point starts
from an empty pipeline. After two open-loop points in a row commit less
than 80 % of what they offered, higher rates are skipped for that system
(noted in the result): it is past saturation, and longer queues only lengthen
the drain.

Records: one pool of signed records for the whole run (distinct sequence
numbers per point), made (or read from the cache) before any network starts.

I/O: child processes (through the network classes), the PNG file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from belep.bench.consensus import BenchNetwork, LoadSpec, measure_point
from belep.bench.pysyncobj_bench import PySyncObjCluster
from belep.bench.stats import ConsensusResult
from belep.bench.workload import RecordStream, presign_cached
from belep.errors import ConfigError

__all__ = ["SystemPlan", "parse_system", "plot_sweep", "run_sweep", "run_system"]

Progress = Callable[[ConsensusResult], None]


@dataclass(frozen=True, slots=True)
class SystemPlan:
    """One line of the figures: a protocol and its network shape."""

    protocol: str  # pbft, hpbft, raft, or pysyncobj
    nodes: int
    standbys: int = 0

    @property
    def label(self) -> str:
        if self.protocol == "pysyncobj":
            return f"PySyncObj Raft ({self.nodes})"
        name = {"pbft": "PBFT", "hpbft": "HPBFT", "raft": "Raft"}.get(self.protocol, self.protocol)
        shape = f"{self.nodes}+{self.standbys}" if self.standbys else str(self.nodes)
        return f"BELEP {name} ({shape})"


def parse_system(text: str, nodes: int, hpbft_shape: tuple[int, int]) -> SystemPlan:
    """``pbft``/``raft``/``pysyncobj`` with ``nodes`` voters; ``hpbft`` with seats+standbys."""
    name = text.strip().lower()
    if name == "hpbft":
        return SystemPlan("hpbft", hpbft_shape[0], hpbft_shape[1])
    if name in ("pbft", "raft", "pysyncobj"):
        return SystemPlan(name, nodes)
    raise ConfigError(
        "unknown protocol", expected=["pbft", "hpbft", "raft", "pysyncobj"], found=text
    )


def _specs(
    rates: Sequence[float],
    light_window: int | None,
    saturation_window: int | None,
    warmup: float,
    duration: float,
) -> list[LoadSpec]:
    specs = []
    if light_window:
        specs.append(LoadSpec(window=light_window, warmup=warmup, duration=duration))
    specs.extend(LoadSpec(rate=r, warmup=warmup, duration=duration) for r in sorted(rates))
    if saturation_window:
        specs.append(LoadSpec(window=saturation_window, warmup=warmup, duration=duration))
    return specs


def is_saturated(result: ConsensusResult) -> bool:
    """An open-loop point that committed clearly less than it offered."""
    if result.offered_tps is None:
        return False
    return result.committed_tps < SATURATED * result.offered_tps


#: An open-loop point committing less than this share of its offered load is saturated.
SATURATED = 0.8
#: Consecutive saturated points after which higher offered rates are skipped.
SATURATED_POINTS = 2
#: Closed-loop points may use records at this rate (transactions per second).
CLOSED_CEILING_TPS = 6000.0


def run_system(
    plan: SystemPlan,
    specs: Sequence[LoadSpec],
    records: Iterator[bytes],
    *,
    tx_bytes: int,
    progress: Progress | None = None,
    tuning: Mapping[str, int] | None = None,
) -> list[ConsensusResult]:
    """Every load point of ``specs`` against one fresh network of ``plan``.

    After :data:`SATURATED_POINTS` saturated open-loop points in a row the
    remaining open-loop rates are skipped (noted); closed-loop points still run.
    """
    results: list[ConsensusResult] = []

    def sweep(measure: Callable[[LoadSpec], ConsensusResult]) -> None:
        streak = 0
        skipped: list[float] = []
        for spec in specs:
            if spec.rate is not None and streak >= SATURATED_POINTS:
                skipped.append(spec.rate)
                continue
            result = measure(spec)
            results.append(result)
            if progress is not None:
                progress(result)
            if spec.rate is not None:
                streak = streak + 1 if is_saturated(result) else 0
        if skipped:
            last_open = [r for r in results if r.offered_tps is not None][-1]
            last_open.notes.append(
                "past saturation: skipped offered rates " + ", ".join(f"{r:g}" for r in skipped)
            )

    if plan.protocol == "pysyncobj":
        with PySyncObjCluster.start(plan.nodes) as cluster:
            sweep(lambda s: cluster.measure(s, tx_bytes=tx_bytes))
    else:
        with BenchNetwork.start(plan.protocol, plan.nodes, plan.standbys, tuning=tuning) as network:
            sweep(lambda s: measure_point(network, s, records, tx_bytes=tx_bytes))
    return results


def run_sweep(
    plans: Sequence[SystemPlan],
    rates: Sequence[float],
    *,
    warmup: float = 3.0,
    duration: float = 10.0,
    light_window: int | None = 1,
    saturation_window: int | None = None,
    seed: int = 1,
    progress: Progress | None = None,
    tuning: Mapping[str, int] | None = None,
) -> list[ConsensusResult]:
    """Every system of ``plans`` over the same load points, one after the other."""
    if not rates and not light_window and not saturation_window:
        raise ConfigError("nothing to measure: no rates and no light-load window")
    specs = _specs(rates, light_window, saturation_window, warmup, duration)
    belep_systems = sum(1 for p in plans if p.protocol != "pysyncobj")
    per_system = sum(s.budget(CLOSED_CEILING_TPS) for s in specs)
    # One pool serves every BELEP network (each network dedups only its own transactions).
    pool = presign_cached(per_system if belep_systems else 1, seed=seed)
    tx_bytes = max(len(p) for p in pool)
    results: list[ConsensusResult] = []
    for plan in plans:
        records = RecordStream(pool, seed=seed)
        results.extend(
            run_system(plan, specs, records, tx_bytes=tx_bytes, progress=progress, tuning=tuning)
        )
    return results


def _label(result: dict[str, Any]) -> str:
    plan = SystemPlan(
        "pysyncobj" if result["system"] == "pysyncobj" else result["protocol"],
        int(result["nodes"]),
        int(result["standbys"]),
    )
    return plan.label


def plot_sweep(results: Sequence[dict[str, Any]], out: Path, *, subtitle: str = "") -> None:
    """Figures 7 and 8 as two panels of one PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        lines.setdefault(_label(r), []).append(r)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    top = max((r["offered_tps"] or 0 for r in results), default=0)
    for label, points in lines.items():
        open_points = sorted(
            (p for p in points if p["offered_tps"] is not None), key=lambda p: p["offered_tps"]
        )
        xs = [p["offered_tps"] for p in open_points]
        (line,) = left.plot(xs, [p["committed_tps"] for p in open_points], marker="o", label=label)
        color = line.get_color()
        for p in points:
            if p["offered_tps"] is None and (p["window"] or 0) > 1:
                left.hlines(
                    p["committed_tps"],
                    0,
                    top or p["committed_tps"],
                    colors=color,
                    linestyles="--",
                    linewidth=1,
                    label=f"{label}: saturation (window {p['window']})",
                )
        ordered = sorted(
            (
                p
                for p in points
                if p["p50_ms"] is not None and (p["offered_tps"] is not None or p["window"] == 1)
            ),
            key=lambda p: p["offered_tps"] or p["committed_tps"],
        )
        lx = [p["offered_tps"] or p["committed_tps"] for p in ordered]
        right.plot(
            lx, [p["p50_ms"] for p in ordered], marker="o", color=color, label=f"{label} p50"
        )
        right.plot(
            lx,
            [p["p99_ms"] for p in ordered],
            linestyle="--",
            color=color,
            alpha=0.6,
            label=f"{label} p99",
        )
    left.plot(
        [0, top], [0, top], color="grey", linestyle=":", linewidth=1, label="committed = offered"
    )
    left.set_title("Figure 7 — committed throughput vs offered load")
    left.set_xlabel("offered load (signed transactions / s)")
    left.set_ylabel("committed transactions / s")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    right.set_title("Figure 8 — submit-to-commit latency vs load")
    right.set_xlabel("offered load (tx/s; window-1 points at their committed rate)")
    right.set_ylabel("latency (ms, log scale)")
    right.set_yscale("log")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7, ncol=2)
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
