"""The mutual-authentication handshake of the BELEP transport (``belep-net/1``).

Three messages, each one frame body in canonical CBOR (``docs/spec/transport.md`` §3)::

    initiator -> responder   HELLO  {t, v, net, from, to, eph, inc}
    responder -> initiator   REPLY  {t, from, eph, inc, sig}
    initiator -> responder   FINISH {t, sig}

``eph`` are fresh X25519 public keys; ``inc`` the sender's incarnation (random
per process start, used to resolve duplicate connections). Both sides compute
the transcript hash ``th = SHA-256(encode([label, HELLO, REPLY-without-sig]))``
— it covers the network id, both node ids, both ephemeral keys and both
incarnations — and each signs it with its Ed25519 node key under a distinct
role label. Session keys come from HKDF-SHA256 over the X25519 shared secret
with ``th`` as salt: one key per direction.

Invariants:

* a responder looks up the claimed initiator in the caller's allowed set
  *before* doing any public-key work, and finishes only after the
  initiator's signature verifies; an initiator finishes only after the
  responder it dialed signed the transcript;
* an invalid message raises :class:`PeerRejected` and yields no keys;
* the long-term key never leaves the process: only node ids travel, keys
  come from the caller's map (the genesis).

This module does no I/O; ephemeral keys may be injected for test vectors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from belep.crypto import PrivateKey, PublicKey, sha256
from belep.encoding import (
    Key,
    Value,
    decode,
    encode,
    expect_bytes,
    expect_fields,
    expect_int,
    expect_map,
    expect_str,
)
from belep.errors import ConfigError, EncodingError, PeerRejected
from belep.ledger.block import NodeId
from belep.net.wire import RejectReason

PROTOCOL_VERSION = 1
TRANSCRIPT_LABEL = "belep-net/1 transcript"
RESPONDER_LABEL = b"belep-net/1 responder signature\x00"
INITIATOR_LABEL = b"belep-net/1 initiator signature\x00"
KEYS_LABEL = b"belep-net/1 session keys"
EPHEMERAL_SIZE = 32
INCARNATION_SIZE = 16
SESSION_KEY_SIZE = 32
MAX_NETWORK_ID = 64
MAX_NODE_ID = 128
MAX_SIGNATURE = 256

_HELLO_FIELDS = frozenset({"t", "v", "net", "from", "to", "eph", "inc"})
_REPLY_FIELDS = frozenset({"t", "from", "eph", "inc", "sig"})
_FINISH_FIELDS = frozenset({"t", "sig"})


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """Who this side is: node id, node key, network and incarnation."""

    node_id: NodeId
    key: PrivateKey
    network_id: bytes
    incarnation: bytes

    def __post_init__(self) -> None:
        if not 0 < len(self.node_id.encode("utf-8")) <= MAX_NODE_ID:
            raise ConfigError("node id has a bad length", expected=f"1..{MAX_NODE_ID} bytes")
        if not 0 < len(self.network_id) <= MAX_NETWORK_ID:
            raise ConfigError(
                "network id has a bad length",
                expected=f"1..{MAX_NETWORK_ID} bytes",
                found=len(self.network_id),
            )
        if len(self.incarnation) != INCARNATION_SIZE:
            raise ConfigError(
                "incarnation has a bad length",
                expected=INCARNATION_SIZE,
                found=len(self.incarnation),
            )


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """An authenticated session: who the peer is and the keys for each direction."""

    peer: NodeId
    initiator: NodeId
    peer_incarnation: bytes
    session_id: bytes
    send_key: bytes = field(repr=False)
    recv_key: bytes = field(repr=False)


def compute_transcript_hash(hello: bytes, reply_unsigned: bytes) -> bytes:
    """``th``: SHA-256 over the HELLO bytes and the REPLY bytes without its signature."""
    return sha256(encode([TRANSCRIPT_LABEL, hello, reply_unsigned]))


def compute_session_keys(shared_secret: bytes, transcript_hash: bytes) -> tuple[bytes, bytes]:
    """(initiator-to-responder key, responder-to-initiator key) by HKDF-SHA256."""
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=2 * SESSION_KEY_SIZE,
        salt=transcript_hash,
        info=KEYS_LABEL,
    ).derive(shared_secret)
    return okm[:SESSION_KEY_SIZE], okm[SESSION_KEY_SIZE:]


@dataclass(frozen=True, slots=True)
class Hello:
    """HELLO: the initiator names itself, the node it dialed and its ephemeral key."""

    network_id: bytes
    sender: NodeId
    recipient: NodeId
    ephemeral: bytes
    incarnation: bytes

    def to_bytes(self) -> bytes:
        return encode(
            {
                "t": "hello",
                "v": PROTOCOL_VERSION,
                "net": self.network_id,
                "from": self.sender,
                "to": self.recipient,
                "eph": self.ephemeral,
                "inc": self.incarnation,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Hello:
        """Parse strictly; an unsupported version is ``wrong_version``."""
        with _malformed("hello"):
            fields = _decode_message(data, "hello")
            version = expect_int(fields.get("v"), "hello.v", minimum=0)
            if version != PROTOCOL_VERSION:
                raise PeerRejected(
                    RejectReason.WRONG_VERSION,
                    "unsupported transport version",
                    expected=PROTOCOL_VERSION,
                    found=version,
                )
            expect_fields(fields, "hello", _HELLO_FIELDS)
            network_id = expect_bytes(fields["net"], "hello.net")
            if not 0 < len(network_id) <= MAX_NETWORK_ID:
                raise EncodingError(
                    "hello.net: bad length", expected=f"1..{MAX_NETWORK_ID}", found=len(network_id)
                )
            return cls(
                network_id=network_id,
                sender=_expect_node_id(fields["from"], "hello.from"),
                recipient=_expect_node_id(fields["to"], "hello.to"),
                ephemeral=expect_bytes(fields["eph"], "hello.eph", size=EPHEMERAL_SIZE),
                incarnation=expect_bytes(fields["inc"], "hello.inc", size=INCARNATION_SIZE),
            )


@dataclass(frozen=True, slots=True)
class Reply:
    """REPLY: the responder's id, ephemeral key and signature over the transcript."""

    sender: NodeId
    ephemeral: bytes
    incarnation: bytes
    signature: bytes

    def unsigned_bytes(self) -> bytes:
        """The REPLY without its signature: the part the transcript covers."""
        return encode(self._fields())

    def to_bytes(self) -> bytes:
        return encode({**self._fields(), "sig": self.signature})

    def _fields(self) -> dict[str, Value]:
        return {
            "t": "reply",
            "from": self.sender,
            "eph": self.ephemeral,
            "inc": self.incarnation,
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> Reply:
        with _malformed("reply"):
            fields = _decode_message(data, "reply")
            expect_fields(fields, "reply", _REPLY_FIELDS)
            return cls(
                sender=_expect_node_id(fields["from"], "reply.from"),
                ephemeral=expect_bytes(fields["eph"], "reply.eph", size=EPHEMERAL_SIZE),
                incarnation=expect_bytes(fields["inc"], "reply.inc", size=INCARNATION_SIZE),
                signature=_expect_signature(fields["sig"], "reply.sig"),
            )


@dataclass(frozen=True, slots=True)
class Finish:
    """FINISH: the initiator's signature over the transcript."""

    signature: bytes

    def to_bytes(self) -> bytes:
        return encode({"t": "finish", "sig": self.signature})

    @classmethod
    def from_bytes(cls, data: bytes) -> Finish:
        with _malformed("finish"):
            fields = _decode_message(data, "finish")
            expect_fields(fields, "finish", _FINISH_FIELDS)
            return cls(signature=_expect_signature(fields["sig"], "finish.sig"))


class InitiatorHandshake:
    """The dialing side: sends HELLO, checks REPLY, answers FINISH."""

    def __init__(
        self,
        local: LocalIdentity,
        peer: NodeId,
        peer_key: PublicKey,
        ephemeral: X25519PrivateKey | None = None,
    ) -> None:
        self._local = local
        self._peer = peer
        self._peer_key = peer_key
        self._ephemeral = ephemeral if ephemeral is not None else X25519PrivateKey.generate()
        self._hello = Hello(
            network_id=local.network_id,
            sender=local.node_id,
            recipient=peer,
            ephemeral=self._ephemeral.public_key().public_bytes_raw(),
            incarnation=local.incarnation,
        ).to_bytes()

    def hello(self) -> bytes:
        """The HELLO message."""
        return self._hello

    def on_reply(self, data: bytes) -> tuple[bytes, HandshakeResult]:
        """Check REPLY; return the FINISH message and the session."""
        reply = Reply.from_bytes(data)
        if reply.sender != self._peer:
            raise PeerRejected(
                RejectReason.UNEXPECTED_PEER,
                "the dialed address answered as another node",
                expected=self._peer,
                found=reply.sender,
            )
        transcript = compute_transcript_hash(self._hello, reply.unsigned_bytes())
        if not self._peer_key.is_valid_signature(RESPONDER_LABEL + transcript, reply.signature):
            raise PeerRejected(
                RejectReason.BAD_SIGNATURE,
                "responder did not prove its node key",
                where=f"peer {reply.sender}",
            )
        shared = _exchange(self._ephemeral, reply.ephemeral)
        to_responder, to_initiator = compute_session_keys(shared, transcript)
        finish = Finish(self._local.key.sign(INITIATOR_LABEL + transcript)).to_bytes()
        result = HandshakeResult(
            peer=self._peer,
            initiator=self._local.node_id,
            peer_incarnation=reply.incarnation,
            session_id=transcript[:8],
            send_key=to_responder,
            recv_key=to_initiator,
        )
        return finish, result


class ResponderHandshake:
    """The accepting side: checks HELLO, sends REPLY, checks FINISH."""

    def __init__(
        self,
        local: LocalIdentity,
        peers: Mapping[NodeId, PublicKey],
        ephemeral: X25519PrivateKey | None = None,
    ) -> None:
        self._local = local
        self._peers = peers
        self._ephemeral = ephemeral if ephemeral is not None else X25519PrivateKey.generate()
        self._pending: tuple[Hello, PublicKey, bytes] | None = None

    def on_hello(self, data: bytes) -> bytes:
        """Check HELLO against the allowed peers; return the REPLY message."""
        if self._pending is not None:
            raise PeerRejected(RejectReason.MALFORMED_HANDSHAKE, "second HELLO")
        hello = Hello.from_bytes(data)
        if hello.network_id != self._local.network_id:
            raise PeerRejected(
                RejectReason.WRONG_NETWORK,
                "peer belongs to another network",
                expected=self._local.network_id,
                found=hello.network_id,
            )
        if hello.recipient != self._local.node_id:
            raise PeerRejected(
                RejectReason.UNEXPECTED_PEER,
                "peer dialed another node at this address",
                expected=self._local.node_id,
                found=hello.recipient,
            )
        if hello.sender == self._local.node_id:
            raise PeerRejected(RejectReason.SELF_CONNECTION, "connection from this node's own id")
        peer_key = self._peers.get(hello.sender)
        if peer_key is None:
            raise PeerRejected(
                RejectReason.UNKNOWN_PEER, "node id is not in the allowed set", found=hello.sender
            )
        unsigned = Reply(
            sender=self._local.node_id,
            ephemeral=self._ephemeral.public_key().public_bytes_raw(),
            incarnation=self._local.incarnation,
            signature=b"",
        )
        transcript = compute_transcript_hash(data, unsigned.unsigned_bytes())
        signature = self._local.key.sign(RESPONDER_LABEL + transcript)
        self._pending = (hello, peer_key, transcript)
        return Reply(
            unsigned.sender, unsigned.ephemeral, unsigned.incarnation, signature
        ).to_bytes()

    def on_finish(self, data: bytes) -> HandshakeResult:
        """Check FINISH; return the session."""
        if self._pending is None:
            raise PeerRejected(RejectReason.MALFORMED_HANDSHAKE, "FINISH before HELLO")
        hello, peer_key, transcript = self._pending
        finish = Finish.from_bytes(data)
        if not peer_key.is_valid_signature(INITIATOR_LABEL + transcript, finish.signature):
            raise PeerRejected(
                RejectReason.BAD_SIGNATURE,
                "initiator did not prove its node key",
                where=f"peer {hello.sender}",
            )
        shared = _exchange(self._ephemeral, hello.ephemeral)
        to_responder, to_initiator = compute_session_keys(shared, transcript)
        return HandshakeResult(
            peer=hello.sender,
            initiator=hello.sender,
            peer_incarnation=hello.incarnation,
            session_id=transcript[:8],
            send_key=to_initiator,
            recv_key=to_responder,
        )


@contextmanager
def _malformed(kind: str) -> Iterator[None]:
    """Turn encoding errors while parsing ``kind`` into ``malformed_handshake`` rejects."""
    try:
        yield
    except EncodingError as exc:
        raise PeerRejected(
            RejectReason.MALFORMED_HANDSHAKE,
            f"malformed {kind}: {exc.message}",
            expected=exc.expected,
            found=exc.found,
        ) from exc


def _decode_message(data: bytes, kind: str) -> dict[Key, Value]:
    """Decode a handshake message and check that its type is ``kind``."""
    value = expect_map(decode(data), kind)
    message_type = value.get("t")
    if message_type != kind:
        raise PeerRejected(
            RejectReason.MALFORMED_HANDSHAKE,
            "unexpected handshake message",
            expected=kind,
            found=message_type,
        )
    return value


def _expect_node_id(value: Value, what: str) -> NodeId:
    text = expect_str(value, what)
    if not 0 < len(text.encode("utf-8")) <= MAX_NODE_ID:
        raise EncodingError(
            f"{what}: bad length", expected=f"1..{MAX_NODE_ID} bytes", found=len(text)
        )
    return NodeId(text)


def _expect_signature(value: Value, what: str) -> bytes:
    signature = expect_bytes(value, what)
    if len(signature) > MAX_SIGNATURE:
        raise EncodingError(
            f"{what}: bad length", expected=f"<= {MAX_SIGNATURE}", found=len(signature)
        )
    return signature


def _exchange(ephemeral: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        return ephemeral.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # low-order point: all-zero shared secret
        raise PeerRejected(
            RejectReason.BAD_KEY_EXCHANGE, "ephemeral key gives no shared secret"
        ) from exc
