"""Length-prefixed frames: the outermost layer of the BELEP transport.

A frame on the wire is a 4-byte big-endian length ``L`` followed by ``L``
bytes of body (``docs/spec/transport.md`` §2). This module owns:

* :class:`RejectReason` — the stable codes for every way a peer can be
  refused (log field and metrics label);
* :class:`Limits` — the frame size limits of one connection;
* :func:`encode_frame` and :class:`FrameDecoder` — strict framing.

Invariants:

* a frame body is never empty and never longer than the limit in force;
* an oversized length is refused as soon as its 4-byte prefix arrives,
  before any of its body is buffered, so a peer cannot make the decoder
  hold more than ``limit + one read`` bytes;
* after the decoder raises, it stays failed: the connection must be closed.

This module does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from belep.errors import ConfigError, PeerRejected

#: Bytes of the length prefix of every frame.
LENGTH_PREFIX_SIZE = 4
#: Largest body the 4-byte prefix can describe.
MAX_ENCODABLE_FRAME = (1 << 32) - 1
#: Largest frame body accepted before the peer is authenticated (handshake messages).
HANDSHAKE_MAX_FRAME = 4096
#: Default largest frame body after authentication (16 MiB).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
#: Largest configurable frame body (1 GiB): beyond it a single frame is a denial of service.
MAX_CONFIGURABLE_FRAME = 1 << 30


class RejectReason(StrEnum):
    """Why a connection was refused or closed by this side (stable codes)."""

    OVERSIZED_FRAME = "oversized_frame"
    MALFORMED_FRAME = "malformed_frame"
    MALFORMED_HANDSHAKE = "malformed_handshake"
    WRONG_VERSION = "wrong_version"
    WRONG_NETWORK = "wrong_network"
    UNKNOWN_PEER = "unknown_peer"
    UNEXPECTED_PEER = "unexpected_peer"
    SELF_CONNECTION = "self_connection"
    BAD_SIGNATURE = "bad_signature"
    BAD_KEY_EXCHANGE = "bad_key_exchange"
    REPLAYED_FRAME = "replayed_frame"
    OUT_OF_ORDER_FRAME = "out_of_order_frame"
    BAD_MAC = "bad_mac"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    TOO_MANY_HANDSHAKES = "too_many_handshakes"


@dataclass(frozen=True, slots=True)
class Limits:
    """Frame size limits of a connection (bytes of frame body)."""

    max_frame_size: int = DEFAULT_MAX_FRAME
    handshake_max_frame: int = HANDSHAKE_MAX_FRAME

    def __post_init__(self) -> None:
        if not HANDSHAKE_MAX_FRAME <= self.max_frame_size <= MAX_CONFIGURABLE_FRAME:
            raise ConfigError(
                "max_frame_size out of range",
                expected=f"{HANDSHAKE_MAX_FRAME}..{MAX_CONFIGURABLE_FRAME}",
                found=self.max_frame_size,
            )
        if not 256 <= self.handshake_max_frame <= self.max_frame_size:
            raise ConfigError(
                "handshake_max_frame out of range",
                expected=f"256..{self.max_frame_size}",
                found=self.handshake_max_frame,
            )


def encode_frame(body: bytes) -> bytes:
    """The wire form of one frame: length prefix then ``body``.

    Raises :class:`ValueError` for an empty body or one the prefix cannot
    describe; the per-connection limit is enforced by the sealing layer.
    """
    size = len(body)
    if not 0 < size <= MAX_ENCODABLE_FRAME:
        raise ValueError(f"frame body must be 1..{MAX_ENCODABLE_FRAME} bytes, got {size}")
    return size.to_bytes(LENGTH_PREFIX_SIZE, "big") + body


class FrameDecoder:
    """Splits a byte stream into frame bodies, strictly.

    ``feed`` appends received bytes; ``next_frame`` returns the next complete
    body or ``None`` when more bytes are needed. ``max_frame_size`` may be
    raised between frames (after the handshake) and applies to every length
    prefix read afterwards.
    """

    __slots__ = ("_buffer", "_failed", "_position", "max_frame_size")

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._position = 0
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer) - self._position

    def feed(self, data: bytes) -> None:
        """Append bytes read from the connection."""
        if self._failed:
            raise PeerRejected(RejectReason.MALFORMED_FRAME, "frame decoder already failed")
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or ``None`` if it has not fully arrived.

        Raises :class:`PeerRejected` (``malformed_frame`` for an empty frame,
        ``oversized_frame`` for a length above the limit).
        """
        if self._failed:
            raise PeerRejected(RejectReason.MALFORMED_FRAME, "frame decoder already failed")
        buffer = self._buffer
        start = self._position
        available = len(buffer) - start
        if available < LENGTH_PREFIX_SIZE:
            self._compact()
            return None
        size = int.from_bytes(buffer[start : start + LENGTH_PREFIX_SIZE], "big")
        if size == 0:
            self._failed = True
            raise PeerRejected(
                RejectReason.MALFORMED_FRAME, "empty frame", expected=">= 1 byte", found=0
            )
        if size > self.max_frame_size:
            self._failed = True
            raise PeerRejected(
                RejectReason.OVERSIZED_FRAME,
                "frame exceeds the size limit",
                expected=f"<= {self.max_frame_size}",
                found=size,
            )
        end = start + LENGTH_PREFIX_SIZE + size
        if len(buffer) < end:
            self._compact()
            return None
        body = bytes(buffer[start + LENGTH_PREFIX_SIZE : end])
        self._position = end
        return body

    def _compact(self) -> None:
        if self._position:
            del self._buffer[: self._position]
            self._position = 0
