"""A tiny deterministic router for driving Raft replicas in tests.

:class:`Cluster` delivers messages after a fixed latency in (time, sequence)
order, runs timers on a virtual clock, stores ``Persist`` effects per node,
answers ``RequestStateTransfer`` from another node's delivered chain, and
checks on every ``Deliver`` that heights are consecutive, hash-linked,
certified (:func:`verify_raft_certificate`) and equal across nodes. Links can
be cut, messages filtered, nodes crashed and rebooted from their storage.
No wall clock, no randomness. Also: helpers that build logs with given terms
(figures 7 and 8 of the Raft paper) as persisted state.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hosting import HostExecution

from belep.consensus.raft import (
    RaftReplica,
    Role,
)
from belep.consensus.raft_cert import verify_raft_certificate
from belep.consensus.raft_log import HARD_KEY, encode_entry, encode_hard_state, log_key
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
from belep.ledger.execution import genesis_state_root

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
    #: Nodes that asked for state transfer, in order.
    transfers: list[NodeId] = field(default_factory=list)
    #: Each node's execution of its delivered chain (``Executed`` goes back at once).
    execution: dict[NodeId, HostExecution] = field(default_factory=dict)

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
        for node, config in cluster.configs.items():
            cluster.storage[node] = dict((persisted or {}).get(node, {}))
            cluster.delivered[node] = []
            cluster.execution[node] = HostExecution(
                config.genesis_hash, term_start_root_unknown=True
            )
            cluster.boot(node)
        return cluster

    # -- lifecycle -------------------------------------------------------
    def boot(self, node: NodeId) -> None:
        replica = RaftReplica(self.configs[node], dict(self.storage[node]))
        self.replicas[node] = replica
        self.down.discard(node)
        self.apply(node, replica.start(self.now))
        executed = self.execution[node].executed(replica.committed_height)
        if executed is not None:
            self.push(node, executed, 0)

    def crash(self, node: NodeId) -> None:
        """Stop ``node``: its timers and the messages in flight to it are lost."""
        self.down.add(node)
        self.queue = [item for item in self.queue if item[2] != node]
        heapq.heapify(self.queue)
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
        self.push(node, self.execution[node].execute(block), 0)

    def serve_transfer(self, node: NodeId, request: RequestStateTransfer) -> None:
        self.transfers.append(node)
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


def build_log(terms: list[int]) -> list[Block]:
    """Blocks with the given terms, each carrying the state root of the log below it;
    equal term prefixes give identical blocks (Log Matching)."""
    blocks: list[Block] = []
    prev = ZERO_HASH
    execution = HostExecution(ZERO_HASH)
    root = genesis_state_root(ZERO_HASH)
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
            state_root=root,
        )
        blocks.append(block)
        prev = block.block_hash
        root = execution.execute(block).state_root
    return blocks


def stored(term: int, terms: list[int], vote: str | None = None) -> dict[str, bytes]:
    state = {HARD_KEY: encode_hard_state(View(term), None if vote is None else NodeId(vote))}
    for block in build_log(terms):
        state[log_key(block.height)] = encode_entry(block)
    return state


def log_hashes(replica: RaftReplica) -> list[bytes]:
    log = replica.log
    return [b.block_hash for b in log.entries_between(1, log.last_index)]


def follower_with_log(terms: list[int], **overrides: object) -> RaftReplica:
    config = make_configs(3, **overrides)[NodeId("n1")]
    replica = RaftReplica(config, stored(max(terms), terms))
    replica.start(0)
    return replica
