"""One transport connection as a sans-IO state machine: bytes in, events out.

:class:`ConnectionCore` combines the frame decoder (:mod:`belep.net.wire`),
the handshake (:mod:`belep.net.handshake`) and the record layer
(:mod:`belep.net.session`). Its host feeds it the bytes read from a socket
with :meth:`ConnectionCore.receive_data` and gets back a list of events:

* :class:`SendBytes` — handshake bytes the host must write, in order;
* :class:`Established` — the peer is authenticated (once, before any record);
* :class:`~belep.net.session.Message`, :class:`~belep.net.session.Ping`,
  :class:`~belep.net.session.Close` — records from the peer, in order.

States: ``HANDSHAKE`` -> ``OPEN`` -> ``CLOSED``. Before ``OPEN`` frames are
limited to :attr:`Limits.handshake_max_frame` bytes, so an unauthenticated
peer cannot make this side buffer a large frame. Any violation raises
:class:`PeerRejected` and moves the core to ``CLOSED`` (events produced
earlier in the same call are lost with the connection); after a ``Close``
record the core is ``CLOSED`` and ignores whatever follows.

This module does no I/O: the host owns the socket, the clock and the tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from belep.crypto import PublicKey
from belep.errors import NetworkError, PeerRejected, ValidationError
from belep.ledger.block import NodeId
from belep.net.handshake import (
    HandshakeResult,
    InitiatorHandshake,
    LocalIdentity,
    ResponderHandshake,
)
from belep.net.session import (
    Close,
    Message,
    Ping,
    SessionCipher,
    compute_max_payload,
    decode_record,
    encode_channel,
    encode_close,
    encode_message,
    encode_ping,
)
from belep.net.wire import FrameDecoder, Limits, encode_frame

__all__ = [
    "Close",
    "ConnectionCore",
    "ConnectionEvent",
    "ConnectionState",
    "Established",
    "Message",
    "Ping",
    "SendBytes",
]


class ConnectionState(Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SendBytes:
    """Bytes the host must write to the connection (handshake messages)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Established:
    """The peer proved its node key; records may flow."""

    result: HandshakeResult


ConnectionEvent = SendBytes | Established | Message | Ping | Close


class ConnectionCore:
    """Framing, handshake and record layer of one connection, without I/O."""

    __slots__ = (
        "_cipher",
        "_decoder",
        "_hello_received",
        "_initiator",
        "_limits",
        "_responder",
        "frames_received",
        "frames_sent",
        "result",
        "state",
    )

    def __init__(
        self,
        limits: Limits,
        *,
        initiator: InitiatorHandshake | None = None,
        responder: ResponderHandshake | None = None,
    ) -> None:
        if (initiator is None) == (responder is None):
            raise ValueError("a connection is either an initiator or a responder")
        self._limits = limits
        self._initiator = initiator
        self._responder = responder
        self._decoder = FrameDecoder(limits.handshake_max_frame)
        self._cipher: SessionCipher | None = None
        self._hello_received = False
        self.state = ConnectionState.HANDSHAKE
        self.result: HandshakeResult | None = None
        self.frames_received = 0
        self.frames_sent = 0

    @classmethod
    def dialing(
        cls,
        local: LocalIdentity,
        limits: Limits,
        peer: NodeId,
        peer_key: PublicKey,
        ephemeral: X25519PrivateKey | None = None,
    ) -> ConnectionCore:
        """The side that opened the TCP connection to ``peer``."""
        return cls(limits, initiator=InitiatorHandshake(local, peer, peer_key, ephemeral))

    @classmethod
    def accepting(
        cls,
        local: LocalIdentity,
        limits: Limits,
        peers: Mapping[NodeId, PublicKey],
        ephemeral: X25519PrivateKey | None = None,
    ) -> ConnectionCore:
        """The side that accepted a TCP connection from a peer in ``peers``."""
        return cls(limits, responder=ResponderHandshake(local, peers, ephemeral))

    @property
    def is_open(self) -> bool:
        return self.state is ConnectionState.OPEN

    def initial_bytes(self) -> bytes:
        """What the host writes first: HELLO for an initiator, nothing for a responder."""
        if self._initiator is None:
            return b""
        return encode_frame(self._initiator.hello())

    def receive_data(self, data: bytes) -> list[ConnectionEvent]:
        """Consume bytes read from the connection; return the resulting events."""
        if self.state is ConnectionState.CLOSED:
            raise NetworkError("connection is closed")
        try:
            return self._receive(data)
        except PeerRejected:
            self.state = ConnectionState.CLOSED
            raise

    def _receive(self, data: bytes) -> list[ConnectionEvent]:
        self._decoder.feed(data)
        events: list[ConnectionEvent] = []
        next_frame = self._decoder.next_frame
        while (body := next_frame()) is not None:
            self.frames_received += 1
            cipher = self._cipher
            if cipher is not None:
                record = decode_record(cipher.open(body))
                events.append(record)
                if isinstance(record, Close):
                    self.state = ConnectionState.CLOSED
                    break
            else:
                events.extend(self._on_handshake_frame(body))
        return events

    def _on_handshake_frame(self, body: bytes) -> list[ConnectionEvent]:
        if self._initiator is not None:
            finish, result = self._initiator.on_reply(body)
            self._open(result)
            return [SendBytes(encode_frame(finish)), Established(result)]
        if self._responder is None:  # unreachable: the constructor requires one role
            raise ValueError("connection has no handshake role")
        if not self._hello_received:
            reply = self._responder.on_hello(body)
            self._hello_received = True
            return [SendBytes(encode_frame(reply))]
        result = self._responder.on_finish(body)
        self._open(result)
        return [Established(result)]

    def _open(self, result: HandshakeResult) -> None:
        self.result = result
        self._cipher = SessionCipher(result.send_key, result.recv_key)
        self._decoder.max_frame_size = self._limits.max_frame_size
        self.state = ConnectionState.OPEN

    # -- sending ---------------------------------------------------------------

    def max_payload(self, channel: str) -> int:
        """Largest payload :meth:`seal_message` accepts on ``channel``."""
        return compute_max_payload(self._limits.max_frame_size, encode_channel(channel))

    def seal_message(self, channel: str, payload: bytes) -> bytes:
        """Wire bytes of one MESSAGE frame; raises :class:`ValidationError` if too large."""
        raw_channel = encode_channel(channel)
        limit = compute_max_payload(self._limits.max_frame_size, raw_channel)
        if len(payload) > limit:
            raise ValidationError(
                "message too large for one frame", expected=f"<= {limit}", found=len(payload)
            )
        return self._seal(encode_message(raw_channel, payload))

    def seal_ping(self) -> bytes:
        """Wire bytes of one PING frame."""
        return self._seal(encode_ping())

    def seal_close(self, reason: str) -> bytes:
        """Wire bytes of one CLOSE frame; nothing may be sealed after it."""
        data = self._seal(encode_close(reason))
        self.state = ConnectionState.CLOSED
        return data

    def _seal(self, record: bytes) -> bytes:
        cipher = self._cipher
        if cipher is None or self.state is not ConnectionState.OPEN:
            raise NetworkError(f"connection is not open (state {self.state.value})")
        self.frames_sent += 1
        return encode_frame(cipher.seal(record))
