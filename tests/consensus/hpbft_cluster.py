"""A tiny deterministic router that drives HPBFT seats and standbys in tests.

Messages travel through the real wire codec (``encode_message`` /
``decode_message``) with a fixed latency, in (time, sequence) order; timers
run on a virtual clock; ``Persist`` effects go to a per-node dict (kept across
a restart); state transfer is served from another node's delivered chain.
Every ``Deliver`` is checked: consecutive heights, hash links, a commit
certificate of ``2f+1`` seats of the epoch covering the height (replayed from
the chain, never a standby), and agreement with every other node. A filter can
drop or rewrite messages per link. No wall clock, no randomness.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hosting import HostExecution

from belep.consensus.certificates import SignatureCache
from belep.consensus.hpbft import HpbftOptions, HpbftReplica
from belep.consensus.hpbft_verify import HistoryCache, check_certificate, history_for_certificate
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
from belep.ledger.config import (
    genesis_history,
)
from belep.ledger.config_tx import (
    ReviveOrder,
)

DOMAIN = DomainId("station-7")
GENESIS = Digest(sha256(b"genesis of station-7"))
SEATS = tuple(NodeId(f"n{i}") for i in range(4))
STANDBYS = tuple(NodeId(f"s{i}") for i in range(3))

#: filter(src, dst, message) -> message to deliver (possibly rewritten) or None to drop.
LinkFilter = Callable[[NodeId, NodeId, object], object | None]


def node_key(node: NodeId) -> PrivateKey:
    return PrivateKey.from_seed(sha256(b"hpbft-test-key " + node.encode()))


def make_config(node: NodeId, **overrides: Any) -> ReplicaConfig:
    keys = {n: node_key(n).public_key for n in (*SEATS, *STANDBYS)}
    base: dict[str, Any] = {
        "node_id": node,
        "domain": DOMAIN,
        "members": SEATS,
        "observers": STANDBYS,
        "keys": keys,
        "private_key": node_key(node),
        "genesis_hash": GENESIS,
        "max_batch_size": 16,
        "max_batch_wait_ms": 2,
        "request_timeout_ms": 200,
        "heartbeat_ms": 40,
        "checkpoint_interval": 4,
        "window": 4,
        "validate_transaction": lambda tx: tx.payload.startswith(b"tx-"),
    }
    base.update(overrides)
    return ReplicaConfig(**base)


def tx(i: int) -> Transaction:
    return Transaction(b"tx-%06d" % i)


@dataclass
class Node:
    replica: HpbftReplica
    store: dict[str, bytes] = field(default_factory=dict)
    chain: list[Block] = field(default_factory=list)
    certs: list[QuorumCertificate] = field(default_factory=list)
    up: bool = True
    timers: dict[TimerId, int] = field(default_factory=dict)
    execution: HostExecution = field(default_factory=lambda: HostExecution(GENESIS))
    incarnation: int = 0


class Cluster:
    """Four seats and three standbys on a virtual clock."""

    def __init__(
        self,
        *,
        latency_ms: int = 3,
        options: HpbftOptions | None = None,
        config_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.now = 0
        self.latency = latency_ms
        self.options = options
        self.overrides = dict(config_overrides or {})
        self.nodes: dict[NodeId, Node] = {}
        self.queue: list[tuple[int, int, str, Any]] = []
        self.seq = 0
        self.filter: LinkFilter | None = None
        self.delivered_at: dict[int, Digest] = {}
        keys = {m: node_key(m).public_key for m in (*SEATS, *STANDBYS)}
        self._history = HistoryCache(genesis_history(DOMAIN, SEATS, STANDBYS, keys=keys))
        self._cache = SignatureCache()
        self.wire_messages = 0
        self.orders: list[ReviveOrder] = []
        for node in (*SEATS, *STANDBYS):
            self.nodes[node] = Node(self._make(node, {}))
        for node in self.nodes:
            self._apply(node, self.nodes[node].replica.start(self.now))

    def _make(self, node: NodeId, persisted: Mapping[str, bytes]) -> HpbftReplica:
        return HpbftReplica(make_config(node, **self.overrides), persisted, self.options)

    # -- driving ---------------------------------------------------------------

    def _push(self, at: int, kind: str, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, payload))

    def submit(self, node: NodeId, *txs: Transaction) -> None:
        for t in txs:
            self.step(node, ClientRequest(t))

    def inject(self, node: NodeId, sender: NodeId, message: object) -> None:
        order = getattr(message, "order", None)
        if isinstance(order, ReviveOrder):
            self.orders.append(order)
        self.step(node, Receive(sender, message))

    def step(self, node: NodeId, event: Event) -> None:
        n = self.nodes[node]
        if not n.up:
            return
        self._apply(node, n.replica.handle(event, self.now))

    def run(self, until_ms: int) -> None:
        while self.queue and self.queue[0][0] <= until_ms:
            at, _, kind, payload = heapq.heappop(self.queue)
            self.now = at
            if kind == "msg":
                src, dst, data = payload
                if self.nodes[dst].up:
                    self.step(dst, Receive(src, decode_message(data)))
            elif kind == "timer":
                node, timer, generation = payload
                n = self.nodes[node]
                if n.up and n.timers.get(timer) == generation:
                    del n.timers[timer]
                    self.step(node, TimerFired(timer))
            elif kind == "fetched":
                node, blocks = payload
                if self.nodes[node].up:
                    self.step(node, BlocksFetched(blocks))
            elif kind == "executed":
                node, incarnation, event = payload
                if self.nodes[node].up and self.nodes[node].incarnation == incarnation:
                    self.step(node, event)
        self.now = max(self.now, until_ms)

    def _report_executed(self, node: NodeId, event: Executed | None) -> None:
        """The host tells the replica the state root after a delivered block, at once."""
        if event is not None:
            n = self.nodes[node]
            self._push(self.now, "executed", (node, n.incarnation, event))

    def crash(self, node: NodeId) -> None:
        n = self.nodes[node]
        n.up = False
        n.timers.clear()

    def restart(self, node: NodeId) -> None:
        n = self.nodes[node]
        n.up = True
        n.incarnation += 1
        n.replica = self._make(node, dict(n.store))
        self._apply(node, n.replica.start(self.now))
        self._report_executed(node, n.execution.executed(n.replica.committed_height))

    # -- effects ---------------------------------------------------------------

    def _send(self, src: NodeId, dst: NodeId, message: object) -> None:
        if self.filter is not None:
            rewritten = self.filter(src, dst, message)
            if rewritten is None:
                return
            message = rewritten
        self.wire_messages += 1
        data = encode_message(message)  # type: ignore[arg-type]
        self._push(self.now + self.latency, "msg", (src, dst, data))

    def _apply(self, node: NodeId, effects: list[Effect]) -> None:
        n = self.nodes[node]
        for effect in effects:
            if isinstance(effect, Send):
                self._send(node, effect.to, effect.message)
            elif isinstance(effect, Broadcast):
                for dst in effect.to:
                    self._send(node, dst, effect.message)
            elif isinstance(effect, SetTimer):
                self.seq += 1
                n.timers[effect.timer] = self.seq
                self._push(self.now + effect.delay_ms, "timer", (node, effect.timer, self.seq))
            elif isinstance(effect, CancelTimer):
                n.timers.pop(effect.timer, None)
            elif isinstance(effect, Persist):
                if effect.value is None:
                    n.store.pop(effect.key, None)
                else:
                    n.store[effect.key] = effect.value
            elif isinstance(effect, Deliver):
                self._check_delivery(node, effect.block, effect.certificate)
            elif isinstance(effect, RequestStateTransfer):
                self._serve(node, effect)

    def _serve(self, node: NodeId, request: RequestStateTransfer) -> None:
        start = request.from_height
        for peer in request.peers:
            other = self.nodes[peer]
            if other.up and len(other.chain) >= start:
                blocks = tuple(zip(other.chain[start - 1 :], other.certs[start - 1 :], strict=True))
                self._push(self.now + 2 * self.latency, "fetched", (node, blocks))
                return
        self._push(self.now + 2 * self.latency, "fetched", (node, ()))

    def _check_delivery(self, node: NodeId, block: Block, cert: QuorumCertificate) -> None:
        n = self.nodes[node]
        h = block.height
        if h <= len(n.chain):
            assert n.chain[h - 1].block_hash == block.block_hash, (
                f"{node} re-delivered another block"
            )
            self._report_executed(node, n.execution.executed(h))
            return
        assert h == len(n.chain) + 1, f"{node} delivered {h} after {len(n.chain)}"
        prev = n.chain[-1].block_hash if n.chain else GENESIS
        assert block.header.prev_hash == prev, f"{node} broke the hash chain at {h}"
        block.check_tx_root()
        canonical = self.canonical()
        if h <= len(canonical):
            assert canonical[h - 1].block_hash == block.block_hash, f"fork at height {h}"
        history = history_for_certificate(
            self._history, n.chain, h, cert.statement.epoch, self.orders
        )
        check_certificate(history, block, cert, self._cache)
        n.chain.append(block)
        n.certs.append(cert)
        self._report_executed(node, n.execution.execute(block))

    # -- queries ---------------------------------------------------------------

    def canonical(self) -> list[Block]:
        return max((n.chain for n in self.nodes.values()), key=len)

    def heights(self) -> dict[NodeId, int]:
        return {node: len(n.chain) for node, n in self.nodes.items()}

    def committed_payloads(self, node: NodeId) -> set[bytes]:
        return {t.payload for b in self.nodes[node].chain for t in b.transactions}
