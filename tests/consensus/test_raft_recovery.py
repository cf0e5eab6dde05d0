"""Raft clusters on the in-test router: restart from persisted state, InstallSnapshot
catch-up, observers, and the handler contract (invalid input changes nothing)."""

from __future__ import annotations

import pytest
from raft_cluster import DOMAIN, Cluster, build_log, make_configs, stored, tx

from belep.consensus.raft import (
    ELECTION_TIMER,
    RaftReplica,
    Role,
)
from belep.consensus.raft_cert import append_statement
from belep.consensus.raft_log import encode_entry, log_key
from belep.consensus.raft_messages import (
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    RequestVote,
    VoteResponse,
)
from belep.consensus.types import (
    Block,
    BlocksFetched,
    DomainId,
    Event,
    NodeId,
    Persist,
    QuorumCertificate,
    Receive,
    Send,
    TimerFired,
    TimerId,
)
from belep.ledger.block import Epoch, Height, View, make_block

# --------------------------------------------------------------------------
# Persistence and restart
# --------------------------------------------------------------------------


def test_whole_cluster_restarts_from_persisted_state_and_goes_on() -> None:
    cluster = Cluster.of(3)
    leader = cluster.leader()
    cluster.submit(leader, (tx(i) for i in range(6)))
    cluster.run_until(lambda: all(len(cluster.committed_txs(n)) == 6 for n in cluster.configs))
    before = {
        n: (r.term, r.voted_for, r.committed_height, r.log.last_index)
        for n, r in cluster.replicas.items()
    }
    for node in cluster.configs:
        cluster.crash(node)
    cluster.queue.clear()
    for node in cluster.configs:
        cluster.boot(node)
    after = {
        n: (r.term, r.voted_for, r.committed_height, r.log.last_index)
        for n, r in cluster.replicas.items()
    }
    assert after == before
    new = cluster.leader()
    cluster.submit(new, (tx(i) for i in range(6, 9)))
    # check_delivery asserts that nothing is delivered twice and heights continue.
    cluster.run_until(lambda: all(len(cluster.committed_txs(n)) == 9 for n in cluster.configs))


def test_a_vote_survives_a_restart() -> None:
    configs = make_configs(3)
    n0, n1, n2 = configs
    storage: dict[str, bytes] = {}
    voter = RaftReplica(configs[n1], storage)
    voter.start(0)
    request = RequestVote(View(5), Height(0), View(0), pre_vote=False)
    effects = voter.handle(Receive(n0, request), 10)
    persisted = [e for e in effects if isinstance(e, Persist)]
    replies = [e for e in effects if isinstance(e, Send)]
    assert effects.index(persisted[-1]) < effects.index(replies[0])  # durable before answering
    assert replies[0].message == VoteResponse(View(5), True, pre_vote=False)
    for effect in persisted:
        assert effect.value is not None
        storage[effect.key] = effect.value
    restarted = RaftReplica(configs[n1], storage)
    restarted.start(20)
    assert (restarted.term, restarted.voted_for) == (5, n0)
    (reply,) = [
        e.message for e in restarted.handle(Receive(n2, request), 30) if isinstance(e, Send)
    ]
    assert reply == VoteResponse(View(5), False, pre_vote=False)


def test_restore_drops_a_log_tail_that_a_crash_left_unlinked() -> None:
    config = make_configs(3)[NodeId("n1")]
    state = stored(2, [1, 2, 2])
    state[log_key(3)] = encode_entry(build_log([1, 1, 1])[2])  # an overwrite the crash interrupted
    replica = RaftReplica(config, state)
    effects = replica.start(0)
    assert replica.log.last_index == 2
    assert Persist(1, log_key(3), None) in effects


# --------------------------------------------------------------------------
# Snapshots: InstallSnapshot and catch-up through state transfer
# --------------------------------------------------------------------------


def test_a_far_behind_follower_catches_up_through_install_snapshot() -> None:
    cluster = Cluster.of(3, max_batch_size=1, checkpoint_interval=2)
    leader = cluster.leader()
    late = next(n for n in cluster.configs if n != leader)
    cluster.crash(late)
    cluster.submit(leader, (tx(i) for i in range(20)))
    cluster.run_until(lambda: len(cluster.committed_txs(leader)) == 20)
    assert cluster.replicas[leader].log.snapshot_index > 2  # the leader compacted its log
    cluster.sent.clear()
    cluster.boot(late)
    cluster.run_until(lambda: len(cluster.committed_txs(late)) == 20)
    assert any(isinstance(m, InstallSnapshot) and to == late for _, to, m in cluster.sent)
    assert late in cluster.transfers
    assert [b.block_hash for b, _ in cluster.delivered[late]] == [
        b.block_hash for b, _ in cluster.delivered[leader]
    ]
    cluster.submit(leader, [tx(99)])
    cluster.run_until(lambda: cluster.committed_txs(late)[-1:] == [b"tx-99"])


