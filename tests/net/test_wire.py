"""Length-prefixed framing: strict, bounded, indifferent to how bytes are chunked."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from belep.errors import ConfigError, PeerRejected
from belep.net.wire import (
    HANDSHAKE_MAX_FRAME,
    MAX_CONFIGURABLE_FRAME,
    FrameDecoder,
    Limits,
    RejectReason,
    encode_frame,
)


def drain(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def test_encode_frame_is_big_endian_length_then_body() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_encode_frame_refuses_an_empty_body() -> None:
    with pytest.raises(ValueError, match="must be 1"):
        encode_frame(b"")


@given(
    bodies=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
)
def test_any_chunking_yields_the_same_frames(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(b) for b in bodies)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder = FrameDecoder(1024)
    frames: list[bytes] = []
    for start, end in itertools.pairwise(points):
        decoder.feed(stream[start:end])
        frames += drain(decoder)
    assert frames == bodies
    assert decoder.buffered == 0


def test_a_partial_frame_waits_for_more_bytes() -> None:
    decoder = FrameDecoder(1024)
    decoder.feed(b"\x00\x00\x00\x05ab")
    assert decoder.next_frame() is None
    assert decoder.buffered == 6
    decoder.feed(b"cde")
    assert decoder.next_frame() == b"abcde"


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        pytest.param(b"\x00\x00\x00\x00", RejectReason.MALFORMED_FRAME, id="empty frame"),
        pytest.param(
            b"\x00\x00\x04\x01", RejectReason.OVERSIZED_FRAME, id="one byte over the limit"
        ),
        pytest.param(b"\xff\xff\xff\xff", RejectReason.OVERSIZED_FRAME, id="4 GiB length"),
        pytest.param(b"GET / HTTP/1.1\r\n", RejectReason.OVERSIZED_FRAME, id="http request"),
    ],
)
def test_bad_length_prefixes_are_refused(stream: bytes, reason: RejectReason) -> None:
    decoder = FrameDecoder(1024)
    decoder.feed(stream)
    with pytest.raises(PeerRejected) as caught:
        decoder.next_frame()
    assert caught.value.reason == reason


def test_an_oversized_frame_is_refused_from_its_prefix_alone() -> None:
    """No body byte needs to arrive: the decoder never buffers an oversized frame."""
    decoder = FrameDecoder(1024)
    decoder.feed((1 << 30).to_bytes(4, "big"))
    with pytest.raises(PeerRejected) as caught:
        decoder.next_frame()
    assert caught.value.reason == RejectReason.OVERSIZED_FRAME
    assert caught.value.expected == "<= 1024"
    assert caught.value.found == 1 << 30


def test_a_frame_exactly_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(1024)
    decoder.feed(encode_frame(b"x" * 1024))
    assert decoder.next_frame() == b"x" * 1024


def test_a_failed_decoder_stays_failed() -> None:
    decoder = FrameDecoder(16)
    decoder.feed(b"\x00\x00\x00\x00")
    with pytest.raises(PeerRejected):
        decoder.next_frame()
    with pytest.raises(PeerRejected):
        decoder.next_frame()
    with pytest.raises(PeerRejected):
        decoder.feed(encode_frame(b"ok"))


def test_the_limit_can_be_raised_between_frames() -> None:
    decoder = FrameDecoder(8)
    decoder.feed(encode_frame(b"small") + encode_frame(b"y" * 100))
    assert decoder.next_frame() == b"small"
    decoder.max_frame_size = 100
    assert decoder.next_frame() == b"y" * 100


@pytest.mark.parametrize(
    ("max_frame", "handshake_max"),
    [
        pytest.param(HANDSHAKE_MAX_FRAME - 1, 256, id="max frame below the handshake minimum"),
        pytest.param(MAX_CONFIGURABLE_FRAME + 1, 4096, id="max frame above 1 GiB"),
        pytest.param(8192, 255, id="handshake limit too small"),
        pytest.param(8192, 8193, id="handshake limit above max frame"),
    ],
)
def test_limits_are_validated(max_frame: int, handshake_max: int) -> None:
    with pytest.raises(ConfigError):
        Limits(max_frame_size=max_frame, handshake_max_frame=handshake_max)
