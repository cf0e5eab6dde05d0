"""Raft clusters on the in-test router: election, replication, log repair, pre-vote, check-quorum.

Scenarios follow the paper: figure 7 (divergent followers), figure 8 (committing only
current-term entries), §5.3 (delete only from the first conflict), thesis §9.6 and §6.2.
"""

from __future__ import annotations

from raft_cluster import Cluster, build_log, follower_with_log, log_hashes, make_configs, stored, tx

from belep.consensus.raft import (
    ELECTION_TIMER,
    PLANTED_TRUNCATE_WITHOUT_CONFLICT,
    RaftReplica,
    Role,
)
from belep.consensus.raft_log import log_key
from belep.consensus.raft_messages import (
    AppendEntries,
    AppendResponse,
)
from belep.consensus.types import (
    NodeId,
    Persist,
    Receive,
    Send,
    SetTimer,
    TimerFired,
)
from belep.ledger.block import Height, View


def test_three_replicas_elect_one_leader_and_commit_the_same_blocks() -> None:
    cluster = Cluster.of(3)
    leader = cluster.leader()
    cluster.submit(leader, (tx(i) for i in range(10)))
    cluster.run_until(lambda: all(len(cluster.committed_txs(n)) == 10 for n in cluster.configs))
    for node in cluster.configs:
        assert cluster.committed_txs(node) == [f"tx-{i}".encode() for i in range(10)]
    assert len(cluster.leaders()) == 1


def test_single_member_commits_alone() -> None:
    cluster = Cluster.of(1)
    leader = cluster.leader()
    cluster.submit(leader, (tx(i) for i in range(9)))
    cluster.run_until(lambda: len(cluster.committed_txs(leader)) == 9)
    # The term's first block (thesis §6.4) plus batches of at most max_batch_size.
    assert all(len(b.transactions) <= 4 for b, _ in cluster.delivered[leader])


def test_follower_forwards_client_requests_to_the_leader() -> None:
    cluster = Cluster.of(3)
    leader = cluster.leader()
    follower = next(n for n in cluster.configs if n != leader)
    cluster.submit(follower, (tx(i) for i in range(6)))
    cluster.run_until(lambda: all(len(cluster.committed_txs(n)) == 6 for n in cluster.configs))
    assert sorted(cluster.committed_txs(leader)) == sorted(f"tx-{i}".encode() for i in range(6))
    # A duplicate of a committed-but-still-in-memory transaction is not proposed again.
    cluster.submit(leader, [tx(0)])
    cluster.run_for(50)
    assert cluster.committed_txs(leader).count(b"tx-0") == 1


def test_reelection_after_leader_crash_and_catch_up_on_restart() -> None:
    cluster = Cluster.of(5)
    first = cluster.leader()
    cluster.submit(first, (tx(i) for i in range(8)))
    cluster.run_until(lambda: len(cluster.committed_txs(first)) == 8)
    term = cluster.replicas[first].term
    cluster.crash(first)
    second = cluster.leader()
    assert second != first
    assert cluster.replicas[second].term > term
    cluster.submit(second, (tx(i) for i in range(8, 16)))
    survivors = [n for n in cluster.configs if n != first]
    cluster.run_until(lambda: all(len(cluster.committed_txs(n)) == 16 for n in survivors))
    cluster.boot(first)
    cluster.run_until(lambda: len(cluster.committed_txs(first)) == 16)
    assert cluster.leaders() == [second]


def test_majority_down_commits_nothing_and_never_forks() -> None:
    cluster = Cluster.of(3)
    leader = cluster.leader()
    cluster.submit(leader, (tx(i) for i in range(4)))
    cluster.run_until(lambda: all(len(cluster.committed_txs(n)) == 4 for n in cluster.configs))
    before = cluster.heights()
    others = [n for n in cluster.configs if n != leader]
    cluster.crash(others[0])
    cluster.crash(others[1])
    cluster.submit(leader, (tx(i) for i in range(4, 8)))
    cluster.run_for(10_000)
    assert cluster.heights() == before
    # Check-quorum: the isolated leader stepped down rather than lingering.
    assert cluster.replicas[leader].role is not Role.LEADER


