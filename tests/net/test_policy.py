"""Pure transport policies: backoff, duplicate connections, the bounded send queue."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from belep.errors import ConfigError, ValidationError
from belep.ledger.block import NodeId
from belep.net.handshake import HandshakeResult
from belep.net.policy import (
    MESSAGE_COST_OVERHEAD,
    BackoffPolicy,
    OutboundMessage,
    QueueLimits,
    SendQueue,
    compute_backoff,
    is_preferred_connection,
)

# -- backoff --------------------------------------------------------------------


def test_backoff_doubles_up_to_the_maximum_with_equal_jitter() -> None:
    policy = BackoffPolicy(initial=0.1, maximum=1.0)
    lows = [compute_backoff(policy, n, 0.0) for n in range(6)]
    assert lows == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])
    highs = [compute_backoff(policy, n, 0.999999) for n in range(6)]
    assert highs == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0], rel=1e-5)


@given(attempt=st.integers(0, 10_000), draw=st.floats(0.0, 1.0, exclude_max=True))
def test_backoff_is_always_within_bounds(attempt: int, draw: float) -> None:
    policy = BackoffPolicy(initial=0.05, maximum=5.0)
    delay = compute_backoff(policy, attempt, draw)
    assert 0.025 <= delay <= 5.0


def test_backoff_schedule_is_reproducible_from_a_seed() -> None:
    policy = BackoffPolicy()

    def schedule(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [compute_backoff(policy, n, rng.random()) for n in range(8)]

    assert schedule(7) == schedule(7)
    assert schedule(7) != schedule(8)


@pytest.mark.parametrize(("attempt", "draw"), [(-1, 0.5), (0, 1.0), (0, -0.1)])
def test_backoff_rejects_bad_inputs(attempt: int, draw: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        compute_backoff(BackoffPolicy(), attempt, draw)


@pytest.mark.parametrize(("initial", "maximum"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_backoff_policy_is_validated(initial: float, maximum: float) -> None:
    with pytest.raises(ConfigError):
        BackoffPolicy(initial, maximum)


# -- duplicate connections -------------------------------------------------------

A, B = NodeId("node-a"), NodeId("node-b")
INC = {A: (b"a1" * 8, b"a2" * 8), B: (b"b1" * 8, b"b2" * 8)}


def view(local: NodeId, initiator: NodeId, peer_restarts: int, sid: bytes) -> HandshakeResult:
    """How ``local`` sees a connection with the other node (``peer_restarts`` picks its incarnation)."""
    peer = B if local == A else A
    return HandshakeResult(peer, initiator, INC[peer][peer_restarts], sid, b"k" * 32, b"k" * 32)


@pytest.mark.parametrize(
    ("local", "current", "candidate", "winner"),
    [
        pytest.param(A, (A, 0), (B, 0), "current", id="node-a: simultaneous dial, own dial kept"),
        pytest.param(
            A, (B, 0), (A, 0), "candidate", id="node-a: simultaneous dial, own dial adopted"
        ),
        pytest.param(
            B, (B, 0), (A, 0), "candidate", id="node-b: simultaneous dial, node-a's adopted"
        ),
        pytest.param(B, (A, 0), (B, 0), "current", id="node-b: simultaneous dial, node-a's kept"),
        pytest.param(A, (A, 0), (A, 0), "candidate", id="same dialer redialed: newer wins"),
        pytest.param(A, (B, 0), (B, 0), "candidate", id="peer redialed: newer wins"),
        pytest.param(A, (A, 0), (B, 1), "candidate", id="peer restarted: beats the id rule"),
        pytest.param(B, (A, 0), (A, 1), "candidate", id="node-a restarted"),
    ],
)
def test_duplicate_connection_table(
    local: NodeId, current: tuple[NodeId, int], candidate: tuple[NodeId, int], winner: str
) -> None:
    old = view(local, current[0], current[1], b"old")
    new = view(local, candidate[0], candidate[1], b"new")
    chosen = "candidate" if is_preferred_connection(local, old, new) else "current"
    assert chosen == winner


@given(
    names=st.lists(st.text(min_size=1, max_size=5), min_size=2, max_size=2, unique=True),
    first_dialer=st.integers(0, 1),
)
def test_simultaneous_dials_agree_for_any_node_names(names: list[str], first_dialer: int) -> None:
    x, y = NodeId(names[0]), NodeId(names[1])
    inc = b"i" * 16
    # x's view: current = the connection x adopted first; y's view may have the other order.
    x_conn = {d: HandshakeResult(y, d, inc, d.encode(), b"", b"") for d in (x, y)}
    y_conn = {d: HandshakeResult(x, d, inc, d.encode(), b"", b"") for d in (x, y)}
    order = (x, y) if first_dialer == 0 else (y, x)
    x_keeps = (
        order[1] if is_preferred_connection(x, x_conn[order[0]], x_conn[order[1]]) else order[0]
    )
    y_keeps = (
        order[0] if is_preferred_connection(y, y_conn[order[1]], y_conn[order[0]]) else order[1]
    )
    assert x_keeps == y_keeps == min(x, y)


def test_connections_to_different_peers_are_not_compared() -> None:
    with pytest.raises(ValueError, match="different peers"):
        is_preferred_connection(
            A,
            HandshakeResult(B, A, b"", b"", b"", b""),
            HandshakeResult(NodeId("node-c"), A, b"", b"", b"", b""),
        )


# -- send queue ---------------------------------------------------------------------


def msg(n: int, *, size: int = 111, droppable: bool = True) -> OutboundMessage:
    payload = n.to_bytes(4, "big") + b"\x00" * (size - 4)
    return OutboundMessage("d", payload, droppable)


LIMITS = QueueLimits(max_bytes=1440, max_messages=100)  # ten 144-byte messages
COST = 111 + 1 + MESSAGE_COST_OVERHEAD


def ids(batch: list[OutboundMessage]) -> list[int]:
    return [int.from_bytes(m.payload[:4], "big") for m in batch]


def test_message_cost_counts_payload_channel_and_overhead() -> None:
    assert msg(0).cost == COST == 144


def test_droppable_messages_evict_the_oldest_when_full() -> None:
    queue = SendQueue(LIMITS)
    outcomes = [queue.push(msg(n)) for n in range(15)]
    assert all(o.accepted for o in outcomes)
    assert sum(o.evicted for o in outcomes) == 5
    assert ids(queue.pop_batch(10**6)) == list(range(5, 15))
    assert queue.bytes == 0
    assert len(queue) == 0


def test_reliable_messages_are_never_evicted_and_evict_droppable_ones() -> None:
    queue = SendQueue(LIMITS)
    for n in range(10):
        queue.push(msg(n))
    outcome = queue.push(msg(100, droppable=False))
    assert outcome.accepted
    assert outcome.evicted == 1
    for n in range(101, 110):
        assert queue.push(msg(n, droppable=False)).accepted
    # Now full of reliable messages: a droppable one is refused, a reliable one must wait.
    assert queue.push(msg(200)).accepted is False
    assert not queue.can_accept(msg(201, droppable=False))
    assert queue.push(msg(201, droppable=False)).accepted is False
    assert ids(queue.pop_batch(10**6)) == list(range(100, 110))


def test_eviction_skips_reliable_messages_at_the_front() -> None:
    queue = SendQueue(LIMITS)
    queue.push(msg(0, droppable=False))
    for n in range(1, 10):
        queue.push(msg(n))
    queue.push(msg(10))
    assert ids(queue.pop_batch(10**6)) == [0, *range(2, 11)]


def test_the_message_count_is_bounded_too() -> None:
    queue = SendQueue(QueueLimits(max_bytes=10**6, max_messages=3))
    for n in range(5):
        queue.push(msg(n))
    assert ids(queue.pop_batch(10**6)) == [2, 3, 4]


def test_pop_batch_respects_the_byte_budget_but_returns_at_least_one() -> None:
    queue = SendQueue(LIMITS)
    for n in range(5):
        queue.push(msg(n))
    assert ids(queue.pop_batch(3 * COST)) == [0, 1, 2]
    assert ids(queue.pop_batch(1)) == [3]
    assert ids(queue.pop_batch(10**6)) == [4]
    assert queue.pop_batch(10**6) == []


def test_a_message_larger_than_the_queue_is_a_caller_error() -> None:
    queue = SendQueue(LIMITS)
    with pytest.raises(ValidationError):
        queue.push(msg(0, size=2000))


def test_queue_limits_are_validated() -> None:
    with pytest.raises(ConfigError):
        QueueLimits(max_bytes=10)
    with pytest.raises(ConfigError):
        QueueLimits(max_messages=0)


@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("push"), st.booleans(), st.integers(4, 300)),
            st.tuples(st.just("pop"), st.integers(1, 700)),
        ),
        max_size=80,
    )
)
def test_queue_invariants_under_any_operations(ops: list[tuple[object, ...]]) -> None:
    """Bounded bytes and count, FIFO among survivors, reliable messages never lost."""
    queue = SendQueue(QueueLimits(max_bytes=1024, max_messages=8))
    pushed_reliable: list[int] = []
    popped: list[int] = []
    for n, op in enumerate(ops):
        if op[0] == "push":
            _, droppable, size = op
            message = msg(n, size=int(size), droppable=bool(droppable))  # type: ignore[call-overload]
            outcome = queue.push(message)
            if outcome.accepted and not droppable:
                pushed_reliable.append(n)
        else:
            popped += ids(queue.pop_batch(int(op[1])))  # type: ignore[call-overload]
        assert queue.bytes <= 1024
        assert len(queue) <= 8
    popped += ids(queue.pop_batch(10**9))
    assert popped == sorted(popped)
    assert set(pushed_reliable) <= set(popped)
    assert queue.bytes == 0
