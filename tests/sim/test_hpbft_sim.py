"""HPBFT in the deterministic simulator.

Several hundred seeds of mixed faults within the fault model (safe and live);
standbys that vote before holding a seat (ignored); the two planted bugs of
DESIGN §3 (a mixed local/standby quorum, a standby vote counted before its
SubstituteSeat) caught by the invariant checker; seat substitution after
failures that arrive one after another; beyond the model, a safe stop; and
supervisor revival of a stalled domain by a parent decision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from belep.consensus.hpbft import HpbftOptions, HpbftReplica, make_hpbft_factory
from belep.consensus.hpbft_core import BUG_MIXED_QUORUM, BUG_STANDBY_VOTE
from belep.consensus.hpbft_messages import (
    PREPARE_KIND,
    Certified,
    PrePrepare,
    ReviveNotice,
    Vote,
)
from belep.consensus.hpbft_verify import make_certificate_rule
from belep.consensus.types import (
    Broadcast,
    Effect,
    Event,
    Receive,
    ReplicaConfig,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
)
from belep.ledger.block import (
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    View,
    VoteStatement,
    make_block,
)
from belep.ledger.config_tx import (
    COMMIT_KIND,
    ReviveChild,
    ReviveOrder,
    config_transaction,
    revive_order_from_block,
)
from belep.sim.engine import SIM_DOMAIN, sim_key
from belep.sim.model import (
    ByzantineRole,
    CrashFault,
    FaultSchedule,
    PartitionFault,
    SimParams,
    schedule_to_json,
)
from belep.sim.protocols import ProtocolProfile, get_profile
from belep.sim.runner import RunResult, draw_schedule, run_seed, run_seeds, summarize
from belep.sim.trace import trace_digest

SHORT = {"duration_ms": 1000, "stable_ms": 1500, "drain_ms": 800}
PARENT = DomainId("sim-parent")


def hpbft_profile(factory: object = None, orders: Sequence[ReviveOrder] = ()) -> ProtocolProfile:
    """The registered HPBFT profile with its own certificate rule (seats per epoch)."""
    profile = get_profile("hpbft")
    return replace(
        profile,
        factory=factory or profile.factory,  # type: ignore[arg-type]
        certificate_rule=make_certificate_rule(lambda: orders),
    )


def explain(results: list[RunResult]) -> str:
    bad = [r for r in results if r.violation is not None or r.liveness_failure is not None]
    if not bad:
        return ""
    r = bad[0]
    return (
        f"seed {r.seed}: {r.violation or r.liveness_failure}\n"
        f"schedule: {json.dumps(schedule_to_json(r.schedule))}"
    )


#: With f = 2, two faulty primaries can follow each other after the network heals; each
#: costs a (doubled) request timeout, so the 7-seat runs get a longer healthy tail.
LONG_TAIL = {"duration_ms": 1000, "stable_ms": 2500, "drain_ms": 800}

WITHIN_MODEL = [
    pytest.param(4, 3, 0, range(0, 120), SHORT, id="hpbft-4+3-x120"),
    pytest.param(4, 3, 1, range(1000, 1140), SHORT, id="hpbft-4+3-byz1-x140"),
    pytest.param(7, 3, 2, range(2000, 2040), LONG_TAIL, id="hpbft-7+3-byz2-x40"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("seats", "standbys", "byzantine", "seeds", "timing"), WITHIN_MODEL)
def test_mixed_faults_within_the_model_are_safe_and_live(
    seats: int, standbys: int, byzantine: int, seeds: range, timing: dict[str, int]
) -> None:
    profile = hpbft_profile()
    params = SimParams(
        protocol="hpbft", nodes=seats, observers=standbys, byzantine=byzantine, **timing
    )
    results = run_seeds(params, profile, seeds)
    summary = summarize(params, results)
    assert summary["safety_violations"] == 0, explain(results)
    assert summary["liveness_failures"] == 0, explain(results)
    assert sum(1 for r in results if r.schedule.faults) > 0.8 * len(results)
    assert min(r.committed_blocks for r in results) > 5
    if byzantine:
        behaviours = {b for r in results for role in r.schedule.byzantine for b in role.behaviours}
        assert behaviours == {"twins", "equivocate", "forge", "replay", "withhold", "tamper"}


# --------------------------------------------------------------------------
# A Byzantine standby: honest code, plus signed votes it has no right to cast
# --------------------------------------------------------------------------


class VotingStandby:
    """Test-only Byzantine standby: runs the real replica and also votes on everything.

    For every proposal and prepare certificate it sees it signs prepare and
    commit votes and sends them to the primary, as if it held a seat.
    """

    def __init__(self, config: ReplicaConfig, persisted: Mapping[str, bytes]) -> None:
        self.inner = HpbftReplica(config, persisted)
        self.config = config

    @property
    def committed_height(self) -> Height:
        return self.inner.committed_height

    def start(self, now_ms: int) -> list[Effect]:
        return self.inner.start(now_ms)

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        effects = self.inner.handle(event, now_ms)
        if isinstance(event, Receive):
            effects += self._votes(event.sender, event.message)
        return effects

    def _votes(self, sender: NodeId, message: object) -> list[Effect]:
        epoch = self.inner.history.current.epoch
        if isinstance(message, PrePrepare):
            b = message.block
            kinds = [(PREPARE_KIND, message.view, b.height, b.block_hash)]
        elif isinstance(message, Certified) and message.certificate.statement.kind == PREPARE_KIND:
            s = message.certificate.statement
            kinds = [(COMMIT_KIND, s.view, s.height, s.block_hash)]
        else:
            return []
        out: list[Effect] = []
        for kind, view, height, digest in kinds:
            statement = VoteStatement(kind, self.config.domain, epoch, view, height, digest)
            signature = self.config.private_key.sign(statement.signing_bytes())
            out.append(Send(sender, Vote(statement, self.config.node_id, signature)))
        return out


def voting_standby_factory(voters: frozenset[str], options: HpbftOptions | None = None) -> object:
    honest = make_hpbft_factory(options)

    def factory(config: ReplicaConfig, persisted: Mapping[str, bytes]) -> object:
        if config.node_id in voters:
            return VotingStandby(config, persisted)
        return honest(config, persisted)

    return factory


def locals_vs_standbys(start: int, end: int) -> PartitionFault:
    """The primary's side holds one local and the standbys; the other side the other locals."""
    return PartitionFault((("n0", "n1", "s0", "s1", "s2"), ("n2", "n3")), start, end)


