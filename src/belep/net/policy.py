"""Transport policies as pure functions: reconnect backoff, duplicate
connections, and the bounded per-peer send queue.

* :func:`compute_backoff` — exponential backoff with "equal jitter": the
  ``n``-th retry waits a uniformly drawn time in ``[c/2, c)`` with
  ``c = min(maximum, initial * 2**n)``. The random draw is an input.
* :func:`is_preferred_connection` — when two authenticated connections to
  the same peer exist, both ends pick the same survivor without talking:
  a connection from a newer peer incarnation wins (the peer restarted);
  otherwise the connection opened by the smaller node id wins; between two
  connections opened by the same side, the newer wins.
* :class:`SendQueue` — a FIFO bounded in bytes and in frames with two
  classes of messages. *Droppable* messages (consensus traffic, which the
  protocols retransmit) never wait: when the queue is full the oldest
  droppable messages are evicted, and if evicting every droppable message
  would not make room the new one is refused. *Reliable* messages (client
  traffic, state transfer) are never evicted; they may evict droppable
  ones, and when reliable messages alone fill the queue the sender must
  wait (the host blocks it). Memory per peer is therefore bounded by the
  queue's byte limit whatever the peer does.

This module does no I/O and reads no clock or random source.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from belep.errors import ConfigError, ValidationError
from belep.ledger.block import NodeId
from belep.net.handshake import HandshakeResult

#: Bytes charged per queued message on top of its payload and channel
#: (frame header, sequence, tag, record header), so tiny messages are not free.
MESSAGE_COST_OVERHEAD = 32


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Reconnect delays in seconds."""

    initial: float = 0.1
    maximum: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ConfigError(
                "backoff needs 0 < initial <= maximum",
                expected="0 < initial <= maximum",
                found=(self.initial, self.maximum),
            )


def compute_backoff(policy: BackoffPolicy, attempt: int, draw: float) -> float:
    """Delay before retry number ``attempt`` (0-based) given a uniform ``draw`` in [0, 1)."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if not 0.0 <= draw < 1.0:
        raise ValueError("draw must be in [0, 1)")
    ceiling = min(policy.maximum, policy.initial * 2.0 ** min(attempt, 62))
    return ceiling * (0.5 + 0.5 * draw)


def is_preferred_connection(
    local: NodeId, current: HandshakeResult, candidate: HandshakeResult
) -> bool:
    """True if ``candidate`` should replace ``current`` (both to the same peer).

    Both ends of the two connections evaluate this with the same answer:
    the incarnations and initiators are part of both handshakes.
    """
    if current.peer != candidate.peer:
        raise ValueError("connections to different peers are not duplicates")
    if candidate.peer_incarnation != current.peer_incarnation:
        return True  # the peer restarted: the old connection is stale
    if candidate.initiator == current.initiator:
        return True  # the initiator gave up on the old one and dialed again
    return candidate.initiator == min(local, candidate.peer)


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Bounds of one peer's send queue."""

    max_bytes: int = 32 * 1024 * 1024
    max_messages: int = 65536

    def __post_init__(self) -> None:
        if self.max_bytes < 1024 or self.max_messages < 1:
            raise ConfigError(
                "send queue limits too small",
                expected="max_bytes >= 1024 and max_messages >= 1",
                found=(self.max_bytes, self.max_messages),
            )


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A message waiting to be sealed and written."""

    channel: str
    payload: bytes
    droppable: bool
    #: Bytes this message is charged against the queue limit.
    cost: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cost = len(self.payload) + len(self.channel.encode("utf-8")) + MESSAGE_COST_OVERHEAD
        object.__setattr__(self, "cost", cost)


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What :meth:`SendQueue.push` did: whether the message was queued and how many it evicted."""

    accepted: bool
    evicted: int


class SendQueue:
    """One peer's bounded FIFO of outbound messages (see the module docstring)."""

    __slots__ = ("_items", "_reliable_bytes", "_reliable_count", "bytes", "limits")

    def __init__(self, limits: QueueLimits) -> None:
        self.limits = limits
        self._items: deque[OutboundMessage] = deque()
        self.bytes = 0
        self._reliable_bytes = 0
        self._reliable_count = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def has_room(self, message: OutboundMessage) -> bool:
        """True if ``message`` fits now, without evicting anything."""
        return (
            self.bytes + message.cost <= self.limits.max_bytes
            and len(self._items) < self.limits.max_messages
        )

    def can_accept(self, message: OutboundMessage) -> bool:
        """True if ``message`` fits once every droppable message is evicted.

        Both classes may evict only droppable messages, so the test is the same.
        """
        return (
            self._reliable_bytes + message.cost <= self.limits.max_bytes
            and self._reliable_count < self.limits.max_messages
        )

    def push(self, message: OutboundMessage) -> PushOutcome:
        """Queue ``message``, evicting the oldest droppable messages if needed.

        If it cannot fit even then, nothing changes and ``accepted`` is false.
        """
        if message.cost > self.limits.max_bytes:
            raise ValidationError(
                "message larger than the send queue",
                expected=f"<= {self.limits.max_bytes}",
                found=message.cost,
            )
        if not self.can_accept(message):
            return PushOutcome(accepted=False, evicted=0)
        evicted = 0
        while not self.has_room(message):
            self._evict_oldest_droppable()
            evicted += 1
        self._items.append(message)
        self.bytes += message.cost
        if not message.droppable:
            self._reliable_bytes += message.cost
            self._reliable_count += 1
        return PushOutcome(accepted=True, evicted=evicted)

    def pop_batch(self, max_bytes: int) -> list[OutboundMessage]:
        """Remove and return the oldest messages, at least one, up to ``max_bytes`` of cost."""
        batch: list[OutboundMessage] = []
        total = 0
        items = self._items
        while items and (not batch or total + items[0].cost <= max_bytes):
            message = items.popleft()
            total += message.cost
            batch.append(message)
            if not message.droppable:
                self._reliable_bytes -= message.cost
                self._reliable_count -= 1
        self.bytes -= total
        return batch

    def _evict_oldest_droppable(self) -> None:
        items = self._items
        if items[0].droppable:
            victim = items.popleft()
        else:
            index = next(i for i, m in enumerate(items) if m.droppable)
            victim = items[index]
            del items[index]
        self.bytes -= victim.cost
