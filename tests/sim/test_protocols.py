"""The real protocols in the simulator: hundreds of seeds of mixed faults within each
fault model (safe and live), planted bugs that the simulator must catch, and runs
beyond the fault model that must stop safely instead of forking.

Every run is deterministic: a failure message names the seed and the schedule, and
``belep sim --protocol P --nodes N --byzantine K --first-seed S --seeds 1
--duration 1000 --stable T --drain D --trace`` replays it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from belep.ledger.block import NodeId
from belep.sim.model import (
    CrashFault,
    FaultSchedule,
    LinkFault,
    SimParams,
    member_ids,
    schedule_to_json,
)
from belep.sim.protocols import get_profile
from belep.sim.runner import RunResult, run_seed, run_seeds, summarize
from belep.sim.scenarios import draw_scenario

#: Raft recovers within one election timeout once the network heals.
RAFT_RUN = {"duration_ms": 1000, "stable_ms": 1500, "drain_ms": 800}
#: PBFT's view-change timeouts double while faults last; give it 3 s of healthy network.
PBFT_RUN = {"duration_ms": 1000, "stable_ms": 3000, "drain_ms": 1000}


def explain(results: list[RunResult]) -> str:
    bad = [r for r in results if r.violation is not None or r.liveness_failure is not None]
    if not bad:
        return ""
    r = bad[0]
    return (
        f"{len(bad)} failing seeds; first: seed {r.seed}: {r.violation or r.liveness_failure}\n"
        f"schedule: {json.dumps(schedule_to_json(r.schedule))}"
    )


# Several hundred seeds per protocol, split over committee sizes and Byzantine counts.
WITHIN_MODEL = [
    pytest.param("raft", 3, 0, range(0, 160), RAFT_RUN, id="raft-3x160"),
    pytest.param("raft", 5, 0, range(1000, 1100), RAFT_RUN, id="raft-5x100"),
    pytest.param("pbft", 4, 0, range(0, 50), PBFT_RUN, id="pbft-4-crash-x50"),
    pytest.param("pbft", 4, 1, range(100, 230), PBFT_RUN, id="pbft-4-byz1-x130"),
    pytest.param("pbft", 7, 2, range(500, 530), PBFT_RUN, id="pbft-7-byz2-x30"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("protocol", "nodes", "byzantine", "seeds", "run"), WITHIN_MODEL)
def test_mixed_faults_within_the_model_are_safe_and_live(
    protocol: str, nodes: int, byzantine: int, seeds: range, run: dict[str, int]
) -> None:
    profile = get_profile(protocol)
    params = SimParams(protocol=protocol, nodes=nodes, byzantine=byzantine, **run)
    results = run_seeds(params, profile, seeds)
    summary = summarize(params, results)
    assert summary["safety_violations"] == 0, explain(results)
    assert summary["liveness_failures"] == 0, explain(results)
    # The seeds really exercised faults and really committed.
    assert sum(1 for r in results if r.schedule.faults) > 0.8 * len(results)
    if byzantine:
        assert all(len(r.schedule.byzantine) == byzantine for r in results)
        behaviours = {b for r in results for role in r.schedule.byzantine for b in role.behaviours}
        assert behaviours == {"twins", "equivocate", "forge", "replay", "withhold", "tamper"}
    assert min(r.committed_blocks for r in results) > 5
    assert sum(r.transactions for r in results) > 100 * len(results)


@pytest.mark.slow
def test_targeted_scenarios_within_the_model_are_safe_and_live() -> None:
    """The families that expose the planted bugs leave a correct PBFT safe and live."""
    profile = get_profile("pbft")
    params = SimParams(protocol="pbft", nodes=4, byzantine=1, **PBFT_RUN)
    results = []
    for seed in range(0, 40):
        seeded = replace(params, seed=seed)
        results.append(run_seed(seeded, profile, draw_scenario("mixture", seeded)))
    assert all(r.violation is None for r in results), explain(results)
    assert all(r.liveness_failure is None for r in results), explain(results)


def first_violation(params: SimParams, seeds: range, families: tuple[str, ...]) -> RunResult | None:
    """The first seed whose run breaks safety; seed ``s`` uses ``families[s % len]``
    (or the generic generator when no family is named)."""
    profile = get_profile(params.protocol)
    for seed in seeds:
        seeded = replace(params, seed=seed)
        schedule = draw_scenario(families[seed % len(families)], seeded) if families else None
        result = run_seed(seeded, profile, schedule)
        if result.violation is not None:
            return result
    return None


# Each planted bug with the schedules that expose it (see belep.sim.scenarios).
PLANTED = [
    pytest.param(
        "raft", "raft_truncate_without_conflict", 3, 0, (), range(0, 100), id="raft-truncate"
    ),
    pytest.param(
        "pbft",
        "pbft_prepare_quorum_2f",
        4,
        1,
        ("equivocate-to-successor", "late-commits-long"),
        range(0, 300),
        id="pbft-prepare-2f",
    ),
    pytest.param(
        "pbft",
        "pbft_viewchange_forgets_prepared",
        4,
        1,
        ("late-commits",),
        range(0, 300),
        id="pbft-vc-forgets",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("protocol", "bug", "nodes", "byzantine", "families", "seeds"), PLANTED)
def test_the_simulator_catches_a_planted_bug(
    protocol: str, bug: str, nodes: int, byzantine: int, families: tuple[str, ...], seeds: range
) -> None:
    params = SimParams(
        protocol=protocol,
        nodes=nodes,
        byzantine=byzantine,
        planted_bugs=frozenset({bug}),
        **RAFT_RUN,
    )
    found = first_violation(params, seeds, families)
    assert found is not None, (
        f"{bug}: no safety violation within seeds {seeds.start}..{seeds.stop - 1}"
    )
    assert found.violation is not None
    assert found.violation.kind == "agreement"
    # The printed seed replays the same violation.
    again = run_seed(replace(params, seed=found.seed), get_profile(protocol), found.schedule)
    assert again.violation == found.violation


BEYOND = [
    pytest.param("raft", 3, id="raft-3-majority-down"),
    pytest.param("raft", 5, id="raft-5-majority-down"),
    pytest.param("pbft", 4, id="pbft-4-f+1-down"),
    pytest.param("pbft", 7, id="pbft-7-f+1-down"),
]
#: After the crash, messages already in flight may still complete a certificate.
SETTLE_MS = 600


@pytest.mark.slow
@pytest.mark.parametrize(("protocol", "nodes"), BEYOND)
def test_beyond_the_model_the_protocol_stops_without_forking(protocol: str, nodes: int) -> None:
    profile = get_profile(protocol)
    down = profile.max_faulty(nodes) + 1
    params = SimParams(
        protocol=protocol, nodes=nodes, beyond_model=True, faults=("crash",), **RAFT_RUN
    )
    for seed in range(8):
        rng = random.Random(seed)
        crash_at = rng.randint(400, 800)
        victims = sorted(rng.sample(member_ids(nodes), down))
        faults: list[CrashFault | LinkFault] = [
            CrashFault(NodeId(v), crash_at, params.end_ms + 1) for v in victims
        ]
        if seed % 2:
            faults.append(LinkFault("loss", 0.1, 0, params.end_ms))
        schedule = FaultSchedule(tuple(faults), heal_ms=params.duration_ms)
        result = run_seed(replace(params, seed=seed), profile, schedule)
        assert result.violation is None, f"seed {seed}: {result.violation}"
        before = [t for t in result.commit_times_ms if t < crash_at]
        late = [t for t in result.commit_times_ms if t > crash_at + SETTLE_MS]
        assert before, f"seed {seed}: nothing committed before the crash at {crash_at}"
        assert late == [], f"seed {seed}: committed after {down} of {nodes} crashed at {crash_at}"
        assert result.transactions > 0


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--protocol", "pbft", "--nodes", "4", "--byzantine", "1"], id="pbft-byz"),
        pytest.param(["--protocol", "raft", "--nodes", "5"], id="raft"),
    ],
)
def test_same_seed_gives_a_byte_identical_trace_in_fresh_processes(args: list[str]) -> None:
    """Two processes with different hash seeds (set and dict orders of str differ) must
    produce the same trace, byte for byte."""
    belep = str(Path(sys.executable).with_name("belep"))  # the installed console script
    command = [
        belep,
        "sim",
        *args,
        "--first-seed",
        "3",
        "--seeds",
        "1",
        "--stable",
        "1500",
        "--drain",
        "800",
        "--trace",
        "--json",
    ]
    digests = []
    traces = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, check=False, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        digests.append(json.loads(done.stdout)["trace_sha256"]["3"])
        traces.append(done.stderr)
    assert len(traces[0].splitlines()) > 1000
    assert traces[0] == traces[1]
    assert digests[0] == digests[1]
