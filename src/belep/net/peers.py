"""Per-peer and per-connection state of the asyncio transport.

Plain mutable holders used only by :mod:`belep.net.transport`: the counters
behind :class:`~belep.net.config.TransportMetrics`, one TCP connection with
its sans-IO core, and what is kept per allowed peer (its bounded send queue,
its current connection, the events tasks wait on). No logic beyond
bookkeeping lives here.
"""

from __future__ import annotations

import asyncio

from belep.crypto import PublicKey
from belep.errors import NetworkError
from belep.ledger.block import NodeId
from belep.net.config import PeerAddress
from belep.net.connection import ConnectionCore
from belep.net.handshake import HandshakeResult
from belep.net.policy import QueueLimits, SendQueue


class Counters:
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "dial_failures",
        "duplicate_connections",
        "frames_in",
        "frames_out",
        "handler_errors",
        "handshakes_completed",
        "messages_dropped",
        "messages_in",
        "messages_out",
        "rejects",
    )

    def __init__(self) -> None:
        self.frames_in = self.frames_out = self.messages_in = self.messages_out = 0
        self.bytes_in = self.bytes_out = self.messages_dropped = self.handler_errors = 0
        self.handshakes_completed = self.duplicate_connections = self.dial_failures = 0
        self.rejects: dict[str, int] = {}


class LiveConnection:
    """One TCP connection and its core."""

    __slots__ = (
        "closed",
        "core",
        "direction",
        "last_rx",
        "last_tx",
        "reader",
        "remote",
        "writer",
        "writer_task",
    )

    def __init__(
        self,
        core: ConnectionCore,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
    ) -> None:
        self.core = core
        self.reader = reader
        self.writer = writer
        self.direction = direction
        peer_name = writer.get_extra_info("peername")
        self.remote = f"{peer_name[0]}:{peer_name[1]}" if peer_name else "?"
        self.closed = False
        self.last_rx = 0.0
        self.last_tx = 0.0
        self.writer_task: asyncio.Task[None] | None = None

    @property
    def result(self) -> HandshakeResult:
        result = self.core.result
        if result is None:
            raise NetworkError("connection is not authenticated")
        return result

    def fields(self, event: str, **more: object) -> dict[str, object]:
        peer = self.core.result.peer if self.core.result is not None else None
        return {
            "event": event,
            "peer": peer,
            "remote": self.remote,
            "direction": self.direction,
            **more,
        }


class PeerState:
    """What the transport keeps per allowed peer, connected or not."""

    __slots__ = (
        "address",
        "connected",
        "connection",
        "dialer",
        "disconnected",
        "has_data",
        "has_space",
        "key",
        "node_id",
        "queue",
    )

    def __init__(
        self, node_id: NodeId, key: PublicKey, address: PeerAddress | None, limits: QueueLimits
    ) -> None:
        self.node_id = node_id
        self.key = key
        self.address = address
        self.queue = SendQueue(limits)
        self.has_data = asyncio.Event()
        self.has_space = asyncio.Event()
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.disconnected.set()
        self.connection: LiveConnection | None = None
        self.dialer: asyncio.Task[None] | None = None