def test_an_observer_receives_every_committed_block_but_never_votes() -> None:
    cluster = Cluster.of(3, observers=1)
    observer = NodeId("o0")
    leader = cluster.leader()
    cluster.submit(observer, (tx(i) for i in range(5)))  # forwarded to the leader
    cluster.run_until(lambda: len(cluster.committed_txs(observer)) == 5)
    assert cluster.replicas[observer].role is Role.OBSERVER
    cluster.crash(leader)
    cluster.run_until(lambda: len(cluster.leaders()) == 1)
    assert cluster.leaders()[0] != observer
    for _, block_cert in enumerate(cluster.delivered[observer]):
        assert observer not in block_cert[1].signers


# --------------------------------------------------------------------------
# Handler contract: stale or malformed input changes nothing
# --------------------------------------------------------------------------


def settled_cluster() -> tuple[Cluster, NodeId, NodeId]:
    cluster = Cluster.of(3)
    leader = cluster.leader()
    cluster.submit(leader, (tx(i) for i in range(8)))
    cluster.run_until(lambda: all(len(cluster.committed_txs(n)) == 8 for n in cluster.configs))
    follower = next(n for n in cluster.configs if n != leader)
    return cluster, leader, follower


def forged_block(cluster: Cluster, leader: NodeId, **header_changes: object) -> Block:
    replica = cluster.replicas[leader]
    last = replica.log.last_index
    fields: dict[str, object] = {
        "domain": DOMAIN,
        "height": Height(last + 1),
        "epoch": Epoch(0),
        "view": replica.term,
        "prev_hash": replica.log.hash_at(last),
        "transactions": (tx(500),),
        "timestamp_ms": cluster.now,
        "proposer": leader,
    }
    fields.update(header_changes)
    return make_block(**fields)  # type: ignore[arg-type]


def bad_inputs(
    cluster: Cluster, leader: NodeId, follower: NodeId
) -> dict[str, tuple[NodeId, Event]]:
    replica = cluster.replicas[leader]
    term, last = replica.term, replica.log.last_index
    last_term = replica.log.term_at(last)
    assert last_term is not None
    good = forged_block(cluster, leader)
    _, cert = cluster.delivered[leader][-1]
    statement = append_statement(DOMAIN, term, Height(last + 1), good.block_hash)
    bad_cert = QuorumCertificate(statement, tuple((s, b"\x00" * 64) for s, _ in cert.signatures))
    tampered = Block(good.header, (tx(501),))  # tx root no longer matches

    def append(
        *entries: Block, certs: tuple[QuorumCertificate, ...] = (), t: int = term
    ) -> AppendEntries:
        return AppendEntries(
            View(t), Height(last), last_term, entries, replica.committed_height, certs
        )

    committed_conflict = build_log([1, 1, 1, 1])[1]
    cases = [
        ("unknown sender", follower, Receive(NodeId("mallory"), append(good))),
        ("not a message", follower, Receive(leader, b"\x00garbage")),
        (
            "wrong domain",
            follower,
            Receive(leader, append(forged_block(cluster, leader, domain=DomainId("x")))),
        ),
        (
            "wrong epoch",
            follower,
            Receive(leader, append(forged_block(cluster, leader, epoch=Epoch(3)))),
        ),
        (
            "proposer not a member",
            follower,
            Receive(leader, append(forged_block(cluster, leader, proposer=NodeId("zz")))),
        ),
        ("tx root mismatch", follower, Receive(leader, append(tampered))),
        ("badly signed certificate", follower, Receive(leader, append(good, certs=(bad_cert,)))),
        (
            "conflicts with a committed entry",
            follower,
            Receive(
                leader,
                AppendEntries(View(term), Height(1), View(1), (committed_conflict,), Height(0)),
            ),
        ),
        (
            "ack beyond the leader's log",
            leader,
            Receive(
                follower,
                AppendResponse(View(term), True, Height(last + 5), Height(0), Height(last)),
            ),
        ),
        (
            "stale response",
            leader,
            Receive(
                follower, AppendResponse(View(term - 1), True, Height(1), Height(0), Height(1))
            ),
        ),
        ("state transfer with a bad certificate", follower, BlocksFetched(((good, bad_cert),))),
        (
            "vote from a stranger",
            leader,
            Receive(NodeId("mallory"), VoteResponse(View(term), True, pre_vote=False)),
        ),
        ("unknown timer", follower, TimerFired(TimerId("nope"))),
    ]
    return {name: (target, event) for name, target, event in cases}


