"""A tiny deterministic router that drives PBFT replicas in tests.

Messages travel through the real wire codec (``encode_message`` /
``decode_message``) with a fixed latency, in (time, sequence) order; timers
run on a virtual clock; ``Persist`` effects go to a per-node dict; state
transfer is served from another replica's delivered chain. Every ``Deliver``
is checked: consecutive heights, hash links, a commit certificate of a quorum
of members for exactly that block, and agreement with every other replica;
then the block is executed (its state root checked, ``hosting.HostExecution``)
and ``Executed`` is fed back at once, as a node's host does.
A filter can drop or rewrite messages per link. No wall clock, no randomness.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hosting import HostExecution

from belep.consensus.pbft import PbftReplica
from belep.consensus.registry import decode_message, encode_message
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
    Executed,
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
from belep.crypto import PrivateKey, sha256
from belep.ledger.block import Digest
from belep.sim.protocols import bft_rule

DOMAIN = DomainId("station-1")
GENESIS = Digest(sha256(b"genesis of station-1"))

#: filter(src, dst, message) -> message to deliver (possibly rewritten) or None to drop.
LinkFilter = Callable[[NodeId, NodeId, object], object | None]


def node_ids(n: int) -> tuple[NodeId, ...]:
    return tuple(NodeId(f"r{i}") for i in range(n))


def node_key(node: NodeId) -> PrivateKey:
    return PrivateKey.from_seed(sha256(b"pbft-test-key " + node.encode()))


def make_config(node: NodeId, n: int = 4, **overrides: Any) -> ReplicaConfig:
    members = node_ids(n)
    settings: dict[str, Any] = {
        "max_batch_size": 10,
        "max_batch_wait_ms": 5,
        "window": 4,
        "request_timeout_ms": 200,
        "heartbeat_ms": 20,
        "checkpoint_interval": 4,
    }
    settings.update(overrides)
    return ReplicaConfig(
        node_id=node,
        domain=DOMAIN,
        members=members,
        keys={m: node_key(m).public_key for m in members},
        private_key=node_key(node),
        genesis_hash=GENESIS,
        **settings,
    )


def tx(i: int, tag: bytes = b"") -> Transaction:
    return Transaction(b"tx-" + tag + str(i).encode())


@dataclass
class Cluster:
    """N replicas and the network between them."""

    n: int = 4
    latency: int = 1
    wire: bool = True
    config_overrides: dict[str, Any] = field(default_factory=dict)
    filter: LinkFilter | None = None
    now: int = 0
    replicas: dict[NodeId, PbftReplica | None] = field(default_factory=dict)
    stores: dict[NodeId, dict[str, bytes]] = field(default_factory=dict)
    chains: dict[NodeId, list[tuple[Block, QuorumCertificate]]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    sent: list[tuple[int, NodeId, NodeId, object]] = field(default_factory=list)
    effects: dict[NodeId, list[Effect]] = field(default_factory=dict)
    record: bool = False
    isolated: set[NodeId] = field(default_factory=set)  # partitioned away from everyone
    byzantine: set[NodeId] = field(default_factory=set)  # deliveries not checked
    transfer_ms: int = 2  # state transfer round trip

    def __post_init__(self) -> None:
        self.ids = node_ids(self.n)
        self._heap: list[tuple[int, int, str, NodeId, Any]] = []
        self._seq = 0
        self._timers: dict[NodeId, dict[TimerId, int]] = {}
        self._incarnation: dict[NodeId, int] = {}
        self.canonical: list[Block] = []
        self._configs: dict[NodeId, ReplicaConfig] = {}
        self._verified: set[QuorumCertificate] = set()  # each certificate checked once
        self.redeliver_ok: set[NodeId] = set()
        self.execution: dict[NodeId, HostExecution] = {}
        for node in self.ids:
            self.execution[node] = HostExecution(GENESIS)
            self.stores[node] = {}
            self.chains[node] = []
            self.effects[node] = []
            self._timers[node] = {}
            self._incarnation[node] = 0
            self.replicas[node] = None

    # -- lifecycle ------------------------------------------------------------------

    def config(self, node: NodeId) -> ReplicaConfig:
        found = self._configs.get(node)
        if found is None:
            found = self._configs[node] = make_config(node, self.n, **self.config_overrides)
        return found

    def start(self, nodes: Iterable[NodeId] | None = None) -> None:
        for node in self.ids if nodes is None else nodes:
            self._boot(node)

    def _boot(self, node: NodeId) -> None:
        self._incarnation[node] += 1
        self._timers[node] = {}
        replica = PbftReplica(self.config(node), dict(self.stores[node]))
        self.replicas[node] = replica
        self._execute(node, replica.start(self.now))
        self._report_executed(node, self.execution[node].executed(replica.committed_height))

    def crash(self, node: NodeId) -> None:
        self.replicas[node] = None
        self._timers[node] = {}

    def restart(self, node: NodeId, *, wipe: bool = False) -> None:
        if wipe:
            self.stores[node] = {}
            self.chains[node] = []
            self.execution[node].reset()
        self.redeliver_ok.add(node)
        self._boot(node)

    def replica(self, node: NodeId) -> PbftReplica:
        r = self.replicas[node]
        assert r is not None
        return r

    # -- inputs ---------------------------------------------------------------------

    def submit(self, node: NodeId, transaction: Transaction) -> None:
        self.step(node, ClientRequest(transaction))

    def step(self, node: NodeId, event: Event) -> list[Effect]:
        replica = self.replicas[node]
        if replica is None:
            return []
        effects = replica.handle(event, self.now)
        self._execute(node, effects)
        return effects

    def inject(self, src: NodeId, dst: NodeId, message: object, delay: int = 0) -> None:
        """Put a message on the wire as if ``src`` sent it (for adversarial tests)."""
        self._push(self.now + delay, "msg", dst, (src, message))

    # -- the loop -------------------------------------------------------------------

    def run(
        self,
        until: Callable[[], bool] | None = None,
        *,
        max_time: int = 60_000,
        max_events: int = 2_000_000,
    ) -> bool:
        """Process events until ``until()`` holds (True) or time/events run out (False)."""
        deadline = self.now + max_time
        for _ in range(max_events):
            if until is not None and until():
                return True
            if not self._heap or self._heap[0][0] > deadline:
                self.now = deadline
                return until() if until is not None else True
            at, _seq, kind, node, payload = heapq.heappop(self._heap)
            self.now = at
            self._dispatch(kind, node, payload)
        raise AssertionError("event budget exhausted")

    def run_for(self, ms: int) -> None:
        self.run(max_time=ms)

    def _push(self, at: int, kind: str, node: NodeId, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, node, payload))

    def _dispatch(self, kind: str, node: NodeId, payload: Any) -> None:
        replica = self.replicas.get(node)
        if replica is None:
            return
        if kind == "msg":
            src, message = payload
            self.step(node, Receive(src, message))
        elif kind == "timer":
            timer, generation, incarnation = payload
            if incarnation != self._incarnation[node]:
                return
            if self._timers[node].get(timer) != generation:
                return
            del self._timers[node][timer]
            self.step(node, TimerFired(timer))
        elif kind == "fetched":
            incarnation, request = payload
            if incarnation == self._incarnation[node]:
                self.step(node, BlocksFetched(self._fetched_blocks(node, request)))
        elif kind == "executed":
            incarnation, event = payload
            if incarnation == self._incarnation[node]:
                self.step(node, event)

    def _report_executed(self, node: NodeId, event: Executed | None) -> None:
        if event is not None:
            self._push(self.now, "executed", node, (self._incarnation[node], event))

    def _execute(self, node: NodeId, effects: list[Effect]) -> None:
        if self.record:
            self.effects[node].extend(effects)
        for effect in effects:
            if isinstance(effect, Send):
                self._send(node, effect.to, effect.message)
            elif isinstance(effect, Broadcast):
                assert node not in effect.to, "a broadcast never includes its sender"
                for dst in effect.to:
                    self._send(node, dst, effect.message)
            elif isinstance(effect, SetTimer):
                generation = self._timers[node].get(effect.timer, 0) + 1
                self._timers[node][effect.timer] = generation
                payload = (effect.timer, generation, self._incarnation[node])
                self._push(self.now + effect.delay_ms, "timer", node, payload)
            elif isinstance(effect, CancelTimer):
                self._timers[node].pop(effect.timer, None)
            elif isinstance(effect, Persist):
                if effect.value is None:
                    self.stores[node].pop(effect.key, None)
                else:
                    self.stores[node][effect.key] = effect.value
            elif isinstance(effect, Deliver):
                self._deliver(node, effect.block, effect.certificate)
            elif isinstance(effect, RequestStateTransfer):
                self._serve_transfer(node, effect)

    def _send(self, src: NodeId, dst: NodeId, message: object) -> None:
        if src in self.isolated or dst in self.isolated:
            return
        if self.wire:
            message = decode_message(encode_message(message))  # type: ignore[arg-type]
        if self.filter is not None:
            filtered = self.filter(src, dst, message)
            if filtered is None:
                return
            message = filtered
        self.sent.append((self.now, src, dst, message))
        self._push(self.now + self.latency, "msg", dst, (src, message))

    def _serve_transfer(self, node: NodeId, request: RequestStateTransfer) -> None:
        """Answer after ``transfer_ms`` with what the first reachable peer has *then*."""
        self._push(self.now + self.transfer_ms, "fetched", node, (self._incarnation[node], request))

    def _fetched_blocks(
        self, node: NodeId, request: RequestStateTransfer
    ) -> tuple[tuple[Block, QuorumCertificate], ...]:
        start = int(request.from_height)
        for peer in request.peers:
            chain = self.chains.get(peer, [])
            reachable = node not in self.isolated and peer not in self.isolated
            if reachable and self.replicas.get(peer) is not None and len(chain) >= start:
                return tuple(chain[start - 1 : start - 1 + 64])
        return ()

    # -- invariants -----------------------------------------------------------------

    def _deliver(self, node: NodeId, block: Block, qc: QuorumCertificate) -> None:
        chain = self.chains[node]
        h = block.height
        if node in self.byzantine:
            if h == len(chain) + 1:
                chain.append((block, qc))
                self._execute_block(node, block)
            return
        if h <= len(chain):
            if node in self.redeliver_ok and chain[h - 1][0].block_hash == block.block_hash:
                self._report_executed(node, self.execution[node].executed(h))
                return
            self.violations.append(f"{node} delivered height {h} twice")
            return
        if h != len(chain) + 1:
            self.violations.append(f"{node} gap: {h} after {len(chain)}")
            return
        prev = chain[-1][0].block_hash if chain else GENESIS
        if block.header.prev_hash != prev:
            self.violations.append(f"{node} link broken at {h}")
        s = qc.statement
        if (s.kind, s.height, s.block_hash, s.domain) != ("commit", h, block.block_hash, DOMAIN):
            self.violations.append(f"{node} certificate names another block at {h}")
        if qc not in self._verified:
            config = self.config(node)
            try:
                bft_rule(config, (), block, qc)
                block.check_tx_root()
                self._verified.add(qc)
            except Exception as exc:
                self.violations.append(f"{node} bad certificate at {h}: {exc}")
        if h <= len(self.canonical):
            if self.canonical[h - 1].block_hash != block.block_hash:
                self.violations.append(f"fork at height {h}: {node}")
        else:
            self.canonical.append(block)
        self.redeliver_ok.discard(node)
        chain.append((block, qc))
        self._execute_block(node, block)

    def _execute_block(self, node: NodeId, block: Block) -> None:
        try:
            executed = self.execution[node].execute(block)
        except Exception as exc:
            if node not in self.byzantine:
                self.violations.append(f"{node} execution at {block.height}: {exc}")
            return
        self._report_executed(node, executed)

    # -- views ----------------------------------------------------------------------

    def heights(self) -> dict[NodeId, int]:
        return {node: len(chain) for node, chain in self.chains.items()}

    def committed_txs(self, node: NodeId) -> list[Transaction]:
        return [t for block, _ in self.chains[node] for t in block.transactions]

    def all_committed(
        self, txs: Iterable[Transaction], nodes: Iterable[NodeId] | None = None
    ) -> bool:
        wanted = {t.tx_hash for t in txs}
        for node in self.ids if nodes is None else nodes:
            have = {t.tx_hash for t in self.committed_txs(node)}
            if not wanted <= have:
                return False
        return True
