"""Whole runs: determinism of traces, finding a real fork, shrinking and replaying it,
and fault schedules that respect each protocol's bound."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from belep.errors import ConfigError
from belep.ledger.block import NodeId
from belep.sim.model import (
    ByzantineRole,
    CrashFault,
    FaultSchedule,
    LinkFault,
    SimParams,
    schedule_from_json,
    schedule_to_json,
)
from belep.sim.protocols import ProtocolProfile
from belep.sim.runner import draw_schedule, run_seed, run_seeds, shrink, summarize
from belep.sim.schedule import generate_schedule, max_faulty_at_once
from belep.sim.trace import trace_digest

SHORT = {"duration_ms": 1000, "stable_ms": 1000, "drain_ms": 500}


def test_same_seed_gives_a_byte_identical_trace(toy: ProtocolProfile) -> None:
    params = SimParams(protocol="toy", nodes=4, byzantine=1, seed=11, trace=True, **SHORT)
    schedule = replace(
        draw_schedule(params, toy),
        byzantine=(ByzantineRole(NodeId("n3"), ("forge", "replay", "tamper", "withhold")),),
    )
    first = run_seed(params, toy, schedule)
    second = run_seed(params, toy, schedule)
    assert first.trace is not None
    assert second.trace is not None
    assert len(first.trace) > 1000
    assert trace_digest(first.trace) == trace_digest(second.trace)
    other = run_seed(replace(params, seed=12), toy, schedule)
    assert other.trace is not None
    assert trace_digest(other.trace) != trace_digest(first.trace)


def test_the_same_schedule_is_drawn_for_the_same_seed(toy: ProtocolProfile) -> None:
    params = SimParams(protocol="toy", nodes=7, byzantine=2, seed=5, **SHORT)
    assert draw_schedule(params, toy) == draw_schedule(params, toy)
    assert draw_schedule(params, toy) != draw_schedule(replace(params, seed=6), toy)


def test_twins_of_the_leader_fork_the_toy_and_the_checker_says_where(toy: ProtocolProfile) -> None:
    params = SimParams(protocol="toy", nodes=4, byzantine=1, **SHORT)
    results = run_seeds(params, toy, range(40))
    forks = [r for r in results if r.violation is not None]
    assert forks, "Twins of a non-BFT leader must be caught forking within 40 seeds"
    violation = forks[0].violation
    assert violation is not None
    assert violation.kind == "agreement"
    assert "fork" in violation.detail
    summary = summarize(params, results)
    assert summary["safety_violations"] == len(forks)
    assert summary["replay_seed"] == forks[0].seed
    # Replaying the printed seed gives the same violation.
    again = run_seed(replace(params, seed=forks[0].seed), toy)
    assert again.violation == violation


def test_shrinking_keeps_the_fork_and_the_shrunk_schedule_replays_from_json(
    toy: ProtocolProfile,
) -> None:
    params = SimParams(protocol="toy", nodes=4, byzantine=1, **SHORT)
    failing = next(
        r for r in (run_seed(replace(params, seed=s), toy) for s in range(40)) if r.violation
    )
    params = replace(params, seed=failing.seed)
    noisy = replace(
        failing.schedule,
        faults=(
            *failing.schedule.faults,
            LinkFault("duplicate", 0.2, 800, 900),
            LinkFault("reorder", 0.2, 850, 950, (("n1", "n2"),), 30),
        ),
    )
    assert run_seed(params, toy, noisy).violation is not None
    small = shrink(params, toy, noisy, "agreement", max_runs=30)
    assert len(small.faults) < len(noisy.faults)
    text = json.dumps(schedule_to_json(small))
    replayed = run_seed(replace(params, trace=True), toy, schedule_from_json(json.loads(text)))
    assert replayed.violation is not None
    assert replayed.violation.kind == "agreement"
    assert replayed.trace is not None
    assert "VIOLATION agreement" in replayed.trace[-1]


@pytest.mark.parametrize(
    ("nodes", "byzantine", "tolerant", "bound"),
    [(4, 1, True, 1), (7, 2, True, 2), (7, 1, True, 2), (5, 0, False, 2), (7, 0, False, 3)],
)
def test_generated_schedules_never_exceed_the_fault_bound(
    toy: ProtocolProfile, nodes: int, byzantine: int, tolerant: bool, bound: int
) -> None:
    profile = replace(
        toy,
        byzantine_tolerant=tolerant,
        max_faulty=(lambda n: (n - 1) // 3) if tolerant else (lambda n: (n - 1) // 2),
    )
    params = SimParams(protocol="toy", nodes=nodes, byzantine=byzantine, **SHORT)
    crashed_somewhere = 0
    for seed in range(150):
        schedule = generate_schedule(params, profile, random.Random(seed))
        assert max_faulty_at_once(schedule) <= bound
        assert len(schedule.byzantine) == byzantine
        assert all(
            f.end_ms <= params.duration_ms for f in schedule.faults if not isinstance(f, CrashFault)
        )
        crashes = [f for f in schedule.faults if isinstance(f, CrashFault)]
        crashed_somewhere += bool(crashes)
        if not tolerant:
            assert not any(c.wipe for c in crashes)
    if bound > byzantine:
        assert crashed_somewhere > 50
    else:
        assert crashed_somewhere == 0


def test_beyond_model_schedules_crash_more_than_f_together(toy: ProtocolProfile) -> None:
    params = SimParams(protocol="toy", nodes=4, beyond_model=True, faults=("crash",), **SHORT)
    for seed in range(30):
        schedule = generate_schedule(params, toy, random.Random(seed))
        assert max_faulty_at_once(schedule) >= 2


def test_out_of_model_requests_are_refused(toy: ProtocolProfile) -> None:
    crash_only = replace(toy, byzantine_tolerant=False, max_faulty=lambda n: (n - 1) // 2)
    with pytest.raises(ConfigError):
        draw_schedule(SimParams(protocol="toy", nodes=4, byzantine=2, **SHORT), toy)
    with pytest.raises(ConfigError):
        draw_schedule(SimParams(protocol="toy", nodes=5, byzantine=1, **SHORT), crash_only)
    too_many = FaultSchedule(
        (CrashFault(NodeId("n1"), 0, 500), CrashFault(NodeId("n2"), 100, 600)), heal_ms=1000
    )
    with pytest.raises(ConfigError):
        run_seed(SimParams(protocol="toy", nodes=4, **SHORT), toy, too_many)
    wiped = FaultSchedule((CrashFault(NodeId("n1"), 0, 500, True),), heal_ms=1000)
    with pytest.raises(ConfigError):
        run_seed(SimParams(protocol="toy", nodes=5, **SHORT), crash_only, wiped)


def test_schedule_json_round_trip(toy: ProtocolProfile) -> None:
    params = SimParams(protocol="toy", nodes=7, byzantine=2, **SHORT)
    for seed in range(20):
        schedule = generate_schedule(params, toy, random.Random(seed))
        assert schedule_from_json(json.loads(json.dumps(schedule_to_json(schedule)))) == schedule
    with pytest.raises(ConfigError):
        schedule_from_json({"faults": [{"what": 1}], "heal_ms": 0})
