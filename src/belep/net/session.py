"""The session record layer: authenticated, encrypted, numbered frames.

After the handshake every frame body is (``docs/spec/transport.md`` §4)::

    sequence (8 bytes, big-endian) || AES-256-GCM(key_dir, nonce = 0^4 || sequence, record)

with one key per direction, and a record is one of::

    0x00 | channel length (1 byte) | channel (UTF-8) | payload     MESSAGE
    0x01                                                        PING
    0x02 | reason (UTF-8, <= 256 bytes)                         CLOSE

Invariants:

* each direction numbers its frames 0, 1, 2, … and the receiver accepts
  exactly the next number: a smaller one is ``replayed_frame``, a larger one
  ``out_of_order_frame`` (a frame was dropped, reordered or injected), and
  any change to the sequence, ciphertext or tag is ``bad_mac``; the
  sequence is authenticated because it is the nonce;
* a nonce is never reused under a key: the send counter only increases and
  refuses to wrap;
* a frame that fails any check leaves the receive counter unchanged and
  raises :class:`PeerRejected`; the connection must then be closed.

This module does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from belep.errors import PeerRejected, ValidationError
from belep.net.wire import RejectReason

SEQUENCE_SIZE = 8
TAG_SIZE = 16
#: Bytes a sealed frame body adds to its record.
SEAL_OVERHEAD = SEQUENCE_SIZE + TAG_SIZE
#: Bytes a MESSAGE record adds to its channel and payload.
MESSAGE_HEADER = 2
MAX_CHANNEL = 255
MAX_CLOSE_REASON = 256
_NONCE_PAD = b"\x00\x00\x00\x00"
_MAX_SEQUENCE = (1 << 64) - 1


class RecordKind(IntEnum):
    """The first byte of a decrypted record."""

    MESSAGE = 0
    PING = 1
    CLOSE = 2


@dataclass(frozen=True, slots=True)
class Message:
    """An application message on a channel (a domain id)."""

    channel: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A keep-alive; carries nothing."""


@dataclass(frozen=True, slots=True)
class Close:
    """The peer is closing the connection, and says why."""

    reason: str


Record = Message | Ping | Close

_PING = bytes([RecordKind.PING])


@lru_cache(maxsize=4096)
def encode_channel(channel: str) -> bytes:
    """UTF-8 of ``channel``; raises :class:`ValidationError` unless 1..255 bytes."""
    raw = channel.encode("utf-8")
    if not 0 < len(raw) <= MAX_CHANNEL:
        raise ValidationError(
            "channel name has a bad length", expected=f"1..{MAX_CHANNEL} bytes", found=len(raw)
        )
    return raw


def compute_max_payload(max_frame_size: int, channel: bytes) -> int:
    """Largest payload a MESSAGE on ``channel`` may carry in one frame."""
    return max_frame_size - SEAL_OVERHEAD - MESSAGE_HEADER - len(channel)


def encode_message(channel: bytes, payload: bytes) -> bytes:
    """A MESSAGE record (``channel`` already checked by :func:`encode_channel`)."""
    return b"".join((bytes((RecordKind.MESSAGE, len(channel))), channel, payload))


def encode_ping() -> bytes:
    """A PING record."""
    return _PING


def encode_close(reason: str) -> bytes:
    """A CLOSE record; the reason is truncated to 256 bytes of whole characters."""
    raw = reason.encode("utf-8")[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return bytes((RecordKind.CLOSE,)) + raw


def decode_record(plaintext: bytes) -> Record:
    """Parse a decrypted record strictly; raises ``malformed_frame``."""
    kind = plaintext[0]
    if kind == RecordKind.MESSAGE:
        if len(plaintext) < MESSAGE_HEADER:
            raise PeerRejected(RejectReason.MALFORMED_FRAME, "message record too short")
        size = plaintext[1]
        end = MESSAGE_HEADER + size
        if size == 0 or len(plaintext) < end:
            raise PeerRejected(
                RejectReason.MALFORMED_FRAME,
                "message record has a bad channel length",
                expected=f"1..{len(plaintext) - MESSAGE_HEADER}",
                found=size,
            )
        try:
            channel = plaintext[MESSAGE_HEADER:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PeerRejected(RejectReason.MALFORMED_FRAME, "channel is not UTF-8") from exc
        return Message(channel, plaintext[end:])
    if kind == RecordKind.PING:
        if len(plaintext) != 1:
            raise PeerRejected(
                RejectReason.MALFORMED_FRAME,
                "ping record carries data",
                expected=1,
                found=len(plaintext),
            )
        return Ping()
    if kind == RecordKind.CLOSE:
        if len(plaintext) > 1 + MAX_CLOSE_REASON:
            raise PeerRejected(
                RejectReason.MALFORMED_FRAME,
                "close reason too long",
                expected=f"<= {MAX_CLOSE_REASON}",
                found=len(plaintext) - 1,
            )
        try:
            return Close(plaintext[1:].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise PeerRejected(RejectReason.MALFORMED_FRAME, "close reason is not UTF-8") from exc
    raise PeerRejected(
        RejectReason.MALFORMED_FRAME, "unknown record kind", expected=[0, 1, 2], found=kind
    )


class SessionCipher:
    """Seals outgoing and opens incoming records of one connection."""

    __slots__ = ("_opener", "_sealer", "recv_sequence", "send_sequence")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        self._sealer = AESGCM(send_key)
        self._opener = AESGCM(recv_key)
        self.send_sequence = 0
        self.recv_sequence = 0

    def seal(self, record: bytes) -> bytes:
        """The frame body carrying ``record`` under the next send sequence number."""
        sequence = self.send_sequence
        if sequence > _MAX_SEQUENCE:
            raise ValidationError("send sequence exhausted; reconnect for fresh keys")
        self.send_sequence = sequence + 1
        seq = sequence.to_bytes(SEQUENCE_SIZE, "big")
        return seq + self._sealer.encrypt(_NONCE_PAD + seq, record, None)

    def open(self, body: bytes) -> bytes:
        """The record inside frame ``body``; checks its sequence number and tag."""
        if len(body) < SEAL_OVERHEAD + 1:
            raise PeerRejected(
                RejectReason.MALFORMED_FRAME,
                "session frame too short",
                expected=f">= {SEAL_OVERHEAD + 1}",
                found=len(body),
            )
        seq = body[:SEQUENCE_SIZE]
        sequence = int.from_bytes(seq, "big")
        expected = self.recv_sequence
        if sequence != expected:
            reason = (
                RejectReason.REPLAYED_FRAME
                if sequence < expected
                else RejectReason.OUT_OF_ORDER_FRAME
            )
            raise PeerRejected(
                reason,
                "frame sequence number is not the next one",
                expected=expected,
                found=sequence,
            )
        try:
            record = self._opener.decrypt(_NONCE_PAD + seq, body[SEQUENCE_SIZE:], None)
        except InvalidTag as exc:
            raise PeerRejected(
                RejectReason.BAD_MAC, "frame failed authentication", where=f"sequence {sequence}"
            ) from exc
        self.recv_sequence = expected + 1
        return record
