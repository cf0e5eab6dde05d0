"""Helpers shared by the transport tests (importable because conftest.py
puts this directory on ``sys.path``).

Pure-core tests use :func:`make_identity` and :func:`open_pair` (no
sockets). Tests marked ``loopback`` run real transports on 127.0.0.1 with
ephemeral ports inside one event loop, each bounded by :func:`run`'s
timeout; they never sleep for a fixed time, they wait for a condition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from belep.crypto import PrivateKey, PublicKey
from belep.ledger.block import NodeId
from belep.net import BackoffPolicy, PeerAddress, Transport, TransportConfig
from belep.net.connection import ConnectionCore, ConnectionEvent, Established, SendBytes
from belep.net.handshake import LocalIdentity
from belep.net.wire import Limits

NETWORK = b"belep-test-network"
NODES = (NodeId("node-a"), NodeId("node-b"), NodeId("node-c"))


def node_key(node: str) -> PrivateKey:
    """A deterministic key per node name."""
    return PrivateKey.from_seed(node.encode().ljust(32, b"\x00")[:32])


def make_identity(
    node: str, *, key: PrivateKey | None = None, network: bytes = NETWORK
) -> LocalIdentity:
    return LocalIdentity(
        NodeId(node),
        key if key is not None else node_key(node),
        network,
        node.encode().ljust(16, b"#")[:16],
    )


def allowed_keys(nodes: tuple[NodeId, ...] = NODES) -> dict[NodeId, PublicKey]:
    return {n: node_key(n).public_key for n in nodes}


def pump(core: ConnectionCore, data: bytes) -> tuple[bytes, list[ConnectionEvent]]:
    """Feed ``data``; return (bytes the core wants written, the other events)."""
    out = bytearray()
    rest: list[ConnectionEvent] = []
    for event in core.receive_data(data):
        if isinstance(event, SendBytes):
            out += event.data
        else:
            rest.append(event)
    return bytes(out), rest


def handshake(
    dialer: ConnectionCore, acceptor: ConnectionCore
) -> tuple[list[ConnectionEvent], list[ConnectionEvent]]:
    """Run a handshake between two cores in memory; return each side's non-byte events."""
    to_acceptor = dialer.initial_bytes()
    dialer_events: list[ConnectionEvent] = []
    acceptor_events: list[ConnectionEvent] = []
    for _ in range(4):
        if not to_acceptor:
            break
        to_dialer, events = pump(acceptor, to_acceptor)
        acceptor_events += events
        to_acceptor = b""
        if to_dialer:
            to_acceptor, events = pump(dialer, to_dialer)
            dialer_events += events
    return dialer_events, acceptor_events


def open_pair(
    limits: Limits | None = None,
) -> tuple[ConnectionCore, ConnectionCore]:
    """An authenticated (dialer node-a, acceptor node-b) pair of cores."""
    limits = limits or Limits()
    dialer = ConnectionCore.dialing(
        make_identity("node-a"), limits, NodeId("node-b"), node_key("node-b").public_key
    )
    acceptor = ConnectionCore.accepting(make_identity("node-b"), limits, allowed_keys())
    d_events, a_events = handshake(dialer, acceptor)
    if not (
        any(isinstance(e, Established) for e in d_events)
        and any(isinstance(e, Established) for e in a_events)
    ):
        raise RuntimeError("handshake did not complete")
    return dialer, acceptor


def run(coro: Coroutine[Any, Any, None], timeout: float = 10.0) -> None:
    """Run an async test body with a hard bound."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await coro

    asyncio.run(bounded())


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until ``predicate()`` holds (bounded)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@dataclass
class Inbox:
    """Collects what a transport delivers."""

    items: list[tuple[NodeId, str, bytes]] = field(default_factory=list)

    def __call__(self, peer: NodeId, channel: str, payload: bytes) -> None:
        self.items.append((peer, channel, payload))

    def payloads(self) -> list[bytes]:
        return [p for _, _, p in self.items]


# -- loopback helpers -----------------------------------------------------------

TEST_LIMITS = Limits(max_frame_size=64 * 1024, handshake_max_frame=1024)


def make_config(
    node: str,
    *,
    nodes: tuple[NodeId, ...] = NODES,
    addresses: Mapping[NodeId, PeerAddress] | None = None,
    **overrides: Any,
) -> TransportConfig:
    """A test node listening on an ephemeral 127.0.0.1 port, with fast timers."""
    settings: dict[str, Any] = {
        "limits": TEST_LIMITS,
        "backoff": BackoffPolicy(initial=0.02, maximum=0.2),
        "connect_timeout": 2.0,
        "handshake_timeout": 2.0,
        "ping_interval": 0.5,
        "idle_timeout": 5.0,
        "listen": PeerAddress("127.0.0.1", 0),
    }
    settings.update(overrides)
    return TransportConfig(
        node_id=NodeId(node),
        key=node_key(node),
        network_id=NETWORK,
        peers=allowed_keys(nodes),
        addresses=dict(addresses or {}),
        **settings,
    )


def address_of(transport: Transport) -> PeerAddress:
    address = transport.listen_address
    if address is None:
        raise RuntimeError("transport is not listening")
    return address


class RawPeer:
    """A hand-driven client: speaks the protocol through a core, or sends anything at all."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.core: ConnectionCore | None = None

    @classmethod
    async def connect(cls, address: PeerAddress) -> RawPeer:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        return cls(reader, writer)

    async def authenticate(self, node: str, server: str, *, key: PrivateKey | None = None) -> None:
        """Run the handshake as ``node`` (optionally with the wrong ``key``)."""
        core = ConnectionCore.dialing(
            make_identity(node, key=key), TEST_LIMITS, NodeId(server), node_key(server).public_key
        )
        self.core = core
        self.writer.write(core.initial_bytes())
        while not core.is_open:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("server closed the connection during the handshake")
            for event in core.receive_data(data):
                if isinstance(event, SendBytes):
                    self.writer.write(event.data)

    def sealed(self, channel: str, payload: bytes) -> bytes:
        if self.core is None:
            raise RuntimeError("not authenticated")
        return self.core.seal_message(channel, payload)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed_by_server(self) -> bool:
        """Read (and discard) until the server closes; True once it has."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.writer.close()
        return True

    def close(self) -> None:
        self.writer.transport.abort()
