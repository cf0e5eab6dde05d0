"""Execution after ordering in the simulator: every host executes what its replica delivers,
and a node whose execution differs is caught by the state root at the next block.

The planted bug ``sim_app_nondeterminism`` makes the last member's application reject what
the others accept (a node-local quirk, as if it read its own clock or disk). The state
root of the block after the first block it executed differently no longer matches its own
execution: the simulator reports a ``state-root`` violation at exactly that height, under
random fault schedules, for every protocol. Without the bug, the same runs are clean.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from belep.ledger.execution import ChainExecutor, MemoryState, genesis_state_root
from belep.sim.application import PLANTED_NONDETERMINISM, SimApplication
from belep.sim.engine import Simulation
from belep.sim.model import FaultSchedule, SimParams, member_ids
from belep.sim.protocols import get_profile
from belep.sim.runner import draw_schedule

RUNS = {
    "pbft": {"nodes": 4, "duration_ms": 1000, "stable_ms": 3000, "drain_ms": 1000},
    "hpbft": {"nodes": 4, "observers": 3, "duration_ms": 1000, "stable_ms": 2000, "drain_ms": 800},
    "raft": {"nodes": 3, "duration_ms": 1000, "stable_ms": 1500, "drain_ms": 800},
}


def first_quirk_height(sim: Simulation) -> int | None:
    """The first committed block holding a transaction the planted quirk rejects."""
    for block in sim.checker.canonical:
        if any(tx.tx_hash[0] == 0 for tx in block.transactions):
            return block.height
    return None


def run(protocol: str, seed: int, *, planted: bool, faults: bool) -> Simulation:
    params = SimParams(protocol=protocol, seed=seed, **RUNS[protocol])  # type: ignore[arg-type]
    if planted:
        params = replace(params, planted_bugs=frozenset({PLANTED_NONDETERMINISM}))
    profile = get_profile(protocol)
    schedule = draw_schedule(params, profile) if faults else FaultSchedule(heal_ms=0)
    sim = Simulation(params, profile, schedule)
    sim.run()
    return sim


@pytest.mark.parametrize("protocol", sorted(RUNS))
def test_a_node_whose_execution_differs_is_caught_at_the_next_block(protocol: str) -> None:
    sim = run(protocol, 7, planted=True, faults=False)
    diverged = first_quirk_height(sim)
    assert diverged is not None, "the workload never hit the quirk"
    violation = sim.violation
    assert violation is not None
    assert violation.kind == "state-root", violation
    assert violation.height == diverged + 1, (violation, diverged)
    if protocol != "raft":
        # BFT replicas refuse a block whose root is not theirs, so the committee keeps the
        # honest root and the odd node is the one that finds it differs. (Raft followers
        # trust their leader, crash faults only: if the odd node leads, the others find it.)
        assert violation.node == str(member_ids(RUNS[protocol]["nodes"])[-1])


@pytest.mark.slow
@pytest.mark.parametrize("protocol", sorted(RUNS))
def test_random_fault_schedules_catch_it_too_and_are_clean_without_it(protocol: str) -> None:
    for seed in range(20, 26):
        clean = run(protocol, seed, planted=False, faults=True)
        assert clean.violation is None, (seed, clean.violation)
        planted = run(protocol, seed, planted=True, faults=True)
        diverged = first_quirk_height(planted)
        if diverged is None:
            continue
        violation = planted.violation
        assert violation is not None, seed
        assert violation.kind == "state-root", (seed, violation)
        assert violation.height == diverged + 1, (seed, violation, diverged)


def test_every_correct_host_holds_the_same_state_after_a_clean_run() -> None:
    sim = run("pbft", 3, planted=False, faults=False)
    assert sim.violation is None
    roots = {key: host.roots[-1] for key, host in sim.hosts.items() if host.correct}
    heights = {key: len(host.roots) - 1 for key, host in sim.hosts.items()}
    top = min(heights.values())
    assert top > 5
    assert len({sim.hosts[k].roots[top] for k in roots}) == 1
    # Re-executing the canonical chain from nothing gives the same roots, and both
    # accepted and rejected results (the order decided some).
    executor = ChainExecutor.from_genesis(
        SimApplication(), MemoryState(), sim.hosts["n0"].config.genesis_hash
    )
    codes: set[str] = set()
    for block in sim.checker.canonical[:top]:
        codes.update(r.code for r in executor.execute(block).results)
    assert executor.root == sim.hosts["n0"].roots[top]
    assert genesis_state_root(sim.hosts["n0"].config.genesis_hash) == sim.hosts["n0"].roots[0]
    assert "ok" in codes
