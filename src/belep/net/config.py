"""The transport's public records: addresses, configuration, metrics.

:class:`TransportConfig` is everything a :class:`~belep.net.transport.Transport`
needs (the allowed set of node id -> public key comes from the genesis);
:class:`TransportMetrics` and :class:`ConnectionInfo` are what it reports.
Validation happens at construction and raises :class:`ConfigError`.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from belep.crypto import PrivateKey, PublicKey
from belep.errors import ConfigError
from belep.ledger.block import NodeId
from belep.net.policy import BackoffPolicy, QueueLimits
from belep.net.wire import Limits


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Where a node listens."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Everything a :class:`Transport` needs; ``peers`` is the allowed set."""

    node_id: NodeId
    key: PrivateKey
    network_id: bytes
    peers: Mapping[NodeId, PublicKey]
    addresses: Mapping[NodeId, PeerAddress] = field(default_factory=dict)
    listen: PeerAddress | None = None
    limits: Limits = field(default_factory=Limits)
    queue: QueueLimits = field(default_factory=QueueLimits)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    connect_timeout: float = 5.0
    handshake_timeout: float = 5.0
    ping_interval: float = 2.0
    idle_timeout: float = 10.0
    max_pending_handshakes: int = 64

    def __post_init__(self) -> None:
        own = self.peers.get(self.node_id)
        if own is not None and own != self.key.public_key:
            raise ConfigError(
                "node key does not match the allowed set",
                expected=own.fingerprint(),
                found=self.key.public_key.fingerprint(),
                where=f"node {self.node_id}",
            )
        unknown = sorted(set(self.addresses) - set(self.peers))
        if unknown:
            raise ConfigError("addresses for nodes outside the allowed set", found=unknown)
        if not 0 < self.ping_interval < self.idle_timeout:
            raise ConfigError(
                "need 0 < ping_interval < idle_timeout",
                found=(self.ping_interval, self.idle_timeout),
            )
        if min(self.connect_timeout, self.handshake_timeout) <= 0:
            raise ConfigError("timeouts must be positive")
        if self.max_pending_handshakes < 1:
            raise ConfigError("max_pending_handshakes must be >= 1")


@dataclass(frozen=True, slots=True)
class TransportMetrics:
    """A snapshot of the counters the node exports."""

    peers_connected: int
    frames_in: int
    frames_out: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    messages_dropped: int
    handler_errors: int
    handshakes_completed: int
    duplicate_connections: int
    dial_failures: int
    rejects: Mapping[str, int]
    queued_messages: Mapping[NodeId, int]
    queued_bytes: Mapping[NodeId, int]
    #: Sealed bytes written to a peer's socket but not yet accepted by the kernel.
    socket_buffered_bytes: Mapping[NodeId, int]


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """The current connection to one peer, for status pages and tests."""

    peer: NodeId
    direction: str
    remote: str
    initiator: NodeId
    session_id: str
    peer_incarnation: str