def test_election_timeouts_are_deterministic_and_within_one_to_two_timeouts() -> None:
    configs = make_configs(3)
    node = NodeId("n0")
    delays = []
    for _ in range(2):
        replica = RaftReplica(configs[node], {})
        effects = replica.start(0)
        for _ in range(5):
            effects += replica.handle(TimerFired(ELECTION_TIMER), 0)
        delays.append(
            [e.delay_ms for e in effects if isinstance(e, SetTimer) and e.timer == ELECTION_TIMER]
        )
    assert delays[0] == delays[1]
    base = configs[node].request_timeout_ms
    assert all(base <= d < 2 * base for d in delays[0])
    assert len(set(delays[0])) > 1


def test_leader_proposes_the_next_block_only_once_the_one_below_is_executed() -> None:
    cluster = Cluster.of(3, window=3, max_batch_size=1)
    leader = cluster.leader()
    cluster.run_until(lambda: cluster.replicas[leader].committed_height >= 1)
    cluster.run_for(0)  # the host's Executed for that block
    follower = next(n for n in cluster.configs if n != leader)
    cluster.sent.clear()
    cluster.submit(leader, (tx(i) for i in range(10)))  # handled at one instant: no ack yet
    heights = [
        b.height
        for s, to, m in cluster.sent
        if s == leader and to == follower and isinstance(m, AppendEntries)
        for b in m.entries
    ]
    # One block in flight: the next one needs the state root after it (ledger/execution.py).
    assert heights == [2]
    cluster.run_until(lambda: len(cluster.committed_txs(follower)) == 10)
    executed = cluster.execution[follower]
    for block, _ in cluster.delivered[follower][1:]:
        below = executed.executed(block.height - 1)
        assert below is not None
        assert block.header.state_root == below.state_root


# --------------------------------------------------------------------------
# Log repair: the §5.3 rule, figure 7, figure 8
# --------------------------------------------------------------------------


FIGURE_7 = {
    "leader": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6],
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def test_figure_7_divergent_followers_converge_on_the_leaders_log() -> None:
    nodes = [NodeId(f"n{i}") for i in range(7)]
    persisted = {
        node: stored(7, terms) for node, terms in zip(nodes, FIGURE_7.values(), strict=True)
    }
    cluster = Cluster.of(7, persisted=persisted)
    leader = nodes[0]
    cluster.fire(leader, ELECTION_TIMER)  # the figure's leader times out first
    cluster.run_until(lambda: cluster.replicas[leader].role is Role.LEADER)
    assert cluster.replicas[leader].term == 8
    cluster.run_until(lambda: all(len(cluster.delivered[n]) == 11 for n in nodes))
    expected = log_hashes(cluster.replicas[leader])
    assert expected[:10] == [b.block_hash for b in build_log(FIGURE_7["leader"])]
    for node in nodes:
        assert log_hashes(cluster.replicas[node])[: len(expected)] == expected
        assert [b.block_hash for b, _ in cluster.delivered[node]] == expected
    assert cluster.leaders() == [leader]


def test_a_stale_append_whose_entries_all_match_truncates_nothing() -> None:
    log = build_log([1, 2, 2, 2, 2])
    replica = follower_with_log([1, 2, 2, 2, 2])
    stale = AppendEntries(View(2), Height(2), View(2), (log[2],), Height(0))
    effects = replica.handle(Receive(NodeId("n0"), stale), 5)
    assert replica.log.last_index == 5
    assert not [e for e in effects if isinstance(e, Persist) and e.key.startswith("raft/log/")]
    (reply,) = [e.message for e in effects if isinstance(e, Send)]
    assert isinstance(reply, AppendResponse)
    assert reply.success
    assert reply.match_index == 3