def test_votes_of_standbys_without_a_seat_are_ignored() -> None:
    profile = hpbft_profile(voting_standby_factory(frozenset({"s0", "s1", "s2"})))
    params = SimParams(protocol="hpbft", nodes=4, observers=3, faults=(), **SHORT)
    for seed in range(4):
        schedule = FaultSchedule((locals_vs_standbys(200, 700),), (), 1000)
        result = run_seed(replace(params, seed=seed), profile, schedule)
        assert result.violation is None, result.violation
        assert result.liveness_failure is None, result.liveness_failure
        # With two locals cut off, nothing may commit while standby votes alone would make up
        # a quorum: a commit needs three of the four seats.
        stalled = [t for t in result.commit_times_ms if 350 < t < 700]
        assert stalled == [], f"seed {seed}: committed with standby votes at {stalled[:3]}"


def test_byzantine_standbys_change_nothing_within_the_model() -> None:
    """Standbys that vote, forge, tamper, replay or run as Twins, among mixed faults."""
    profile = hpbft_profile(voting_standby_factory(frozenset({"s1"})))
    params = SimParams(protocol="hpbft", nodes=4, observers=3, **SHORT)
    behaviours = [("twins",), ("equivocate", "forge", "replay", "tamper", "withhold")]
    for seed in range(3000, 3016):
        drawn = draw_schedule(replace(params, seed=seed), profile)
        role = ByzantineRole(NodeId("s0"), behaviours[seed % 2])
        # The Byzantine standby is this run's one fault (it may be handed a seat).
        faults = tuple(f for f in drawn.faults if not isinstance(f, CrashFault))
        schedule = replace(drawn, faults=faults, byzantine=(role,))
        result = run_seed(replace(params, seed=seed), profile, schedule)
        assert result.violation is None, f"seed {seed}: {result.violation}"
        assert result.liveness_failure is None, f"seed {seed}: {result.liveness_failure}"


