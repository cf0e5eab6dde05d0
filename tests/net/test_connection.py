"""One connection as a sans-IO state machine: bytes in, events out, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from net_testkit import allowed_keys, handshake, make_identity, node_key, open_pair, pump

from belep.errors import NetworkError, PeerRejected, ValidationError
from belep.ledger.block import NodeId
from belep.net.connection import (
    Close,
    ConnectionCore,
    ConnectionState,
    Established,
    Message,
    Ping,
    SendBytes,
)
from belep.net.wire import Limits, RejectReason, encode_frame

SMALL = Limits(max_frame_size=8192, handshake_max_frame=1024)


def dialer(limits: Limits = SMALL) -> ConnectionCore:
    return ConnectionCore.dialing(
        make_identity("node-a"), limits, NodeId("node-b"), node_key("node-b").public_key
    )


def acceptor(limits: Limits = SMALL) -> ConnectionCore:
    return ConnectionCore.accepting(make_identity("node-b"), limits, allowed_keys())


def reason(core: ConnectionCore, data: bytes) -> str:
    with pytest.raises(PeerRejected) as caught:
        core.receive_data(data)
    assert core.state is ConnectionState.CLOSED
    return caught.value.reason


def test_handshake_then_messages_both_ways() -> None:
    a, b = open_pair(SMALL)
    assert a.is_open
    assert b.is_open
    assert a.result is not None
    assert b.result is not None
    assert (a.result.peer, b.result.peer) == ("node-b", "node-a")
    _, events = pump(b, a.seal_message("station-1", b"vote") + a.seal_ping())
    assert events == [Message("station-1", b"vote"), Ping()]
    _, events = pump(a, b.seal_message("city", b""))
    assert events == [Message("city", b"")]


def test_events_come_in_order_and_once() -> None:
    d, a = dialer(), acceptor()
    d_events, a_events = handshake(d, a)
    assert [type(e) for e in d_events] == [Established]
    assert [type(e) for e in a_events] == [Established]


@settings(max_examples=40, deadline=None)
@given(chunk=st.integers(min_value=1, max_value=97), messages=st.integers(0, 5))
def test_any_chunking_of_handshake_and_first_messages(chunk: int, messages: int) -> None:
    """The dialer may send data right behind FINISH; the acceptor sees Established first."""
    d, a = dialer(), acceptor()
    to_dialer = b""
    hello = d.initial_bytes()
    for i in range(0, len(hello), chunk):
        out, events = pump(a, hello[i : i + chunk])
        assert events == []
        to_dialer += out
    finish, events = pump(d, to_dialer)
    assert [type(e) for e in events] == [Established]
    stream = finish + b"".join(d.seal_message("dom", bytes([n])) for n in range(messages))
    received = []
    for i in range(0, len(stream), chunk):
        out, events = pump(a, stream[i : i + chunk])
        assert out == b""
        received += events
    assert [type(e) for e in received[:1]] == [Established]
    assert received[1:] == [Message("dom", bytes([n])) for n in range(messages)]


def test_before_authentication_frames_are_capped_at_the_handshake_limit() -> None:
    assert reason(acceptor(), (1025).to_bytes(4, "big")) == RejectReason.OVERSIZED_FRAME


def test_after_authentication_the_full_limit_applies() -> None:
    a, b = open_pair(SMALL)
    payload = b"x" * a.max_payload("dom")
    frame = a.seal_message("dom", payload)
    assert len(frame) == 4 + 8192  # exactly at the limit
    assert pump(b, frame)[1] == [Message("dom", payload)]
    assert reason(b, (8193).to_bytes(4, "big")) == RejectReason.OVERSIZED_FRAME


def test_a_message_over_the_limit_cannot_be_sealed() -> None:
    a, _ = open_pair(SMALL)
    with pytest.raises(ValidationError):
        a.seal_message("dom", b"x" * (a.max_payload("dom") + 1))


def test_garbage_after_authentication_is_refused() -> None:
    _, b = open_pair(SMALL)
    assert reason(b, encode_frame(b"\x00" * 8 + b"garbage-garbage-garbage")) == RejectReason.BAD_MAC


def test_a_replayed_frame_is_refused_and_the_original_delivered_once() -> None:
    a, b = open_pair(SMALL)
    frame = a.seal_message("dom", b"commit")
    assert pump(b, frame)[1] == [Message("dom", b"commit")]
    assert reason(b, frame) == RejectReason.REPLAYED_FRAME


def test_a_dropped_frame_is_detected() -> None:
    a, b = open_pair(SMALL)
    a.seal_message("dom", b"lost")
    assert reason(b, a.seal_message("dom", b"next")) == RejectReason.OUT_OF_ORDER_FRAME


def test_a_handshake_frame_during_the_session_is_refused() -> None:
    hello = dialer().initial_bytes()
    _, b = open_pair(SMALL)
    # Read as a sealed frame, HELLO's first 8 bytes are a huge sequence number.
    assert reason(b, hello) == RejectReason.OUT_OF_ORDER_FRAME


def test_a_session_frame_during_the_handshake_is_refused() -> None:
    a, _ = open_pair(SMALL)
    assert reason(acceptor(), a.seal_ping()) == RejectReason.MALFORMED_HANDSHAKE


def test_close_ends_the_connection_and_ignores_what_follows() -> None:
    a, b = open_pair(SMALL)
    data = a.seal_close("shutdown") + b"trailing garbage"
    assert a.state is ConnectionState.CLOSED
    assert pump(b, data)[1] == [Close("shutdown")]
    assert b.state is ConnectionState.CLOSED
    with pytest.raises(NetworkError):
        b.receive_data(b"more")
    with pytest.raises(NetworkError):
        a.seal_ping()


def test_nothing_can_be_sealed_before_the_handshake() -> None:
    with pytest.raises(NetworkError):
        dialer().seal_message("dom", b"early")


def test_the_acceptor_writes_nothing_first_and_the_dialer_writes_hello() -> None:
    assert acceptor().initial_bytes() == b""
    hello = dialer().initial_bytes()
    assert int.from_bytes(hello[:4], "big") == len(hello) - 4


def test_a_rejected_core_stays_closed() -> None:
    b = acceptor()
    assert reason(b, b"\x00\x00\x00\x00") == RejectReason.MALFORMED_FRAME
    with pytest.raises(NetworkError):
        b.receive_data(b"")


def test_handshake_bytes_are_reported_as_send_bytes() -> None:
    d, a = dialer(), acceptor()
    events = a.receive_data(d.initial_bytes())
    assert len(events) == 1
    assert isinstance(events[0], SendBytes)


def test_a_core_is_either_dialer_or_acceptor() -> None:
    with pytest.raises(ValueError, match="either"):
        ConnectionCore(SMALL)
