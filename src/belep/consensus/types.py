"""The protocol interface: events in, effects out.

A replica is a pure, deterministic state machine::

    effects = replica.handle(event, now_ms)

It reads no clock (``now_ms`` is an input), draws no random numbers, opens
no socket and touches no file. Its host — the deterministic simulator
(:mod:`belep.sim`) or the node process (:mod:`belep.node`) — executes the
returned effects **in order**.

Host contract:

* ``Send``/``Broadcast``: deliver the message to the named peers, at most
  once each (the network may drop, delay, duplicate or reorder; the
  protocol must tolerate that). The host authenticates the sender: a
  ``Receive`` event names the peer that really sent it.
* ``SetTimer(timer, delay_ms)``: after ``delay_ms`` feed ``TimerFired(timer)``;
  setting a timer that is already set replaces it. ``CancelTimer`` removes it.
* ``Persist(token, key, value)``: durably store ``value`` under ``key``
  (replacing any earlier value; ``value is None`` deletes it) **before
  executing any later effect of the same list**, then feed
  ``Persisted(token)``. On restart, the host passes every stored key to the
  protocol's constructor as ``persisted``.
* ``Deliver(block, certificate)``: the block is committed. Deliveries come in
  strictly increasing height without gaps, each with a certificate that
  anyone holding the configuration can verify.
* ``RequestStateTransfer(from_height, peers)``: the replica is behind; fetch
  committed blocks with their certificates starting at ``from_height`` from
  any of ``peers`` and feed them back as ``BlocksFetched``. The replica
  verifies every certificate; the host need not be trusted.
* **Execution** (``docs/spec/ledger.md`` §Execution): the host executes every
  delivered block, in height order, and feeds ``Executed(height, block_hash,
  state_root)`` back — after a restart first for the replica's
  ``committed_height``. A replica proposes, and votes for, the block at
  ``h + 1`` only once it knows the state root after ``h`` (the header's
  ``state_root``), so every certified block carries the execution root of
  the chain below it.

Handler contract (as in the Ethereum consensus specs): an invalid input
(bad signature, wrong view, malformed message) is ignored and must not
change the replica's state; it may be counted in ``stats``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NewType, Protocol

from belep.crypto import PrivateKey, PublicKey
from belep.ledger.block import (
    ZERO_HASH,
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
)
from belep.ledger.genesis import bft_quorum

__all__ = [
    "Block",
    "BlocksFetched",
    "Broadcast",
    "CancelTimer",
    "ClientRequest",
    "Deliver",
    "Digest",
    "DomainId",
    "Effect",
    "Epoch",
    "Event",
    "Executed",
    "Height",
    "Message",
    "NodeId",
    "Persist",
    "Persisted",
    "QuorumCertificate",
    "Receive",
    "Replica",
    "ReplicaConfig",
    "RequestStateTransfer",
    "Send",
    "SetTimer",
    "TimerFired",
    "TimerId",
    "Transaction",
    "View",
]

TimerId = NewType("TimerId", str)


class Message(Protocol):
    """A protocol message: a frozen dataclass with a canonical wire form."""

    def to_wire(self) -> dict[str, object]: ...


# --------------------------------------------------------------------------
# Events (inputs)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receive:
    """A message from an authenticated peer."""

    sender: NodeId
    message: object


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A transaction submitted by a client to this replica."""

    tx: Transaction


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer set earlier by ``SetTimer`` expired."""

    timer: TimerId


@dataclass(frozen=True, slots=True)
class Persisted:
    """The host made the ``Persist`` effect with this token durable."""

    token: int


@dataclass(frozen=True, slots=True)
class BlocksFetched:
    """Committed blocks with certificates, answering ``RequestStateTransfer``.

    Untrusted: the replica verifies every certificate and hash link.
    """

    blocks: tuple[tuple[Block, QuorumCertificate], ...]


@dataclass(frozen=True, slots=True)
class Executed:
    """The host executed the delivered block ``height`` (``block_hash``): the state root
    after it is ``state_root`` (:func:`belep.ledger.execution.compute_state_root`)."""

    height: Height
    block_hash: Digest
    state_root: Digest


Event = Receive | ClientRequest | TimerFired | Persisted | BlocksFetched | Executed


# --------------------------------------------------------------------------
# Effects (outputs)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    to: NodeId
    message: object


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send the same message to each of ``to`` (never includes the sender itself)."""

    to: tuple[NodeId, ...]
    message: object


@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: TimerId
    delay_ms: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: TimerId


@dataclass(frozen=True, slots=True)
class Persist:
    token: int
    key: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Deliver:
    block: Block
    certificate: QuorumCertificate


@dataclass(frozen=True, slots=True)
class RequestStateTransfer:
    from_height: Height
    peers: tuple[NodeId, ...]


Effect = Send | Broadcast | SetTimer | CancelTimer | Persist | Deliver | RequestStateTransfer


# --------------------------------------------------------------------------
# Configuration and the replica protocol
# --------------------------------------------------------------------------


def _accept_all(_tx: Transaction) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """Everything a replica is told at construction (from the genesis and node config).

    ``members`` are the voters in a fixed order (the primary of view ``v`` is
    ``members[v % len(members)]`` for the BFT protocols); ``observers`` receive
    the committed log but never vote (HPBFT standbys, auditors). ``keys`` maps
    every member and observer to its public key.
    """

    node_id: NodeId
    domain: DomainId
    members: tuple[NodeId, ...]
    keys: Mapping[NodeId, PublicKey]
    private_key: PrivateKey
    observers: tuple[NodeId, ...] = ()
    genesis_hash: Digest = ZERO_HASH
    # Batching and pipelining
    max_batch_size: int = 500
    max_batch_wait_ms: int = 5
    window: int = 8  # blocks in flight beyond the last delivered one (pipelining depth)
    # Timers
    request_timeout_ms: int = 1000  # view-change / election base timeout
    heartbeat_ms: int = 100
    checkpoint_interval: int = 16
    max_clock_skew_ms: int = 60_000
    # Application-level check of a transaction (e.g. client signature); pure.
    validate_transaction: Callable[[Transaction], bool] = field(default=_accept_all)
    # Test-only switches that plant known bugs, so tests can show the simulator
    # catches them. Never set in production configurations.
    planted_bugs: frozenset[str] = frozenset()

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def f(self) -> int:
        """Byzantine faults tolerated by an ``n = 3f + 1`` committee."""
        return (self.n - 1) // 3

    @property
    def bft_quorum(self) -> int:
        """Certificate size: :func:`belep.ledger.genesis.bft_quorum` (2f+1 when n = 3f+1)."""
        return bft_quorum(self.n)

    def voter_keys(self) -> dict[NodeId, PublicKey]:
        return {m: self.keys[m] for m in self.members}


class Replica(Protocol):
    """What every protocol implementation provides."""

    config: ReplicaConfig

    def handle(self, event: Event, now_ms: int) -> list[Effect]:
        """Process one event and return the effects to execute, in order."""
        ...

    def start(self, now_ms: int) -> list[Effect]:
        """Effects to execute when the replica starts (or restarts): timers, announcements."""
        ...

    @property
    def committed_height(self) -> Height:
        """Height of the last delivered block (0 = genesis only)."""
        ...
