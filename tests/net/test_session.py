"""The record layer: every frame authenticated and numbered; replayed,
reordered, dropped or modified frames are refused, each for its own reason."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from belep.errors import PeerRejected, ValidationError
from belep.net.session import (
    MAX_CHANNEL,
    SEAL_OVERHEAD,
    Close,
    Message,
    Ping,
    SessionCipher,
    decode_record,
    encode_channel,
    encode_close,
    encode_message,
    encode_ping,
)
from belep.net.wire import RejectReason

K1, K2 = b"\x01" * 32, b"\x02" * 32


def pair() -> tuple[SessionCipher, SessionCipher]:
    return SessionCipher(K1, K2), SessionCipher(K2, K1)


def reason(call: object) -> str:
    with pytest.raises(PeerRejected) as caught:
        call()  # type: ignore[operator]
    return caught.value.reason


def test_records_round_trip_in_order() -> None:
    tx, rx = pair()
    records = [encode_message(b"dom", b"payload"), encode_ping(), encode_close("bye")]
    bodies = [tx.seal(r) for r in records]
    assert [decode_record(rx.open(b)) for b in bodies] == [
        Message("dom", b"payload"),
        Ping(),
        Close("bye"),
    ]
    assert rx.recv_sequence == tx.send_sequence == 3


def test_a_body_carries_its_sequence_and_the_tag() -> None:
    tx, _ = pair()
    body = tx.seal(encode_ping())
    assert body[:8] == b"\x00" * 8
    assert len(body) == SEAL_OVERHEAD + 1
    assert tx.seal(encode_ping())[:8] == (1).to_bytes(8, "big")


def test_a_replayed_frame_is_refused() -> None:
    tx, rx = pair()
    first = tx.seal(encode_message(b"d", b"transfer"))
    rx.open(first)
    assert reason(lambda: rx.open(first)) == RejectReason.REPLAYED_FRAME
    assert rx.recv_sequence == 1  # unchanged by the refusal


def test_a_reordered_frame_is_refused() -> None:
    tx, rx = pair()
    first, second = tx.seal(encode_ping()), tx.seal(encode_ping())
    assert reason(lambda: rx.open(second)) == RejectReason.OUT_OF_ORDER_FRAME
    assert rx.recv_sequence == 0
    rx.open(first)  # the session itself is still consistent


def test_a_frame_from_the_other_direction_is_refused() -> None:
    """Each direction has its own key: reflecting a frame back fails authentication."""
    tx, _ = pair()
    body = tx.seal(encode_ping())
    assert reason(lambda: tx.open(body)) == RejectReason.BAD_MAC
    assert reason(lambda: SessionCipher(K2, b"\x03" * 32).open(body)) == RejectReason.BAD_MAC


@given(position=st.integers(min_value=8, max_value=SEAL_OVERHEAD + 12), bit=st.integers(0, 7))
def test_any_modified_ciphertext_or_tag_bit_fails_authentication(position: int, bit: int) -> None:
    tx, rx = pair()
    body = bytearray(tx.seal(encode_message(b"dom", b"evidence")))
    assert len(body) == SEAL_OVERHEAD + 13  # positions 8.. cover ciphertext and tag
    body[position] ^= 1 << bit
    assert reason(lambda: rx.open(bytes(body))) == RejectReason.BAD_MAC
    assert rx.recv_sequence == 0


def test_a_rewritten_sequence_number_fails_authentication() -> None:
    tx, rx = pair()
    tx.seal(encode_ping())
    second = bytearray(tx.seal(encode_ping()))
    second[7] = 0  # claim to be frame 0
    assert reason(lambda: rx.open(bytes(second))) == RejectReason.BAD_MAC


def test_a_truncated_body_is_malformed() -> None:
    _, rx = pair()
    assert reason(lambda: rx.open(b"\x00" * SEAL_OVERHEAD)) == RejectReason.MALFORMED_FRAME


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(b"\x03", id="unknown kind"),
        pytest.param(b"\x00", id="message without channel length"),
        pytest.param(b"\x00\x00payload", id="empty channel"),
        pytest.param(b"\x00\x09abc", id="channel longer than the record"),
        pytest.param(b"\x00\x02\xff\xfepayload", id="channel not utf-8"),
        pytest.param(b"\x01x", id="ping with data"),
        pytest.param(b"\x02\xff", id="close reason not utf-8"),
        pytest.param(b"\x02" + b"r" * 257, id="close reason too long"),
    ],
)
def test_malformed_records_are_refused(record: bytes) -> None:
    assert reason(lambda: decode_record(record)) == RejectReason.MALFORMED_FRAME


def test_channel_names_are_bounded() -> None:
    assert encode_channel("é" * 127) == "é".encode() * 127
    with pytest.raises(ValidationError):
        encode_channel("")
    with pytest.raises(ValidationError):
        encode_channel("x" * (MAX_CHANNEL + 1))


def test_close_reasons_are_truncated_on_a_character_boundary() -> None:
    record = encode_close("警" * 200)
    assert len(record) <= 257
    assert decode_record(record) == Close("警" * 85)
