"""Admission control and the commit tracker's backlog: refusals, bounds, one-time relays."""

from __future__ import annotations

import asyncio

import pytest

from belep.app.machine import BelepApplication
from belep.crypto import PrivateKey
from belep.deploy.topology import parse_topology
from belep.ledger.block import DomainId, NodeId, Transaction
from belep.ledger.builder import ChainBuilder, make_genesis
from belep.ledger.envelope import sign_envelope
from belep.node.admission import DEFAULT_MAX_OUTSTANDING, AdmissionPolicy, refusal
from belep.node.commits import ABANDON_AFTER_S, Backlog, CommitTracker
from belep.node.config import TuningPlan

KEYS = {NodeId(f"v{i}"): PrivateKey.from_seed(bytes([i]) * 32) for i in range(1, 5)}
GENESIS = make_genesis("d", KEYS)
D = DomainId("d")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def txs(count: int, start: int = 0) -> list[Transaction]:
    key = KEYS[NodeId("v1")]
    return [
        sign_envelope(key, "bench", {"i": i}, timestamp_ms=1).to_transaction()
        for i in range(start, start + count)
    ]


def test_policy_defaults_follow_the_request_timeout() -> None:
    policy = AdmissionPolicy.for_domain(1000)
    assert policy.max_delay_s == 0.5
    assert policy.max_outstanding == DEFAULT_MAX_OUTSTANDING
    assert policy.retry_after_ms == 500
    explicit = AdmissionPolicy.for_domain(1000, admission_delay_ms=50, max_outstanding=7)
    assert (explicit.max_delay_s, explicit.max_outstanding) == (0.05, 7)
    assert explicit.retry_after_ms == 50  # never asks a client to retry at once
    assert policy.retry_after_for(100, 1000.0) == 100  # the excess commits in 100 ms
    assert policy.retry_after_for(10, 1000.0) == 50
    assert policy.retry_after_for(10_000, 1000.0) == 500  # never longer than the delay
    assert policy.retry_after_for(10, 0.0) == 500  # no rate known: the delay


# Policy: 0.5 s, at most 1000 outstanding; the rate bound is max(100, rate x 2 x 0.5 s).
REFUSALS = [
    ("empty", Backlog(0, 0.0), 10, None),
    ("young", Backlog(5, 0.4), 10, None),
    ("exactly-at-the-delay", Backlog(5, 0.5), 10, None),
    ("too-old", Backlog(5, 0.51), 1, "delay"),
    ("too-old-even-for-nothing", Backlog(1, 3.0), 0, "delay"),
    ("floor-fills-exactly", Backlog(90, 0.1), 10, None),
    ("floor-one-too-many", Backlog(90, 0.1), 11, "rate"),
    ("rate-allows-a-second", Backlog(900, 0.1, 1000.0), 100, None),
    ("rate-refuses-a-burst", Backlog(900, 0.1, 1000.0), 101, "rate"),
    ("rate-refuses-a-big-burst", Backlog(900, 0.1, 1000.0), 500, "rate"),
    ("empty-admits-a-burst", Backlog(0, 0.0, 0.0), 1000, None),
    ("outstanding-caps-any-rate", Backlog(900, 0.1, 1e6), 101, "outstanding"),
    ("alone-too-large", Backlog(0, 0.0), 1001, "outstanding"),
]


@pytest.mark.parametrize(("name", "backlog", "incoming", "reason"), REFUSALS, ids=lambda x: x)
def test_refusal(name: str, backlog: Backlog, incoming: int, reason: str | None) -> None:
    found = refusal(AdmissionPolicy(0.5, 1000), backlog, incoming)
    if name == "rate-refuses-a-burst":  # 1 tx too many at 1000 tx/s: retry soon
        assert found is not None
        assert found.retry_after_ms == 50
    if name == "rate-refuses-a-big-burst":  # 400 too many at 1000 tx/s: 400 ms
        assert found is not None
        assert found.retry_after_ms == 400
    assert (found.reason if found is not None else None) == reason, name
    if found is not None:
        assert 50 <= found.retry_after_ms <= 500
        assert "busy" in found.message


def test_a_batch_larger_than_the_rate_bound_is_not_starved() -> None:
    """At 1,000 tx/s the rate bound is 1,000; a 5,000-transaction batch counts as 500, so
    it is admitted once the backlog is half empty, not only when it is empty (which under
    steady load from other clients may never happen)."""
    policy = AdmissionPolicy(0.5, 100_000)
    assert refusal(policy, Backlog(500, 0.1, 1000.0), 5_000) is None
    refused = refusal(policy, Backlog(501, 0.1, 1000.0), 5_000)
    assert refused is not None
    assert refused.reason == "rate"
    assert AdmissionPolicy.for_domain(1000, max_outstanding=10_000_000).max_outstanding == 100_000