def test_the_planted_bug_switch_really_truncates_without_conflict() -> None:
    log = build_log([1, 2, 2, 2, 2])
    buggy = follower_with_log(
        [1, 2, 2, 2, 2], planted_bugs=frozenset({PLANTED_TRUNCATE_WITHOUT_CONFLICT})
    )
    stale = AppendEntries(View(2), Height(2), View(2), (log[2],), Height(0))
    buggy.handle(Receive(NodeId("n0"), stale), 5)
    assert buggy.log.last_index == 3


def test_a_conflict_deletes_from_the_first_conflicting_entry_only() -> None:
    replica = follower_with_log([1, 2, 2, 2])
    new = build_log([1, 2, 3])
    message = AppendEntries(View(3), Height(1), View(1), tuple(new[1:]), Height(0))
    effects = replica.handle(Receive(NodeId("n0"), message), 5)
    assert log_hashes(replica) == [b.block_hash for b in new]
    deleted = [e.key for e in effects if isinstance(e, Persist) and e.value is None]
    assert deleted == [log_key(4)]  # heights 2 and 3 were overwritten, 4 deleted


def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed() -> None:
    nodes = [NodeId(f"n{i}") for i in range(5)]
    logs = [[1, 2], [1, 2], [1], [1], [1, 3]]
    cluster = Cluster.of(5, persisted={n: stored(3, t) for n, t in zip(nodes, logs, strict=True)})
    s1, s2, s3, _, s5 = nodes
    # (c): S1 leads term 4 but only the term-2 entry reaches S3; its own term-4 entry reaches nobody.
    cluster.drop = lambda sender, _to, m: not (sender == s1 and isinstance(m, AppendEntries))
    cluster.fire(s1, ELECTION_TIMER)
    cluster.run_until(lambda: cluster.replicas[s1].role is Role.LEADER)
    assert cluster.replicas[s1].term == 4
    entry_2 = build_log([1, 2])[1]
    cluster.handle(
        s3, Receive(s1, AppendEntries(View(4), Height(1), View(1), (entry_2,), Height(0)))
    )
    cluster.handle(s2, Receive(s1, AppendEntries(View(4), Height(2), View(2), (), Height(0))))
    cluster.run_for(20)
    assert cluster.replicas[s3].log.hash_at(2) == entry_2.block_hash  # on a majority: S1, S2, S3
    acks = [
        m
        for f, to, m in cluster.sent
        if f in (s2, s3) and to == s1 and isinstance(m, AppendResponse)
    ]
    assert [(a.success, a.match_index, a.signatures) for a in acks] == [(True, 2, ())] * 2
    assert cluster.replicas[s1].committed_height == 0  # ... and still not committed
    # (d): S1 crashes, S5 wins term 5 and overwrites index 2 everywhere. Nothing forks.
    cluster.crash(s1)
    cluster.drop = None
    cluster.fire(s5, ELECTION_TIMER)
    cluster.run_until(lambda: cluster.replicas[s5].role is Role.LEADER)
    cluster.run_until(lambda: all(len(cluster.delivered[n]) == 3 for n in nodes[1:]))
    assert cluster.delivered[s2][1][0].block_hash == build_log([1, 3])[1].block_hash
    cluster.boot(s1)
    cluster.run_until(lambda: len(cluster.delivered[s1]) == 3)