PLANTED = [
    pytest.param(BUG_MIXED_QUORUM, frozenset(), id="mixed-quorum"),
    pytest.param(BUG_STANDBY_VOTE, frozenset({"s0"}), id="standby-vote-before-seat"),
]


@pytest.mark.parametrize(("bug", "voting_standbys"), PLANTED)
def test_the_simulator_catches_a_planted_quorum_bug(
    bug: str, voting_standbys: frozenset[str]
) -> None:
    profile = hpbft_profile(voting_standby_factory(voting_standbys))
    params = SimParams(
        protocol="hpbft",
        nodes=4,
        observers=3,
        faults=(),
        planted_bugs=frozenset({bug}),
        **SHORT,
    )
    for seed in range(6):
        schedule = FaultSchedule((locals_vs_standbys(150 + 40 * seed, 800),), (), 1000)
        result = run_seed(replace(params, seed=seed), profile, schedule)
        if result.violation is not None:
            assert result.violation.kind in ("agreement", "certificate")
            assert run_seed(replace(params, seed=seed), profile, schedule).violation == (
                result.violation
            )
            return
    pytest.fail(f"{bug}: no safety violation within 6 seeds")


def test_the_mixed_quorum_forks_the_chain_after_a_mere_partition() -> None:
    """With a verifier that trusts mixed quorums too, the bug shows as a real fork."""
    profile = replace(hpbft_profile(), certificate_rule=lambda config, chain, block, cert: None)
    params = SimParams(
        protocol="hpbft",
        nodes=4,
        observers=3,
        faults=(),
        planted_bugs=frozenset({BUG_MIXED_QUORUM}),
        **SHORT,
    )
    partition = PartitionFault((("n0", "n1", "s0"), ("n2", "n3", "s1", "s2")), 200, 900)
    kinds = set()
    for seed in range(6):
        result = run_seed(
            replace(params, seed=seed), profile, FaultSchedule((partition,), (), 1000)
        )
        if result.violation is not None:
            kinds.add(result.violation.kind)
    assert "agreement" in kinds


# --------------------------------------------------------------------------
# Substitution, stopping safely, revival
# --------------------------------------------------------------------------


def test_a_silent_seat_is_substituted_and_the_domain_survives_four_sequential_failures() -> None:
    profile = hpbft_profile()
    params = SimParams(
        protocol="hpbft",
        nodes=4,
        observers=3,
        duration_ms=6000,
        stable_ms=1500,
        drain_ms=800,
        faults=(),
        beyond_model=True,
    )
    end = params.end_ms + 1
    crashes = tuple(
        CrashFault(NodeId(node), 1000 + 1400 * i, end)
        for i, node in enumerate(("n3", "n2", "n1", "n0"))
    )
    result = run_seed(replace(params, seed=3), profile, FaultSchedule(crashes, (), 6000))
    assert result.violation is None, result.violation
    after_fourth = [t for t in result.commit_times_ms if t > 1000 + 1400 * 3 + 800]
    assert len(after_fourth) > 10, "no commits after the fourth local validator failed"


def test_beyond_the_model_hpbft_stops_without_forking() -> None:
    profile = hpbft_profile()
    params = SimParams(
        protocol="hpbft", nodes=4, observers=3, faults=(), beyond_model=True, **SHORT
    )
    for seed in range(4):
        crash_at = 400 + 100 * seed
        victims = ("n2", "n3") if seed % 2 else ("n0", "n3")
        schedule = FaultSchedule(
            tuple(CrashFault(NodeId(v), crash_at, params.end_ms + 1) for v in victims), (), 1000
        )
        result = run_seed(replace(params, seed=seed), profile, schedule)
        assert result.violation is None, result.violation
        assert [t for t in result.commit_times_ms if t > crash_at + 600] == []
        assert [t for t in result.commit_times_ms if t < crash_at]


