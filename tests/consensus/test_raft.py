"""Raft replicas driven by a tiny deterministic in-test router.

The router delivers messages after a fixed latency in (time, sequence)
order, runs timers on a virtual clock, stores ``Persist`` effects per node,
answers ``RequestStateTransfer`` from another node's delivered chain, and
checks on every ``Deliver`` that heights are consecutive, hash-linked and
certified (:func:`verify_raft_certificate`). No wall clock, no randomness.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from belep.consensus.raft import (
    ELECTION_TIMER,
    PLANTED_TRUNCATE_WITHOUT_CONFLICT,
    RaftReplica,
    Role,
)
from belep.consensus.raft_cert import append_statement, verify_raft_certificate
from belep.consensus.raft_log import HARD_KEY, encode_entry, encode_hard_state, log_key
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
    Broadcast,
    CancelTimer,
    ClientRequest,
    Deliver,
    DomainId,
    Effect,
    Event,
    NodeId,
    Persist,
    QuorumCertificate,
    Receive,
    ReplicaConfig,
    RequestStateTransfer,
    Send,
    SetTimer,
    TimerFired,
    TimerId,
    Transaction,
)
from belep.crypto import PrivateKey
from belep.ledger.block import ZERO_HASH, Epoch, Height, View, make_block

DOMAIN = DomainId("station-1")


def make_configs(n: int, *, observers: int = 0, **overrides: object) -> dict[NodeId, ReplicaConfig]:
    members = tuple(NodeId(f"n{i}") for i in range(n))
    watchers = tuple(NodeId(f"o{i}") for i in range(observers))
    keys = {
        node: PrivateKey.from_seed(bytes([i + 1]) * 32) for i, node in enumerate(members + watchers)
    }
    public = {node: key.public_key for node, key in keys.items()}
    settings: dict[str, object] = {"max_batch_size": 4, "max_batch_wait_ms": 2, "window": 4}
    settings.update(overrides)
    return {
        node: ReplicaConfig(
            node_id=node,
            domain=DOMAIN,
            members=members,
            observers=watchers,
            keys=public,
            private_key=keys[node],
            **settings,  # type: ignore[arg-type]
        )
        for node in members + watchers
    }


def tx(i: int) -> Transaction:
    return Transaction(f"tx-{i}".encode())


@dataclass
class Cluster:
    """A deterministic network of Raft replicas (latency 1 ms, no loss unless links are cut)."""

    configs: dict[NodeId, ReplicaConfig]
    latency_ms: int = 1
    now: int = 0
    replicas: dict[NodeId, RaftReplica] = field(default_factory=dict)
    storage: dict[NodeId, dict[str, bytes]] = field(default_factory=dict)
    delivered: dict[NodeId, list[tuple[Block, QuorumCertificate]]] = field(default_factory=dict)
    down: set[NodeId] = field(default_factory=set)
    cut: set[tuple[NodeId, NodeId]] = field(default_factory=set)
    #: Optional filter: return False to drop a message (sender, receiver, message).
    drop: Callable[[NodeId, NodeId, object], bool] | None = None
    queue: list[tuple[int, int, NodeId, Event]] = field(default_factory=list)
    timers: dict[tuple[NodeId, TimerId], int] = field(default_factory=dict)
    seq: int = 0
    sent: list[tuple[NodeId, NodeId, object]] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        n: int,
        *,
        observers: int = 0,
        persisted: dict[NodeId, dict[str, bytes]] | None = None,
        **overrides: object,
    ) -> Cluster:
        cluster = cls(make_configs(n, observers=observers, **overrides))
        for node in cluster.configs:
            cluster.storage[node] = dict((persisted or {}).get(node, {}))
            cluster.delivered[node] = []
            cluster.boot(node)
        return cluster

    # -- lifecycle -------------------------------------------------------
    def boot(self, node: NodeId) -> None:
        replica = RaftReplica(self.configs[node], dict(self.storage[node]))
        self.replicas[node] = replica
        self.down.discard(node)
        self.apply(node, replica.start(self.now))

    def crash(self, node: NodeId) -> None:
        self.down.add(node)
        for key in [k for k in self.timers if k[0] == node]:
            del self.timers[key]

    def isolate(self, node: NodeId) -> None:
        for other in self.configs:
            if other != node:
                self.cut |= {(node, other), (other, node)}

    def partition(self, *groups: Iterable[NodeId]) -> None:
        sets = [set(g) for g in groups]
        for a in self.configs:
            for b in self.configs:
                if not any(a in s and b in s for s in sets):
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()

    # -- effects -----------------------------------------------------------
    def push(self, node: NodeId, event: Event, delay: int) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (self.now + delay, self.seq, node, event))

    def send(self, sender: NodeId, to: NodeId, message: object) -> None:
        self.sent.append((sender, to, message))
        if (sender, to) in self.cut or (
            self.drop is not None and not self.drop(sender, to, message)
        ):
            return
        self.push(to, Receive(sender, message), self.latency_ms)

    def apply(self, node: NodeId, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self.send(node, effect.to, effect.message)
            elif isinstance(effect, Broadcast):
                assert node not in effect.to
                for to in effect.to:
                    self.send(node, to, effect.message)
            elif isinstance(effect, SetTimer):
                self.timers[(node, effect.timer)] = self.now + effect.delay_ms
            elif isinstance(effect, CancelTimer):
                self.timers.pop((node, effect.timer), None)
            elif isinstance(effect, Persist):
                if effect.value is None:
                    self.storage[node].pop(effect.key, None)
                else:
                    self.storage[node][effect.key] = effect.value
            elif isinstance(effect, Deliver):
                self.check_delivery(node, effect.block, effect.certificate)
            elif isinstance(effect, RequestStateTransfer):
                self.serve_transfer(node, effect)

    def check_delivery(self, node: NodeId, block: Block, cert: QuorumCertificate) -> None:
        chain = self.delivered[node]
        prev_hash = chain[-1][0].block_hash if chain else self.configs[node].genesis_hash
        assert block.height == len(chain) + 1, (node, block.height, len(chain))
        assert block.header.prev_hash == prev_hash
        verify_raft_certificate(block, cert, self.configs[node].voter_keys())
        for other, blocks in self.delivered.items():
            if len(blocks) >= block.height:
                assert blocks[block.height - 1][0].block_hash == block.block_hash, (node, other)
        chain.append((block, cert))

    def serve_transfer(self, node: NodeId, request: RequestStateTransfer) -> None:
        for peer in request.peers:
            if peer in self.down or (peer, node) in self.cut:
                continue
            blocks = tuple(self.delivered[peer][request.from_height - 1 :])
            if blocks:
                self.push(node, BlocksFetched(blocks), self.latency_ms)
                return

    # -- running -------------------------------------------------------------
    def handle(self, node: NodeId, event: Event) -> None:
        if node in self.down:
            return
        self.apply(node, self.replicas[node].handle(event, self.now))

    def step(self) -> bool:
        next_timer = min(self.timers.items(), key=lambda kv: (kv[1], kv[0]), default=None)
        next_msg = self.queue[0] if self.queue else None
        if next_timer is None and next_msg is None:
            return False
        if next_msg is not None and (next_timer is None or next_msg[0] <= next_timer[1]):
            at, _, node, event = heapq.heappop(self.queue)
            self.now = max(self.now, at)
            self.handle(node, event)
        else:
            assert next_timer is not None
            (node, timer), at = next_timer
            del self.timers[(node, timer)]
            self.now = max(self.now, at)
            self.handle(node, TimerFired(timer))
        return True

    def run_for(self, ms: int) -> None:
        end = self.now + ms
        while True:
            due = list(self.timers.values()) + ([self.queue[0][0]] if self.queue else [])
            if not due or min(due) > end:
                break
            self.step()
        self.now = end

    def run_until(self, predicate: Callable[[], bool], limit_ms: int = 20_000) -> None:
        end = self.now + limit_ms
        while not predicate():
            assert self.step(), "nothing left to run"
            assert self.now <= end, "condition not reached in time"

    def fire(self, node: NodeId, timer: TimerId) -> None:
        self.timers.pop((node, timer), None)
        self.handle(node, TimerFired(timer))

    def submit(self, node: NodeId, transactions: Iterable[Transaction]) -> None:
        for item in transactions:
            self.handle(node, ClientRequest(item))

    # -- queries -------------------------------------------------------------
    def leaders(self) -> list[NodeId]:
        return [n for n, r in self.replicas.items() if n not in self.down and r.role is Role.LEADER]

    def leader(self) -> NodeId:
        self.run_until(lambda: len(self.leaders()) == 1)
        return self.leaders()[0]

    def committed_txs(self, node: NodeId) -> list[bytes]:
        return [t.payload for block, _ in self.delivered[node] for t in block.transactions]

    def heights(self) -> dict[NodeId, int]:
        return {n: len(chain) for n, chain in self.delivered.items()}


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


def test_leader_pipelines_up_to_window_blocks_before_any_ack() -> None:
    cluster = Cluster.of(3, window=3, max_batch_size=1)
    leader = cluster.leader()
    cluster.run_until(lambda: cluster.replicas[leader].committed_height >= 1)
    follower = next(n for n in cluster.configs if n != leader)
    cluster.sent.clear()
    cluster.submit(leader, (tx(i) for i in range(10)))  # handled at one instant: no ack yet
    heights = [
        b.height
        for s, to, m in cluster.sent
        if s == leader and to == follower and isinstance(m, AppendEntries)
        for b in m.entries
    ]
    assert heights == [2, 3, 4]  # three blocks in flight, the window
    cluster.run_until(lambda: len(cluster.committed_txs(follower)) == 10)


# --------------------------------------------------------------------------
# Log repair: the §5.3 rule, figure 7, figure 8
# --------------------------------------------------------------------------


def build_log(terms: list[int]) -> list[Block]:
    """Blocks with the given terms; equal term prefixes give identical blocks (Log Matching)."""
    blocks: list[Block] = []
    prev = ZERO_HASH
    for height, term in enumerate(terms, start=1):
        block = make_block(
            domain=DOMAIN,
            height=Height(height),
            epoch=Epoch(0),
            view=View(term),
            prev_hash=prev,
            transactions=(Transaction(f"fig-{terms[:height]}".encode()),),
            timestamp_ms=height,
            proposer=NodeId("n0"),
        )
        blocks.append(block)
        prev = block.block_hash
    return blocks


def stored(term: int, terms: list[int], vote: str | None = None) -> dict[str, bytes]:
    state = {HARD_KEY: encode_hard_state(View(term), None if vote is None else NodeId(vote))}
    for block in build_log(terms):
        state[log_key(block.height)] = encode_entry(block)
    return state


def log_hashes(replica: RaftReplica) -> list[bytes]:
    log = replica.log
    return [b.block_hash for b in log.entries_between(1, log.last_index)]


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


def follower_with_log(terms: list[int], **overrides: object) -> RaftReplica:
    config = make_configs(3, **overrides)[NodeId("n1")]
    replica = RaftReplica(config, stored(max(terms), terms))
    replica.start(0)
    return replica


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
