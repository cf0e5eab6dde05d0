"""Helpers shared by the transport tests (importable because conftest.py
puts this directory on ``sys.path``).

Pure-core tests use :func:`make_identity` and :func:`open_pair` (no
sockets). Tests marked ``loopback`` run real transports on 127.0.0.1 with
ephemeral ports inside one event loop, each bounded by :func:`run`'s
timeout; they never sleep for a fixed time, they wait for a condition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from belep.crypto import PrivateKey, PublicKey
from belep.ledger.block import NodeId
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
