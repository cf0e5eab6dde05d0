"""The handshake: both sides prove their node keys over a transcript binding both
ephemeral keys; anything else is refused before a session exists."""

from __future__ import annotations

import hashlib
import os

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from net_testkit import NETWORK, allowed_keys, make_identity, node_key

from belep.crypto import PrivateKey
from belep.encoding import decode, encode
from belep.errors import ConfigError, PeerRejected
from belep.ledger.block import NodeId
from belep.net.handshake import (
    INITIATOR_LABEL,
    RESPONDER_LABEL,
    TRANSCRIPT_LABEL,
    Finish,
    Hello,
    InitiatorHandshake,
    LocalIdentity,
    Reply,
    ResponderHandshake,
    compute_session_keys,
    compute_transcript_hash,
)
from belep.net.wire import RejectReason

A, B, C = NodeId("node-a"), NodeId("node-b"), NodeId("node-c")


def initiator(
    node: str = "node-a", peer: NodeId = B, *, key: PrivateKey | None = None
) -> InitiatorHandshake:
    return InitiatorHandshake(make_identity(node, key=key), peer, node_key(peer).public_key)


def responder(node: str = "node-b", **kwargs: object) -> ResponderHandshake:
    return ResponderHandshake(make_identity(node, **kwargs), allowed_keys())  # type: ignore[arg-type]


def reason_of(excinfo: pytest.ExceptionInfo[PeerRejected]) -> str:
    return excinfo.value.reason


def test_a_full_handshake_agrees_on_keys_and_session() -> None:
    i, r = initiator(), responder()
    reply = r.on_hello(i.hello())
    finish, i_result = i.on_reply(reply)
    r_result = r.on_finish(finish)
    assert i_result.peer == B
    assert r_result.peer == A
    assert i_result.initiator == r_result.initiator == A
    assert i_result.send_key == r_result.recv_key
    assert i_result.recv_key == r_result.send_key
    assert i_result.send_key != i_result.recv_key
    assert i_result.session_id == r_result.session_id
    assert i_result.peer_incarnation == make_identity("node-b").incarnation
    assert r_result.peer_incarnation == make_identity("node-a").incarnation


def test_two_handshakes_give_different_keys() -> None:
    sessions = []
    for _ in range(2):
        i, r = initiator(), responder()
        finish, result = i.on_reply(r.on_hello(i.hello()))
        r.on_finish(finish)
        sessions.append(result)
    assert sessions[0].send_key != sessions[1].send_key
    assert sessions[0].session_id != sessions[1].session_id


def test_the_transcript_and_keys_follow_the_spec() -> None:
    """Recompute th and the signatures with an independent CBOR encoder (cbor2)."""
    e_i = X25519PrivateKey.from_private_bytes(b"\x11" * 32)
    e_r = X25519PrivateKey.from_private_bytes(b"\x22" * 32)
    i = InitiatorHandshake(make_identity("node-a"), B, node_key("node-b").public_key, e_i)
    r = ResponderHandshake(make_identity("node-b"), allowed_keys(), e_r)
    hello = i.hello()
    reply_bytes = r.on_hello(hello)
    finish_bytes, result = i.on_reply(reply_bytes)
    reply = cbor2.loads(reply_bytes)
    unsigned = {k: v for k, v in reply.items() if k != "sig"}
    th = hashlib.sha256(
        cbor2.dumps([TRANSCRIPT_LABEL, hello, cbor2.dumps(unsigned, canonical=True)])
    ).digest()
    assert compute_transcript_hash(hello, encode(unsigned)) == th
    node_key("node-b").public_key.verify(RESPONDER_LABEL + th, reply["sig"])
    node_key("node-a").public_key.verify(INITIATOR_LABEL + th, cbor2.loads(finish_bytes)["sig"])
    shared = e_i.exchange(e_r.public_key())
    assert (result.send_key, result.recv_key) == compute_session_keys(shared, th)
    assert result.session_id == th[:8]
    assert cbor2.loads(hello) == {
        "t": "hello",
        "v": 1,
        "net": NETWORK,
        "from": "node-a",
        "to": "node-b",
        "eph": e_i.public_key().public_bytes_raw(),
        "inc": make_identity("node-a").incarnation,
    }


