"""PBFT schedules the simulator once found failing, replayed with every parameter pinned.

Each case fixes the seed, the run parameters and the fault schedule itself (as the
simulator printed it), so a later change of a default or of the schedule generator
cannot silently turn the case into one that no longer exercises the bug.
"""

from __future__ import annotations

from belep.sim.model import NetworkParams, SimParams, WorkloadParams, schedule_from_json
from belep.sim.protocols import get_profile
from belep.sim.runner import run_seed

#: Seed 7087 (``belep sim --protocol pbft --nodes 4 --byzantine 1 --first-seed 7087``).
#: At genesis the Byzantine n1 answers n3's status request with view 2, so n3's voting
#: floor is 2 and it asks for view 3 alone; n1 is the primary of view 1 and withholds,
#: so n0 and n2 move to view 2, where they are only two (n3 may not join, n1 keeps quiet
#: towards n2) and nobody else asks for a later view but n3 — the f + 1 join rule cannot
#: fire. Before the catch-up rule of docs/spec/pbft.md §8 they resent their view change
#: forever and nothing committed after the heal.
SEED_7087_SCHEDULE = {
    "faults": [
        {"partition": [["n1", "n3"], ["n0", "n2"]], "start": 211, "end": 288},
        {"partition": [["n0", "n1"], ["n2", "n3"]], "start": 482, "end": 548},
        {
            "link": "duplicate",
            "p": 0.282,
            "start": 156,
            "end": 731,
            "links": [["n1", "n0"], ["n1", "n2"], ["n2", "n1"], ["n3", "n2"]],
            "extra": 58,
        },
        {
            "link": "reorder",
            "p": 0.109,
            "start": 206,
            "end": 429,
            "links": [["n0", "n2"], ["n0", "n3"], ["n2", "n0"], ["n2", "n1"]],
            "extra": 35,
        },
    ],
    "byzantine": [{"node": "n1", "behaviours": ["forge", "replay", "tamper", "withhold"]}],
    "heal_ms": 1000,
}


def test_seed_7087_replicas_split_over_views_by_a_lying_status_reply_reconverge() -> None:
    params = SimParams(
        protocol="pbft",
        nodes=4,
        byzantine=1,
        seed=7087,
        duration_ms=1000,
        stable_ms=3000,
        drain_ms=1000,
        catchup_ms=500,
        faults=("crash", "partition", "loss", "duplicate", "reorder"),
        network=NetworkParams(
            min_base_ms=2,
            max_base_ms=12,
            jitter_ms=3,
            distribution="exponential",
            max_latency_ms=400,
            disk_ms=1,
            fetch_batch=64,
        ),
        workload=WorkloadParams(
            rate_per_s=400, median_payload=400, max_payload=4096, retry_ms=600, clients=4
        ),
        max_batch_size=64,
        max_batch_wait_ms=20,
        window=8,
        request_timeout_ms=300,
        heartbeat_ms=50,
        checkpoint_interval=8,
        trace=True,
    )
    schedule = schedule_from_json(SEED_7087_SCHEDULE)
    result = run_seed(params, get_profile("pbft"), schedule)
    assert result.trace is not None
    # The run still sets up the split: n3's floor comes from n1's lie.
    assert any("recv n3 <- n1 StatusReply(view=2 " in line for line in result.trace)
    assert result.violation is None, result.violation
    assert result.liveness_failure is None, result.liveness_failure
    # Blocks keep committing once the network is healthy, and long before the end.
    heal = 1000
    after_heal = [t for t in result.commit_times_ms if t >= heal]
    assert len(after_heal) > 20
    assert min(after_heal) < heal + 2 * params.request_timeout_ms
    assert max(result.commit_times_ms) > result.end_ms - params.drain_ms - params.catchup_ms