class RevivalRelay:
    """A parent validator (standby) that hands the parent's committed decision on at ``at_ms``."""

    def __init__(self, inner: HpbftReplica, order: ReviveOrder, at_ms: int) -> None:
        self.inner = inner
        self.config = inner.config
        self.order = order
        self.at_ms = at_ms

    @property
    def committed_height(self) -> Height:
        return self.inner.committed_height

    def start(self, now_ms: int) -> list[Effect]:
        effects = self.inner.start(now_ms)
        if now_ms < self.at_ms:
            effects.append(SetTimer(TimerId("test/revive"), self.at_ms - now_ms))
        return effects

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        if isinstance(event, TimerFired) and event.timer == "test/revive":
            everyone = tuple(n for n in (*self.config.members, *self.config.observers))
            notice = ReviveNotice(self.order)
            others = tuple(n for n in everyone if n != self.config.node_id)
            return [Broadcast(others, notice)]
        return self.inner.handle(event, now_ms)


def parent_order(failed: tuple[str, ...], seats: tuple[str, ...]) -> ReviveOrder:
    decision = ReviveChild(
        SIM_DOMAIN, Epoch(0), tuple(NodeId(s) for s in seats), tuple(NodeId(f) for f in failed)
    )
    block = make_block(
        domain=PARENT,
        height=Height(7),
        epoch=Epoch(0),
        view=View(0),
        prev_hash=b"\x01" * 32,  # type: ignore[arg-type]
        transactions=(config_transaction(decision, sim_key(NodeId("s0")), timestamp_ms=0),),
        timestamp_ms=0,
        proposer=NodeId("s0"),
    )
    statement = VoteStatement(COMMIT_KIND, PARENT, Epoch(0), View(0), Height(7), block.block_hash)
    sigs = tuple(
        (NodeId(n), sim_key(NodeId(n)).sign(statement.signing_bytes())) for n in ("s0", "s1", "s2")
    )
    return revive_order_from_block(block, decision, QuorumCertificate(statement, sigs))


def test_a_parent_decision_revives_a_stalled_domain() -> None:
    order = parent_order(failed=("n2", "n3"), seats=("n0", "n1", "s0", "s1"))
    options = HpbftOptions(parent_domain=PARENT)
    honest = make_hpbft_factory(options)

    def factory(config: ReplicaConfig, persisted: Mapping[str, bytes]) -> object:
        replica = honest(config, persisted)
        if config.node_id == "s2":
            return RevivalRelay(replica, order, 1500)
        return replica

    profile = hpbft_profile(factory, orders=(order,))
    params = SimParams(
        protocol="hpbft",
        nodes=4,
        observers=3,
        faults=(),
        beyond_model=True,
        duration_ms=1000,
        stable_ms=2500,
        drain_ms=800,
    )
    crashes = tuple(CrashFault(NodeId(v), 600, params.end_ms + 1) for v in ("n2", "n3"))
    result = run_seed(replace(params, seed=1), profile, FaultSchedule(crashes, (), 1000))
    assert result.violation is None, result.violation
    assert [t for t in result.commit_times_ms if 1200 < t < 1500] == []  # stalled
    revived = [t for t in result.commit_times_ms if t > 1500]
    assert len(revived) > 10, "the revived epoch did not commit"


def test_the_same_seed_gives_the_same_trace() -> None:
    params = SimParams(protocol="hpbft", nodes=4, observers=3, byzantine=1, trace=True, **SHORT)
    profile = hpbft_profile()
    first = run_seed(replace(params, seed=11), profile)
    second = run_seed(replace(params, seed=11), hpbft_profile())
    assert first.trace is not None
    assert trace_digest(first.trace) == trace_digest(second.trace or ())