def test_a_wrong_key_initiator_is_refused_at_finish() -> None:
    """node-a's id with another key: the responder never yields a session."""
    impostor = initiator(key=PrivateKey.from_seed(b"\x99" * 32))
    r = responder()
    finish, _ = impostor.on_reply(r.on_hello(impostor.hello()))
    with pytest.raises(PeerRejected) as caught:
        r.on_finish(finish)
    assert reason_of(caught) == RejectReason.BAD_SIGNATURE


def test_a_wrong_key_responder_is_refused_by_the_initiator() -> None:
    i = initiator()
    impostor = ResponderHandshake(
        make_identity("node-b", key=PrivateKey.from_seed(b"\x98" * 32)), allowed_keys()
    )
    with pytest.raises(PeerRejected) as caught:
        i.on_reply(impostor.on_hello(i.hello()))
    assert reason_of(caught) == RejectReason.BAD_SIGNATURE


def test_a_finish_from_another_session_is_refused() -> None:
    """A recorded FINISH does not verify against a fresh responder ephemeral key."""
    i1, r1 = initiator(), responder()
    old_finish, _ = i1.on_reply(r1.on_hello(i1.hello()))
    r2 = responder()
    r2.on_hello(i1.hello())  # the attacker replays the recorded HELLO too
    with pytest.raises(PeerRejected) as caught:
        r2.on_finish(old_finish)
    assert reason_of(caught) == RejectReason.BAD_SIGNATURE


def test_a_reply_signed_for_another_initiator_is_refused() -> None:
    """Signatures bind the whole transcript: a REPLY meant for another HELLO fails."""
    i1, i2, r = initiator(), initiator(), responder()
    reply_for_i1 = r.on_hello(i1.hello())
    with pytest.raises(PeerRejected) as caught:
        i2.on_reply(reply_for_i1)
    assert reason_of(caught) == RejectReason.BAD_SIGNATURE


def _hello(**changes: object) -> bytes:
    fields = decode(initiator().hello())
    assert isinstance(fields, dict)
    fields.update(changes)
    return encode(fields)


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        pytest.param(
            lambda: _hello(net=b"other-network"), RejectReason.WRONG_NETWORK, id="wrong network"
        ),
        pytest.param(lambda: _hello(v=2), RejectReason.WRONG_VERSION, id="future version"),
        pytest.param(
            lambda: _hello(to="node-c"), RejectReason.UNEXPECTED_PEER, id="dialed another node"
        ),
        pytest.param(
            lambda: _hello(**{"from": "node-b"}), RejectReason.SELF_CONNECTION, id="own id"
        ),
        pytest.param(
            lambda: _hello(**{"from": "mallory"}), RejectReason.UNKNOWN_PEER, id="unknown node id"
        ),
        pytest.param(
            lambda: _hello(eph=b"\x01" * 31), RejectReason.MALFORMED_HANDSHAKE, id="short ephemeral"
        ),
        pytest.param(
            lambda: _hello(inc=b""), RejectReason.MALFORMED_HANDSHAKE, id="empty incarnation"
        ),
        pytest.param(lambda: _hello(extra=1), RejectReason.MALFORMED_HANDSHAKE, id="extra field"),
        pytest.param(
            lambda: _hello(t="reply"), RejectReason.MALFORMED_HANDSHAKE, id="wrong message type"
        ),
        pytest.param(
            lambda: _hello(**{"from": ""}), RejectReason.MALFORMED_HANDSHAKE, id="empty node id"
        ),
        pytest.param(
            lambda: _hello(**{"from": "x" * 129}),
            RejectReason.MALFORMED_HANDSHAKE,
            id="long node id",
        ),
        pytest.param(
            lambda: _hello(net=b""), RejectReason.MALFORMED_HANDSHAKE, id="empty network id"
        ),
        pytest.param(lambda: b"\xff\x00garbage", RejectReason.MALFORMED_HANDSHAKE, id="not cbor"),
        pytest.param(lambda: encode([1, 2, 3]), RejectReason.MALFORMED_HANDSHAKE, id="cbor array"),
        pytest.param(
            lambda: bytes.fromhex("a2617401617401"),
            RejectReason.MALFORMED_HANDSHAKE,
            id="duplicate map key",
        ),
    ],
)
def test_bad_hellos_are_refused_before_any_session(hello: object, reason: RejectReason) -> None:
    r = responder()
    with pytest.raises(PeerRejected) as caught:
        r.on_hello(hello())  # type: ignore[operator]
    assert reason_of(caught) == reason
    with pytest.raises(PeerRejected):  # and nothing was set up for a FINISH
        r.on_finish(Finish(b"\x00" * 64).to_bytes())


