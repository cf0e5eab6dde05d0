"""Running seeds: one run's verdict, many runs' summary, and shrinking a failure.

* :func:`run_seed` runs one seed (drawing its schedule unless one is given)
  and judges it: the first **safety** violation (from the invariant checker)
  or **liveness** failure — within the fault model, once the network has been
  stable for ``stable_ms``: every client transaction has committed and every
  correct replica has rejoined (see :func:`_judge_liveness`).
* :func:`run_seeds` runs many seeds and :func:`summarize` turns the results
  into the JSON object ``belep sim`` prints.
* :func:`shrink` removes faults and Byzantine behaviours one at a time while
  the same kind of violation persists, giving a minimal schedule whose trace
  is short enough to read.

No I/O.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, replace

from belep.sim.checker import Violation
from belep.sim.engine import Simulation
from belep.sim.model import ByzantineRole, FaultSchedule, SimParams, schedule_to_json
from belep.sim.protocols import ProtocolProfile
from belep.sim.schedule import check_schedule, generate_schedule

__all__ = ["RunResult", "run_seed", "run_seeds", "shrink", "summarize"]


@dataclass(frozen=True, slots=True)
class RunResult:
    seed: int
    schedule: FaultSchedule
    violation: Violation | None  # safety (or replica exception)
    liveness_failure: str | None
    committed_blocks: int
    height_at_heal: int
    commit_times_ms: tuple[int, ...]  # virtual time each canonical height was first delivered
    latencies_ms: tuple[int, ...]
    events: int
    messages: int
    transactions: int
    wall_s: float
    end_ms: int
    trace: tuple[str, ...] | None

    @property
    def safe(self) -> bool:
        return self.violation is None


def draw_schedule(params: SimParams, profile: ProtocolProfile) -> FaultSchedule:
    """The schedule a seed gets when none is given."""
    return generate_schedule(params, profile, random.Random(f"belep-sim/schedule/{params.seed}"))


def run_seed(
    params: SimParams, profile: ProtocolProfile, schedule: FaultSchedule | None = None
) -> RunResult:
    """Run one seed and judge safety and (within the model) liveness."""
    if schedule is None:
        schedule = draw_schedule(params, profile)
    check_schedule(schedule, params, profile)
    started = time.perf_counter()
    sim = Simulation(params, profile, schedule)
    sim.run()
    wall = time.perf_counter() - started
    liveness: str | None = None
    if sim.violation is None and not params.beyond_model:
        liveness = _judge_liveness(sim)
    return RunResult(
        seed=params.seed,
        schedule=schedule,
        violation=sim.violation,
        liveness_failure=liveness,
        committed_blocks=sim.checker.height,
        height_at_heal=sim.height_at_heal,
        commit_times_ms=tuple(sim.checker.commit_time_ms),
        latencies_ms=tuple(sim.workload.latencies_ms()),
        events=sim.events,
        messages=sim.messages,
        transactions=len(sim.workload.txs),
        wall_s=wall,
        end_ms=sim.now,
        trace=tuple(sim.trace) if sim.trace is not None else None,
    )


def _judge_liveness(sim: Simulation) -> str | None:
    """Within the model, after ``stable_ms`` of healthy network:

    * every client transaction submitted (until ``drain_ms`` before the end) committed;
    * every correct replica holds every block committed by ``catchup_deadline_ms``
      (replicas that were down or cut off rejoined while clients were still active;
      PBFT replicas catch up at checkpoints, so a replica may trail by the blocks of
      the last moments).
    """
    missing = sim.workload.uncommitted()
    if missing:
        return f"{len(missing)} of {len(sim.workload.txs)} transactions never committed (first: tx{missing[0]})"
    deadline = sim.params.catchup_deadline_ms
    required = sum(1 for t in sim.checker.commit_time_ms if t <= deadline)
    lagging = [
        f"{h.key}@{len(h.chain)}"
        for h in sim.hosts.values()
        if h.correct and len(h.chain) < required
    ]
    if lagging:
        return (
            f"correct replicas missing blocks committed by {deadline} ms "
            f"(height {required}): {', '.join(lagging)}"
        )
    return None


def run_seeds(params: SimParams, profile: ProtocolProfile, seeds: range) -> list[RunResult]:
    return [run_seed(replace(params, seed=seed), profile) for seed in seeds]


def _same_failure(result: RunResult, kind: str) -> bool:
    if kind == "liveness":
        return result.violation is None and result.liveness_failure is not None
    return result.violation is not None and result.violation.kind == kind


def shrink(
    params: SimParams,
    profile: ProtocolProfile,
    schedule: FaultSchedule,
    kind: str,
    *,
    max_runs: int = 60,
) -> FaultSchedule:
    """A smaller schedule that still fails the same way (greedy, one removal at a time)."""
    runs = 0
    current = schedule
    changed = True
    while changed and runs < max_runs:
        changed = False
        for candidate in _smaller(current):
            if runs >= max_runs:
                break
            runs += 1
            if _same_failure(run_seed(params, profile, candidate), kind):
                current = candidate
                changed = True
                break
    return current


def _smaller(schedule: FaultSchedule) -> list[FaultSchedule]:
    out = []
    for i in range(len(schedule.faults)):
        faults = schedule.faults[:i] + schedule.faults[i + 1 :]
        out.append(replace(schedule, faults=faults))
    for i, role in enumerate(schedule.byzantine):
        if "twins" in role.behaviours:
            continue  # removing a twin's behaviour changes which instances exist
        for b in role.behaviours:
            rest = tuple(x for x in role.behaviours if x != b)
            if rest:
                roles = list(schedule.byzantine)
                roles[i] = ByzantineRole(role.node, rest)
                out.append(replace(schedule, byzantine=tuple(roles)))
    return out


def _percentile(values: list[int], q: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(params: SimParams, results: list[RunResult]) -> dict[str, object]:
    """The JSON object ``belep sim --json`` prints."""
    committed = [r.committed_blocks for r in results]
    latencies = [lat for r in results for lat in r.latencies_ms]
    unsafe = [r for r in results if r.violation is not None]
    unlive = [r for r in results if r.violation is None and r.liveness_failure is not None]
    wall = sum(r.wall_s for r in results)
    out: dict[str, object] = {
        "protocol": params.protocol,
        "nodes": params.nodes,
        "observers": params.observers,
        "seeds": len(results),
        "first_seed": results[0].seed if results else params.seed,
        "byzantine": params.byzantine,
        "faults": list(params.faults),
        "duration_ms": params.duration_ms,
        "stable_ms": params.stable_ms,
        "beyond_model": params.beyond_model,
        "liveness_required": not params.beyond_model,
        "safety_violations": len(unsafe),
        "liveness_failures": len(unlive),
        "committed_blocks": {
            "min": min(committed) if committed else 0,
            "median": statistics.median(committed) if committed else 0,
            "max": max(committed) if committed else 0,
        },
        "virtual_latency_ms": {
            "p50": _percentile(latencies, 0.5),
            "p99": _percentile(latencies, 0.99),
        },
        "transactions": sum(r.transactions for r in results),
        "messages": sum(r.messages for r in results),
        "wall_s": round(wall, 3),
        "blocks_per_wall_s": round(sum(committed) / wall, 1) if wall > 0 else None,
    }
    if unsafe:
        first = unsafe[0]
        out["replay_seed"] = first.seed
        out["violations"] = [
            {
                "seed": r.seed,
                **(r.violation.to_json() if r.violation else {}),
                "schedule": schedule_to_json(r.schedule),
            }
            for r in unsafe[:10]
        ]
    if unlive:
        out["liveness"] = [
            {"seed": r.seed, "detail": r.liveness_failure, "schedule": schedule_to_json(r.schedule)}
            for r in unlive[:10]
        ]
        out.setdefault("replay_seed", unlive[0].seed)
    return out