BAD_INPUTS = [
    "unknown sender",
    "not a message",
    "wrong domain",
    "wrong epoch",
    "proposer not a member",
    "tx root mismatch",
    "badly signed certificate",
    "conflicts with a committed entry",
    "ack beyond the leader's log",
    "stale response",
    "state transfer with a bad certificate",
    "vote from a stranger",
    "unknown timer",
]


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_invalid_input_is_ignored_without_any_state_change(name: str) -> None:
    cluster, leader, follower = settled_cluster()
    cases = bad_inputs(cluster, leader, follower)
    assert sorted(cases) == sorted(BAD_INPUTS)
    target, event = cases[name]
    replica = cluster.replicas[target]
    before, stats = replica.state_fingerprint(), sum(replica.stats.values())
    effects = replica.handle(event, cluster.now)
    assert replica.state_fingerprint() == before, name
    assert not effects, name
    assert sum(replica.stats.values()) == stats + 1, name


def test_append_entries_from_an_older_term_is_refused_with_our_term() -> None:
    cluster, leader, follower = settled_cluster()
    replica = cluster.replicas[follower]
    before = replica.state_fingerprint()
    stale = AppendEntries(View(replica.term - 1), Height(0), View(0), (), Height(0))
    effects = replica.handle(Receive(leader, stale), cluster.now)
    assert replica.state_fingerprint() == before
    assert effects == [
        Send(
            leader,
            AppendResponse(replica.term, False, Height(0), Height(0), replica.committed_height),
        )
    ]


def test_a_forged_acknowledgement_signature_is_ignored_and_never_certifies() -> None:
    cluster, leader, follower = settled_cluster()
    cluster.drop = lambda _s, _t, m: not isinstance(m, AppendResponse)  # acks get lost
    cluster.submit(leader, [tx(77)])
    cluster.run_for(5)
    replica = cluster.replicas[leader]
    height = replica.log.last_index
    assert replica.committed_height == height - 1
    forged = AppendResponse(
        replica.term, True, height, Height(0), Height(height - 1), ((height, b"\x01" * 64),)
    )
    before, stats = replica.state_fingerprint(), replica.stats.get("invalid-ack-signature", 0)
    assert replica.handle(Receive(follower, forged), cluster.now) == []
    assert replica.state_fingerprint() == before
    assert replica.stats["invalid-ack-signature"] == stats + 1
    cluster.drop = None
    cluster.run_until(lambda: all(len(cluster.committed_txs(n)) == 9 for n in cluster.configs))


def test_a_new_leader_fetches_certificates_its_followers_can_no_longer_sign() -> None:
    cluster = Cluster.of(3, max_batch_size=1)
    a = cluster.leader()
    b, c = (n for n in cluster.configs if n != a)
    cluster.submit(a, (tx(i) for i in range(4)))
    last = 5  # the term's first block and one block per transaction
    cluster.run_until(lambda: cluster.replicas[c].log.last_index == last)
    cluster.crash(c)  # c stored every entry but has not seen every certificate
    cluster.run_until(lambda: cluster.replicas[b].committed_height == last)
    cluster.crash(a)
    cluster.queue.clear()  # and a's last messages (with the certificates c lacks) are lost
    cluster.boot(b)  # b's restart compacts its log to what it committed: it cannot re-sign it
    cluster.boot(c)
    assert cluster.replicas[c].committed_height < cluster.replicas[b].log.snapshot_index == last
    cluster.fire(c, ELECTION_TIMER)
    cluster.run_until(lambda: cluster.replicas[c].role is Role.LEADER)
    cluster.submit(c, [tx(50)])
    cluster.run_until(lambda: cluster.committed_txs(c)[-1:] == [b"tx-50"])
    cluster.run_until(lambda: cluster.committed_txs(b)[-1:] == [b"tx-50"])
    assert cluster.transfers == [c]  # ... and fetched what it could not certify itself
    assert cluster.replicas[c].stats.get("fetched-blocks-unusable", 0) == 0