def test_an_unknown_peer_is_refused_before_any_signature_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*_: object) -> bytes:
        raise AssertionError("signed for an unknown peer")

    monkeypatch.setattr(PrivateKey, "sign", fail)
    hello = Hello(NETWORK, NodeId("mallory"), B, os.urandom(32), os.urandom(16)).to_bytes()
    with pytest.raises(PeerRejected) as caught:
        responder().on_hello(hello)
    assert reason_of(caught) == RejectReason.UNKNOWN_PEER


def test_a_reply_from_another_node_is_refused() -> None:
    """The initiator dialed node-b; node-c (a valid node) answers."""
    i = initiator(peer=B)
    r_c = ResponderHandshake(make_identity("node-c"), allowed_keys())
    hello = decode(i.hello())
    assert isinstance(hello, dict)
    hello["to"] = "node-c"
    with pytest.raises(PeerRejected) as caught:
        i.on_reply(r_c.on_hello(encode(hello)))
    assert reason_of(caught) == RejectReason.UNEXPECTED_PEER


def test_a_low_order_ephemeral_key_is_refused_by_the_responder() -> None:
    """Even a correctly signed handshake gets no session from a degenerate ephemeral key."""
    r = responder()
    hello = Hello(NETWORK, A, B, b"\x00" * 32, make_identity("node-a").incarnation).to_bytes()
    reply = Reply.from_bytes(r.on_hello(hello))
    th = compute_transcript_hash(hello, reply.unsigned_bytes())
    finish = Finish(node_key("node-a").sign(INITIATOR_LABEL + th)).to_bytes()
    with pytest.raises(PeerRejected) as caught:
        r.on_finish(finish)
    assert reason_of(caught) == RejectReason.BAD_KEY_EXCHANGE


def test_a_low_order_ephemeral_key_is_refused_by_the_initiator() -> None:
    i = initiator()
    unsigned = Reply(B, b"\x00" * 32, b"i" * 16, b"")
    th = compute_transcript_hash(i.hello(), unsigned.unsigned_bytes())
    signed = Reply(B, b"\x00" * 32, b"i" * 16, node_key("node-b").sign(RESPONDER_LABEL + th))
    with pytest.raises(PeerRejected) as caught:
        i.on_reply(signed.to_bytes())
    assert reason_of(caught) == RejectReason.BAD_KEY_EXCHANGE


def test_message_order_is_enforced() -> None:
    r = responder()
    with pytest.raises(PeerRejected) as caught:
        r.on_finish(Finish(b"\x00" * 64).to_bytes())
    assert reason_of(caught) == RejectReason.MALFORMED_HANDSHAKE
    i = initiator()
    r.on_hello(i.hello())
    with pytest.raises(PeerRejected) as caught:
        r.on_hello(i.hello())
    assert reason_of(caught) == RejectReason.MALFORMED_HANDSHAKE
    with pytest.raises(PeerRejected) as caught:
        i.on_reply(i.hello())
    assert reason_of(caught) == RejectReason.MALFORMED_HANDSHAKE


def test_an_oversized_signature_is_malformed() -> None:
    with pytest.raises(PeerRejected) as caught:
        Finish.from_bytes(encode({"t": "finish", "sig": b"\x00" * 257}))
    assert reason_of(caught) == RejectReason.MALFORMED_HANDSHAKE


@pytest.mark.parametrize(
    ("node", "network", "incarnation"),
    [
        pytest.param("", NETWORK, b"i" * 16, id="empty node id"),
        pytest.param("n", b"", b"i" * 16, id="empty network id"),
        pytest.param("n", b"x" * 65, b"i" * 16, id="long network id"),
        pytest.param("n", NETWORK, b"i" * 15, id="short incarnation"),
    ],
)
def test_local_identity_is_validated(node: str, network: bytes, incarnation: bytes) -> None:
    with pytest.raises(ConfigError):
        LocalIdentity(NodeId(node), node_key("node-a"), network, incarnation)