def test_topology_carries_admission_knobs() -> None:
    text = """
[network]
name = "n"
[consensus]
admission_delay_ms = 250
max_outstanding = 1000
[[units]]
id = "city"
protocol = "pbft"
validators = 4
"""
    topology = parse_topology(text)
    assert topology.units[0].tuning == TuningPlan(admission_delay_ms=250, max_outstanding=1000)


def test_backlog_ages_counts_and_forgets_committed() -> None:
    clock = Clock()
    latencies: list[float] = []
    tracker = CommitTracker(lambda _d, s: latencies.append(s), clock=clock)
    first, second = txs(2)
    assert tracker.backlog(D) == Backlog(0, 0.0)
    tracker.committed(
        D,
        ChainBuilder(GENESIS, KEYS, application=BelepApplication()).next_block(
            [b"x"], timestamp_ms=1
        )[0],
    )
    assert tracker.backlog(D) == Backlog(0, 0.0)  # others' transactions are not this rate
    tracker.submitted(D, first)
    clock.now += 0.3
    tracker.submitted(D, second)
    tracker.submitted(D, first)  # a repeat keeps its first time
    clock.now += 0.4
    assert tracker.backlog(D) == Backlog(2, pytest.approx(0.7))
    assert tracker.backlog(DomainId("other")) == Backlog(0, 0.0)
    block, _ = ChainBuilder(GENESIS, KEYS, application=BelepApplication()).next_block(
        [first.payload], timestamp_ms=1
    )
    tracker.committed(D, block)
    assert tracker.backlog(D) == Backlog(1, pytest.approx(0.4), 0.5)  # 1 tx in 2 s
    assert latencies == [pytest.approx(0.7)]
    clock.now += 2.1  # the commit leaves the rate window
    assert tracker.backlog(D) == Backlog(1, pytest.approx(2.5), 0.0)


def test_backlog_abandons_what_never_commits() -> None:
    clock = Clock()
    tracker = CommitTracker(lambda _d, _s: None, clock=clock)
    stuck, fresh = txs(2)
    tracker.submitted(D, stuck)
    clock.now += ABANDON_AFTER_S - 1
    tracker.submitted(D, fresh)
    clock.now += 2
    assert tracker.backlog(D) == Backlog(1, pytest.approx(2.0))
    assert tracker.abandoned == 1


def test_overdue_hands_each_back_once_and_skips_committed() -> None:
    clock = Clock()
    tracker = CommitTracker(lambda _d, _s: None, clock=clock)
    batch = txs(5)
    for tx in batch[:3]:
        tracker.submitted(D, tx)
    clock.now += 1.0
    for tx in batch[3:]:
        tracker.submitted(D, tx)
    block, _ = ChainBuilder(GENESIS, KEYS, application=BelepApplication()).next_block(
        [batch[1].payload], timestamp_ms=1
    )
    tracker.committed(D, block)
    assert tracker.overdue(0.5) == [(D, batch[0]), (D, batch[2])]
    assert tracker.overdue(0.5) == []
    clock.now += 1.0
    assert tracker.overdue(0.5, limit=1) == [(D, batch[3])]
    assert tracker.overdue(0.5) == [(D, batch[4])]


def test_overdue_cost_does_not_grow_with_the_backlog() -> None:
    """Each submission is examined once: a backlog of relayed entries is not rescanned."""
    clock = Clock()
    tracker = CommitTracker(lambda _d, _s: None, clock=clock)
    batch = txs(200)
    for tx in batch:
        tracker.submitted(D, tx)
    clock.now += 5
    assert len(tracker.overdue(1.0)) == 200
    examined = tracker._domains[D].unexamined
    assert len(examined) == 0
    assert tracker.backlog(D).count == 200  # still uncommitted, still counted


def test_wait_all_one_timer_for_many() -> None:
    async def scenario() -> None:
        tracker = CommitTracker(lambda _d, _s: None)
        batch = txs(3)
        watched = [(tx.tx_hash, tracker.watch(tx.tx_hash)) for tx in batch]
        assert tracker.waiting == 3
        builder = ChainBuilder(GENESIS, KEYS, application=BelepApplication())
        block, _ = builder.next_block([batch[0].payload, batch[2].payload], timestamp_ms=1)
        asyncio.get_running_loop().call_soon(tracker.committed, D, block)
        found = await tracker.wait_all(watched, 0.2)
        assert [None if f is None else f.index for f in found] == [0, None, 1]
        assert tracker.waiting == 0

    asyncio.run(scenario())
