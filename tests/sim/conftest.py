"""A small test-only replica for testing the simulator's own machinery.

``ToyReplica`` is a fixed-leader protocol: the leader (``members[0]``) proposes
one block at a time, members sign an ack over the block hash, and at a
majority of acks the leader broadcasts the block with its certificate. It
persists its head and its outstanding proposal, rebroadcasts while waiting,
and catches up by state transfer. It tolerates crashes of followers only and
exists to exercise the harness (clock, timers, network faults, crash and
restart, state transfer, checker, traces, shrinking). It never stands in for
PBFT or Raft: the protocol tests use the real implementations.

Like every replica it follows the host's execution contract
(``consensus/types.py``): it proposes the next block only once its host
reported the state root after the head (``Executed``), and carries it.

It is not Byzantine-tolerant (a follower acks every proposal at its height),
so equivocating Twins of the leader fork it: the harness tests use that to
show the checker catching real forks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest

from belep.consensus.executed import ExecutionCursor
from belep.consensus.types import (
    Block,
    BlocksFetched,
    Broadcast,
    ClientRequest,
    Deliver,
    Effect,
    Event,
    Executed,
    Height,
    NodeId,
    Persist,
    Persisted,
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
from belep.encoding import decode, encode, expect_bytes, expect_int, expect_list
from belep.errors import ValidationError
from belep.ledger.block import Epoch, View, VoteStatement
from belep.ledger.builder import build_block
from belep.ledger.certificate import check_block_certificate
from belep.ledger.genesis import Committee, Member
from belep.sim.protocols import ProtocolProfile

TOY_KIND = "toy-commit"


def toy_rule(
    config: ReplicaConfig, _chain: Sequence[Block], block: Block, cert: QuorumCertificate
) -> None:
    """A majority of members signed the toy's ``toy-commit`` statement (the ledger's check)."""
    members = tuple(Member(m, config.keys[m]) for m in config.members)
    check_block_certificate(block.header, cert, Committee(members, config.n // 2 + 1, TOY_KIND))


TICK = TimerId("tick")
BATCH = TimerId("batch")


@dataclass(frozen=True, slots=True)
class Propose:
    block: Block


@dataclass(frozen=True, slots=True)
class Ack:
    height: int
    block_hash: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    block: Block
    certificate: QuorumCertificate


@dataclass(frozen=True, slots=True)
class Forward:
    tx: Transaction


def _statement(config: ReplicaConfig, block: Block) -> VoteStatement:
    return VoteStatement(TOY_KIND, config.domain, Epoch(0), View(0), block.height, block.block_hash)


class ToyReplica:
    def __init__(self, config: ReplicaConfig, persisted: Mapping[str, bytes]) -> None:
        self.config = config
        self.leader = config.members[0]
        self.is_leader = config.node_id == self.leader
        self.height = 0
        self.head = config.genesis_hash
        self.pending: list[Transaction] = []
        self.seen: set[bytes] = set()
        self.proposal: Block | None = None
        self.acks: dict[NodeId, bytes] = {}
        self.last_commit: Commit | None = None
        self.fetching = False
        self.quorum = config.n // 2 + 1
        self.executed = ExecutionCursor(config.genesis_hash)
        if "head" in persisted:
            h, head = expect_list(decode(persisted["head"]), "head")
            self.height = expect_int(h, "height")
            self.head = expect_bytes(head, "hash")  # type: ignore[assignment]
        if "proposal" in persisted:
            block = Block.from_wire(decode(persisted["proposal"]))
            if block.height == self.height + 1:
                self.proposal = block

    @property
    def committed_height(self) -> Height:
        return Height(self.height)

    def start(self, now_ms: int) -> list[Effect]:
        effects: list[Effect] = [SetTimer(TICK, self.config.heartbeat_ms)]
        if self.proposal is not None:
            effects += self._broadcast_proposal()
        return effects

    def _others(self) -> tuple[NodeId, ...]:
        return tuple(m for m in self.config.members if m != self.config.node_id)

    def _broadcast_proposal(self) -> list[Effect]:
        assert self.proposal is not None
        sig = self.config.private_key.sign(_statement(self.config, self.proposal).signing_bytes())
        self.acks = {self.config.node_id: sig}
        return [Broadcast(self._others(), Propose(self.proposal))]

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        if isinstance(event, ClientRequest):
            return self._on_request(event.tx, now_ms)
        if isinstance(event, Receive):
            m = event.message
            if isinstance(m, Forward):
                return self._on_request(m.tx, now_ms)
            if isinstance(m, Propose) and event.sender == self.leader:
                return self._on_propose(m.block)
            if isinstance(m, Ack) and self.is_leader:
                return self._on_ack(event.sender, m, now_ms)
            if isinstance(m, Commit):
                return self._on_commit(m.block, m.certificate)
            return []
        if isinstance(event, TimerFired):
            if event.timer == BATCH:
                return self._maybe_propose(now_ms)
            out: list[Effect] = [SetTimer(TICK, self.config.heartbeat_ms)]
            if self.is_leader and self.proposal is not None:
                out.append(Broadcast(self._others(), Propose(self.proposal)))
            if self.is_leader and self.last_commit is not None:
                out.append(Broadcast(self._others(), self.last_commit))
            if self.is_leader and self.pending and self.proposal is None:
                out += self._maybe_propose(now_ms)
            return out
        if isinstance(event, BlocksFetched):
            self.fetching = False
            out = []
            for block, cert in event.blocks:
                out += self._on_commit(block, cert)
            return out
        if isinstance(event, Executed):
            if self.executed.advance(event) and self.is_leader:
                return self._maybe_propose(now_ms)
            return []
        if isinstance(event, Persisted):
            return []
        return []

    def _on_request(self, tx: Transaction, now_ms: int) -> list[Effect]:
        if not self.config.validate_transaction(tx) or tx.tx_hash in self.seen:
            return []
        if not self.is_leader:
            return [Send(self.leader, Forward(tx))]
        self.seen.add(tx.tx_hash)
        self.pending.append(tx)
        return [SetTimer(BATCH, self.config.max_batch_wait_ms)]

    def _maybe_propose(self, now_ms: int) -> list[Effect]:
        if self.proposal is not None or not self.pending:
            return []
        state_root = self.executed.root_after(self.height, self.head)
        if state_root is None:
            return []  # waits for the head's execution
        batch = tuple(self.pending[: self.config.max_batch_size])
        del self.pending[: len(batch)]
        self.proposal = build_block(
            domain=self.config.domain,
            height=self.height + 1,
            epoch=0,
            view=0,
            parent_hash=self.head,
            parent_timestamp_ms=None,
            transactions=batch,
            now_ms=now_ms,
            proposer=self.config.node_id,
            state_root=state_root,
        )
        persist = Persist(self.height + 1, "proposal", encode(self.proposal.to_wire()))
        return [persist, *self._broadcast_proposal()]

    def _on_propose(self, block: Block) -> list[Effect]:
        if block.height > self.height + 1:
            return self._fetch()
        if block.height != self.height + 1 or block.header.prev_hash != self.head:
            return []
        sig = self.config.private_key.sign(_statement(self.config, block).signing_bytes())
        return [Send(self.leader, Ack(block.height, block.block_hash, sig))]

    def _on_ack(self, sender: NodeId, ack: Ack, now_ms: int) -> list[Effect]:
        p = self.proposal
        if p is None or ack.height != p.height or ack.block_hash != p.block_hash:
            return []
        key = self.config.keys.get(sender)
        if key is None or not key.is_valid_signature(
            _statement(self.config, p).signing_bytes(), ack.signature
        ):
            return []
        self.acks[sender] = ack.signature
        if len(self.acks) < self.quorum:
            return []
        cert = QuorumCertificate(_statement(self.config, p), tuple(self.acks.items()))
        self.proposal = None
        commit = Commit(p, cert)
        out = [Broadcast(self._others(), commit), *self._on_commit(p, cert)]
        return out + self._maybe_propose(now_ms)

    def _on_commit(self, block: Block, cert: QuorumCertificate) -> list[Effect]:
        if block.height <= self.height:
            return []
        if block.height > self.height + 1:
            return self._fetch()
        if block.header.prev_hash != self.head:
            return []
        try:
            block.check_tx_root()
            toy_rule(self.config, (), block, cert)
        except ValidationError:
            return []
        self.height = block.height
        self.head = block.block_hash
        self.last_commit = Commit(block, cert)
        for tx in block.transactions:
            self.seen.add(tx.tx_hash)
        head = encode([self.height, self.head])
        return [Persist(self.height, "head", head), Deliver(block, cert)]

    def _fetch(self) -> list[Effect]:
        if self.fetching:
            return []
        self.fetching = True
        return [RequestStateTransfer(Height(self.height + 1), self._others())]


def toy_profile() -> ProtocolProfile:
    return ProtocolProfile(
        name="toy",
        factory=ToyReplica,
        byzantine_tolerant=True,
        max_faulty=lambda n: (n - 1) // 3,
        certificate_rule=toy_rule,
    )


@pytest.fixture
def toy() -> ProtocolProfile:
    return toy_profile()
