"""HPBFT replicas driven message by message: the normal case, what must be refused,
restarts, substitution of a silent seat, and supervisor revival's enforced assumptions."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hpbft_cluster import SEATS, STANDBYS, Cluster, make_config, node_key, tx

from belep.consensus.hpbft import HpbftOptions, HpbftReplica
from belep.consensus.hpbft_messages import (
    PREPARE_KIND,
    Certified,
    NewView,
    PrePrepare,
    ReviveNotice,
    Vote,
)
from belep.consensus.types import Receive
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
    SubstituteSeat,
    config_transaction,
    find_config_tx,
    revive_order_from_block,
)

n0, n1, n2, n3 = SEATS
s0, s1, s2 = STANDBYS
PARENT = DomainId("county-2")


def test_normal_case_commits_at_seats_and_standbys_with_seat_certificates() -> None:
    c = Cluster()
    c.submit(s2, tx(1000))
    for i in range(30):
        c.submit(SEATS[i % 4], *(tx(16 * i + j) for j in range(16)))
        c.run(c.now + 8)
    c.run(c.now + 800)  # one block in flight at a time (each waits for its parent's execution)
    heights = c.heights()
    assert min(heights.values()) == max(heights.values()) > 20
    for node in c.nodes:
        assert c.committed_payloads(node) >= {tx(i).payload for i in (*range(480), 1000)}
        for cert in c.nodes[node].certs:
            assert cert.statement.kind == COMMIT_KIND
            assert set(cert.signers) <= set(SEATS)  # a standby never signs a commit certificate
    # Linear collection: about 4(n-1) messages per block (proposal, two certificates to
    # everyone, two votes per seat), not the n^2 of all-to-all voting.
    assert c.wire_messages / heights[n0] < 40


def test_a_standby_vote_is_refused_and_changes_nothing() -> None:
    c = Cluster()
    c.submit(n0, tx(1))
    c.run(3)  # the proposal is out; votes not yet back
    primary = c.nodes[n0].replica
    block = primary._accepted[Height(1)]
    statement = VoteStatement(
        PREPARE_KIND,
        c.nodes[n0].replica.config.domain,
        Epoch(0),
        View(0),
        Height(1),
        block.block_hash,
    )
    vote = Vote(statement, s0, node_key(s0).sign(statement.signing_bytes()))
    before = primary._prepare_votes.count(statement)
    c.inject(n0, s0, vote)
    assert primary.stats.get("invalid_Vote") == 1
    assert primary._prepare_votes.count(statement) == before


def test_a_certificate_counting_a_standby_is_refused() -> None:
    c = Cluster()
    c.submit(n0, tx(1))
    c.run(400)
    block = c.nodes[n0].chain[0]
    statement = VoteStatement(
        COMMIT_KIND, block.header.domain, Epoch(0), View(0), Height(2), b"\x07" * 32
    )  # type: ignore[arg-type]
    sigs = tuple((s, node_key(s).sign(statement.signing_bytes())) for s in (n1, n2, s0))
    forged = QuorumCertificate(statement, sigs)
    target = c.nodes[n3].replica
    c.inject(n3, n1, Certified(forged))
    assert target.stats.get("invalid_Certified") == 1
    assert Height(2) not in target._commits


def test_a_pre_prepare_from_a_seat_that_is_not_the_primary_is_refused() -> None:
    c = Cluster()
    block = make_block(
        domain=make_config(n0).domain,
        height=Height(1),
        epoch=Epoch(0),
        view=View(0),
        prev_hash=make_config(n0).genesis_hash,
        transactions=(tx(9),),
        timestamp_ms=0,
        proposer=n1,
    )
    c.inject(n2, n1, PrePrepare(Epoch(0), View(0), block))
    assert c.nodes[n2].replica.stats.get("invalid_PrePrepare") == 1
    assert Height(1) not in c.nodes[n2].replica._accepted


def test_a_restarted_seat_never_votes_for_another_block_at_the_same_height() -> None:
    c = Cluster()
    c.submit(n0, tx(1))
    while not c.nodes[n2].replica._votes_sent and c.now < 50:
        c.run(c.now + 1)
    voted = dict(c.nodes[n2].replica._votes_sent)
    assert voted, "n2 should have voted at height 1"
    c.crash(n2)
    c.restart(n2)
    assert c.nodes[n2].replica._votes_sent == voted
    other = make_block(
        domain=make_config(n0).domain,
        height=Height(1),
        epoch=Epoch(0),
        view=View(0),
        prev_hash=make_config(n0).genesis_hash,
        transactions=(tx(77),),
        timestamp_ms=0,
        proposer=n0,
    )
    c.inject(n2, n0, PrePrepare(Epoch(0), View(0), other))
    assert c.nodes[n2].replica._votes_sent == voted
    c.run(500)
    assert len(c.nodes[n2].chain) == len(c.nodes[n0].chain) >= 1


def test_a_crashed_primary_is_replaced_by_a_view_change_and_nothing_forks() -> None:
    c = Cluster()
    c.submit(n1, *(tx(i) for i in range(10)))
    c.run(200)
    c.crash(n0)
    c.submit(n1, *(tx(i) for i in range(10, 20)))
    c.run(2500)
    assert c.nodes[n1].replica.view >= 1
    # The operators' counters say why: nothing was delivered, no transaction was censored.
    reasons = {k for s in (n1, n2, n3) for k in c.nodes[s].replica.stats if "suspect" in k}
    assert "suspect.no_delivery" in reasons
    assert "suspect.censorship" not in reasons
    for node in (n1, n2, n3, *STANDBYS):
        assert c.committed_payloads(node) >= {tx(i).payload for i in range(20)}


def test_a_new_view_that_drops_a_prepared_block_is_refused() -> None:
    c = Cluster()
    c.submit(n0, *(tx(i) for i in range(6)))
    c.run(300)
    # Every seat asks for view 1; its primary (n1) would build a NewView. Forge one that
    # re-proposes nothing although the view changes report prepared blocks.
    for seat in SEATS:
        c.nodes[seat].replica._start_view_change(View(1))
    vcs = tuple(c.nodes[s].replica._vcs[View(1)][s] for s in (n1, n2, n3))
    stripped = tuple(replace(v, blocks=()) for v in vcs)
    assert any(v.prepared for v in vcs)
    forged = NewView(Epoch(0), View(1), stripped, ())
    target = c.nodes[n3].replica
    c.inject(n3, n1, forged)
    assert target.stats.get("invalid_NewView") == 1
    assert target._in_view_change


def test_silent_seats_are_substituted_one_after_another_by_live_standbys() -> None:
    c = Cluster()
    c.crash(n3)
    for i in range(60):
        c.submit(n0, tx(i))
        c.run(c.now + 30)
    config_blocks = [b for b in c.nodes[n0].chain if find_config_tx(b) is not None]
    assert config_blocks, "no SubstituteSeat was committed"
    first = find_config_tx(config_blocks[0])
    assert first == SubstituteSeat(make_config(n0).domain, Epoch(0), n3, s0)
    after = config_blocks[0].height
    later = [b for b in c.nodes[s0].chain if b.height > after]
    assert later
    assert all(b.header.epoch == 1 for b in later)
    assert c.nodes[n0].replica.history.current.seats == (n0, n1, n2, s0)
    # A second failure: the domain now needs the new seat's votes, and heals again.
    c.crash(n2)
    mark = len(c.nodes[n0].chain)
    for i in range(60, 120):
        c.submit(n0, tx(i))
        c.run(c.now + 30)
    c.run(c.now + 500)
    assert c.nodes[n0].replica.history.current.seats == (n0, n1, s1, s0)
    assert any(s0 in cert.signers for cert in c.nodes[n0].certs[mark:])
    for node in (n0, n1, *STANDBYS):
        assert c.committed_payloads(node) >= {tx(i).payload for i in range(120)}


def _order(decision: ReviveChild, signers: tuple[NodeId, ...] = STANDBYS):  # type: ignore[no-untyped-def]
    block = make_block(
        domain=PARENT,
        height=Height(3),
        epoch=Epoch(0),
        view=View(0),
        prev_hash=b"\x02" * 32,  # type: ignore[arg-type]
        transactions=(tx(5), config_transaction(decision, node_key(s0), timestamp_ms=0)),
        timestamp_ms=0,
        proposer=s0,
    )
    statement = VoteStatement(COMMIT_KIND, PARENT, Epoch(0), View(0), Height(3), block.block_hash)
    sigs = tuple((s, node_key(s).sign(statement.signing_bytes())) for s in signers)
    return revive_order_from_block(block, decision, QuorumCertificate(statement, sigs))


REFUSED = [
    pytest.param(("n1", "n2", "n3"), ("n0", "s0", "s1"), STANDBYS, id="more-than-2f-failed"),
    pytest.param(("n2", "n3"), ("n0", "n2", "s0"), STANDBYS, id="seats-a-failed-node"),
    pytest.param(("n2", "n3"), ("n0", "n1", "s0", "s1"), (n0,), id="not-signed-by-the-parent"),
    pytest.param(("s0",), ("n0", "n1", "n2", "s1"), STANDBYS, id="declares-a-standby-failed"),
]


@pytest.mark.parametrize(("failed", "seats", "signers"), REFUSED)
def test_revival_refuses_decisions_outside_its_assumptions(
    failed: tuple[str, ...], seats: tuple[str, ...], signers: tuple[NodeId, ...]
) -> None:
    decision = ReviveChild(
        make_config(n0).domain,
        Epoch(0),
        tuple(NodeId(s) for s in seats),
        tuple(NodeId(f) for f in failed),
    )
    replica = HpbftReplica(make_config(n1), {}, HpbftOptions(parent_domain=PARENT))
    replica.start(0)
    effects = replica.handle(Receive(s0, ReviveNotice(_order(decision, signers))), 10)
    assert effects == []
    assert replica.stats.get("invalid_ReviveNotice") == 1
    assert replica._reviving is None


def test_revival_needs_a_parent() -> None:
    decision = ReviveChild(make_config(n0).domain, Epoch(0), (n0, n1, s0, s1), (n2, n3))
    replica = HpbftReplica(make_config(n1), {}, None)
    replica.start(0)
    assert replica.handle(Receive(s0, ReviveNotice(_order(decision))), 10) == []
    assert replica.stats.get("invalid_ReviveNotice") == 1


def test_a_parent_decision_revives_a_stalled_domain_from_the_prepared_chain() -> None:
    c = Cluster(options=HpbftOptions(parent_domain=PARENT))
    c.submit(n0, *(tx(i) for i in range(12)))
    c.run(300)
    before = len(c.nodes[n0].chain)
    c.crash(n2)
    c.crash(n3)
    c.submit(n0, *(tx(i) for i in range(12, 20)))
    c.run(1500)
    assert len(c.nodes[n0].chain) == before  # stalled, safely
    decision = ReviveChild(make_config(n0).domain, Epoch(0), (n0, n1, s0, s1), (n2, n3))
    c.inject(s2, s1, ReviveNotice(_order(decision)))  # a parent validator hands it on
    c.run(4000)
    revived = c.nodes[n0].replica.history.current
    assert revived.epoch == 1
    assert revived.seats == (n0, n1, s0, s1)
    assert revived.cause == "revive"
    for node in (n0, n1, *STANDBYS):
        assert c.committed_payloads(node) >= {tx(i).payload for i in range(20)}
    # The seats declared failed come back (crashed, not Byzantine): they catch up through the
    # revival, verifying the revived epoch's certificates from the record on the chain.
    c.restart(n2)
    c.restart(n3)
    c.submit(n0, *(tx(i) for i in range(20, 24)))
    c.run(6000)
    for node in (n2, n3):
        assert [b.block_hash for b in c.nodes[node].chain] == [
            b.block_hash for b in c.nodes[n0].chain
        ]
        assert c.nodes[node].replica.history.current.epoch == 1
        assert not c.nodes[node].replica.is_seat()
    records = [b for b in c.nodes[s2].chain if find_config_tx(b) is not None]
    assert records
    assert records[0].header.epoch == 1


def _trickle(c: Cluster, until_ms: int, *, start: int = 0, every_ms: int = 40) -> int:
    """Submit 3 transactions to seat n1 every ``every_ms`` (blocks stay below full)."""
    i = start
    while c.now < until_ms:
        c.submit(n1, *(tx(i + j) for j in range(3)))
        i += 3
        c.run(c.now + every_ms)
    return i


def test_a_slow_primary_committing_partial_blocks_is_not_replaced() -> None:
    # One block in flight and 25 ms links: a block takes ~150 ms of the 200 ms request
    # timeout, so a transaction (waiting for the block before its own) often waits longer
    # than the timeout; every delivered block is progress (before, only a full block was,
    # and the primary was replaced again and again).
    c = Cluster(latency_ms=25, config_overrides={"window": 1})
    sent = _trickle(c, 3000)
    c.run(c.now + 2000)
    assert all(c.nodes[s].replica.view == 0 for s in SEATS)
    assert max(len(b.transactions) for b in c.nodes[n1].chain) < 16  # never a full block
    assert c.committed_payloads(n1) >= {tx(i).payload for i in range(sent)}


def test_a_primary_censoring_one_transaction_is_replaced_within_the_bound() -> None:
    from belep.consensus.hpbft_messages import Forward
    from belep.consensus.hpbft_viewchange import CENSORSHIP_TIMEOUTS

    censored = tx(999_999)

    def drop_censored(src: object, dst: object, message: object) -> object | None:
        if dst == n0 and isinstance(message, Forward):
            kept = tuple(t for t in message.txs if t != censored)
            return Forward(kept) if kept else None
        return message

    c = Cluster()
    c.filter = drop_censored
    timeout = 200
    for seat in (n1, n2, n3):
        c.submit(seat, censored)
    arrival = c.now
    _trickle(c, arrival + (CENSORSHIP_TIMEOUTS - 1) * timeout)
    # Blocks kept committing, so the seats held on past many timeouts...
    assert c.nodes[n1].replica.view == 0
    assert censored.payload not in c.committed_payloads(n1)
    # ...but not past the censorship bound.
    _trickle(c, arrival + (CENSORSHIP_TIMEOUTS + 3) * timeout, start=10_000)
    assert c.nodes[n1].replica.view >= 1
    assert censored.payload in c.committed_payloads(n1)
    assert any(c.nodes[s].replica.stats["suspect.censorship"] for s in (n1, n2, n3))