def test_figure_8_once_the_current_term_entry_is_on_a_majority_both_commit() -> None:
    nodes = [NodeId(f"n{i}") for i in range(5)]
    logs = [[1, 2], [1, 2], [1], [1], [1, 3]]
    cluster = Cluster.of(5, persisted={n: stored(3, t) for n, t in zip(nodes, logs, strict=True)})
    s1, s5 = nodes[0], nodes[4]
    cluster.fire(s1, ELECTION_TIMER)
    cluster.run_until(lambda: cluster.replicas[s1].committed_height == 3)
    assert cluster.delivered[s1][1][0].block_hash == build_log([1, 2])[1].block_hash
    # (e): S5 can no longer win: its log is behind every replica holding the term-4 entry.
    cluster.crash(s1)
    cluster.fire(s5, ELECTION_TIMER)
    new_leader = cluster.leader()
    assert new_leader != s5
    cluster.run_until(lambda: all(len(cluster.delivered[n]) >= 4 for n in nodes[1:]))


def test_partitioned_leaders_uncommitted_entries_are_replaced_after_healing() -> None:
    cluster = Cluster.of(5)
    old = cluster.leader()
    cluster.submit(old, (tx(i) for i in range(4)))
    cluster.run_until(lambda: all(len(cluster.committed_txs(n)) == 4 for n in cluster.configs))
    nodes = list(cluster.configs)
    minority = [old, next(n for n in nodes if n != old)]
    majority = [n for n in nodes if n not in minority]
    cluster.partition(minority, majority)
    cluster.submit(old, (tx(i) for i in range(100, 108)))  # replicated to one follower only
    cluster.run_for(30)
    assert cluster.replicas[minority[1]].log.last_index > len(cluster.delivered[old])
    cluster.run_until(lambda: any(cluster.replicas[n].role is Role.LEADER for n in majority))
    new = next(n for n in majority if cluster.replicas[n].role is Role.LEADER)
    cluster.submit(new, (tx(i) for i in range(4, 12)))
    cluster.run_until(lambda: all(len(cluster.committed_txs(n)) == 12 for n in majority))
    cluster.heal()
    cluster.run_until(lambda: all(len(cluster.committed_txs(n)) == 12 for n in nodes))
    for node in nodes:
        assert log_hashes(cluster.replicas[node]) == log_hashes(cluster.replicas[new])
        assert not {tx(i).payload for i in range(100, 108)} & set(cluster.committed_txs(node))


# --------------------------------------------------------------------------
# Pre-vote and check-quorum
# --------------------------------------------------------------------------


def test_pre_vote_keeps_a_partitioned_follower_from_disrupting_the_leader() -> None:
    cluster = Cluster.of(3)
    leader = cluster.leader()
    term = cluster.replicas[leader].term
    lonely, other = [n for n in cluster.configs if n != leader]
    cluster.isolate(lonely)
    cluster.run_for(20 * cluster.configs[lonely].request_timeout_ms)
    assert cluster.replicas[lonely].term == term  # pre-votes never won, so no term inflation
    cluster.heal()
    cluster.run_for(5 * cluster.configs[lonely].request_timeout_ms)
    assert cluster.leaders() == [leader]
    assert cluster.replicas[leader].term == term
    assert cluster.replicas[lonely].leader == leader
    # Cut only the leader's link to `lonely`: `other` still hears the leader, so it refuses
    # `lonely`'s pre-votes (leader stickiness) and the leader keeps its term.
    cluster.cut |= {(leader, lonely), (lonely, leader)}
    cluster.run_for(10 * cluster.configs[lonely].request_timeout_ms)
    assert cluster.replicas[lonely].term == term
    assert cluster.leaders() == [leader]
    assert cluster.replicas[other].term == term


def test_check_quorum_makes_an_isolated_leader_step_down_without_a_new_term() -> None:
    cluster = Cluster.of(3)
    leader = cluster.leader()
    term = cluster.replicas[leader].term
    cluster.isolate(leader)
    start = cluster.now
    timeout = cluster.configs[leader].request_timeout_ms
    cluster.run_until(lambda: cluster.replicas[leader].role is not Role.LEADER)
    assert cluster.now - start <= 2 * timeout
    assert cluster.replicas[leader].term == term
    cluster.run_until(lambda: len(cluster.leaders()) == 1)
    assert cluster.leaders()[0] != leader
