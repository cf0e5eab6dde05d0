"""The engine's host contract: clock and timers, persistence, crash and restart,
state transfer, message routing to crashed nodes, and exceptions in replica code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from belep.consensus.types import (
    CancelTimer,
    Effect,
    Event,
    Height,
    Persist,
    Persisted,
    Receive,
    ReplicaConfig,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
)
from belep.ledger.block import NodeId
from belep.sim.engine import Simulation
from belep.sim.model import CrashFault, FaultSchedule, SimParams, WorkloadParams
from belep.sim.protocols import ProtocolProfile, majority_rule
from belep.sim.runner import run_seed

QUIET = WorkloadParams(rate_per_s=0)


class Probe:
    """Records every event with its time; scripted effects on start and on timers."""

    def __init__(self, config: ReplicaConfig, persisted: Mapping[str, bytes]) -> None:
        self.config = config
        self.persisted = dict(persisted)
        self.log: list[tuple[int, str]] = []

    @property
    def committed_height(self) -> Height:
        return Height(0)

    def start(self, now_ms: int) -> list[Effect]:
        self.log.append((now_ms, "start"))
        if self.config.node_id != "n0":
            return [SetTimer(TimerId("ping"), 40)]
        return [
            SetTimer(TimerId("a"), 10),
            SetTimer(TimerId("b"), 10),
            SetTimer(TimerId("c"), 5),
            SetTimer(TimerId("d"), 5),
            SetTimer(TimerId("a"), 20),  # replaces the first "a"
            CancelTimer(TimerId("b")),
            Persist(1, "k", b"v1"),
            Persist(2, "gone", b"x"),
            Persist(3, "gone", None),
        ]

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        if isinstance(event, TimerFired):
            self.log.append((now_ms, f"timer {event.timer}"))
            if event.timer == "ping":
                return [Send(NodeId("n0"), b"ping"), SetTimer(TimerId("ping"), 40)]
        elif isinstance(event, Persisted):
            self.log.append((now_ms, f"persisted {event.token}"))
        elif isinstance(event, Receive):
            self.log.append((now_ms, f"recv {event.sender}"))
        return []


def probe_profile() -> ProtocolProfile:
    return ProtocolProfile("probe", Probe, True, lambda n: (n - 1) // 3, majority_rule)


def probe_sim(schedule: FaultSchedule, end: int = 200) -> Simulation:
    params = SimParams(
        protocol="probe",
        nodes=4,
        duration_ms=end // 2,
        stable_ms=end // 2,
        drain_ms=0,
        workload=QUIET,
    )
    sim = Simulation(params, probe_profile(), schedule)
    sim.run()
    return sim


def probe_log(sim: Simulation, key: str) -> list[tuple[int, str]]:
    replica = sim.hosts[key].replica
    assert isinstance(replica, Probe)
    return replica.log


def test_timers_replace_cancel_and_fire_in_time_then_schedule_order() -> None:
    sim = probe_sim(FaultSchedule(heal_ms=100))
    events = [e for e in probe_log(sim, "n0") if not e[1].startswith("recv")]
    assert events[:1] == [(0, "start")]
    fired = [e for e in events if e[1].startswith("timer")]
    # c and d at 5 in the order they were set; "a" only at its replaced time; "b" cancelled.
    assert fired == [(5, "timer c"), (5, "timer d"), (20, "timer a")]


def test_persist_is_stored_in_order_and_acknowledged_after_disk_delay() -> None:
    sim = probe_sim(FaultSchedule(heal_ms=100))
    acks = [e for e in probe_log(sim, "n0") if e[1].startswith("persisted")]
    assert acks == [(1, "persisted 1"), (1, "persisted 2"), (1, "persisted 3")]
    assert sim.hosts["n0"].store == {"k": b"v1"}


def test_restart_passes_the_persisted_map_and_wipe_empties_it() -> None:
    for wipe, expected in ((False, {"k": b"v1"}), (True, {})):
        sim = probe_sim(FaultSchedule((CrashFault(NodeId("n0"), 30, 60, wipe),), heal_ms=100))
        replica = sim.hosts["n0"].replica
        assert isinstance(replica, Probe)
        assert replica.persisted == expected
        assert replica.log[0] == (60, "start")


def test_crashed_node_gets_no_messages_and_no_timers_while_down() -> None:
    sim = probe_sim(
        FaultSchedule((CrashFault(NodeId("n0"), 30, 150, False),), heal_ms=100), end=300
    )
    log = probe_log(sim, "n0")  # the incarnation started at 150
    assert log[0] == (150, "start")
    assert all(t >= 150 for t, _ in log)
    assert any(what.startswith("recv") for _, what in log)  # pings flow again after restart
    before = probe_log(sim, "n1")
    assert any(t < 150 for t, _ in before)


def test_toy_commits_everything_without_faults(toy: ProtocolProfile) -> None:
    params = SimParams(protocol="toy", nodes=4, duration_ms=1000, stable_ms=1000, drain_ms=500)
    result = run_seed(params, toy, FaultSchedule(heal_ms=1000))
    assert result.violation is None
    assert result.liveness_failure is None
    assert result.transactions > 100
    assert result.committed_blocks > 10
    assert len(result.latencies_ms) == result.transactions
    assert 0 < min(result.latencies_ms) <= max(result.latencies_ms) < 1000


def test_state_transfer_catches_up_a_follower_that_was_down(toy: ProtocolProfile) -> None:
    params = SimParams(
        protocol="toy", nodes=4, duration_ms=1500, stable_ms=1500, drain_ms=700, trace=True
    )
    schedule = FaultSchedule((CrashFault(NodeId("n2"), 100, 1400, True),), heal_ms=1500)
    result = run_seed(params, toy, schedule)
    assert result.violation is None
    assert result.liveness_failure is None
    assert result.trace is not None
    fetches = [line for line in result.trace if " fetch n2 " in line]
    assert fetches
    assert any("got=0" not in line for line in fetches)


def test_an_exception_in_replica_code_is_reported_with_its_place(toy: ProtocolProfile) -> None:
    class Broken(Probe):
        def handle(self, event: Event, now_ms: int) -> list[Effect]:
            if isinstance(event, Receive):
                raise RuntimeError("boom in handler")
            return super().handle(event, now_ms)

    profile = replace(probe_profile(), factory=Broken)
    params = SimParams(
        protocol="probe", nodes=4, duration_ms=100, stable_ms=100, drain_ms=0, workload=QUIET
    )
    result = run_seed(params, profile, FaultSchedule(heal_ms=100))
    assert result.violation is not None
    assert result.violation.kind == "exception"
    assert result.violation.node == "n0"
    assert "boom in handler" in result.violation.detail
    # The first ping (sent at 40) arrives one link latency later and stops the run there.
    assert 40 < result.end_ms == result.violation.time_ms < 100
