"""PBFT wire messages: round trips through bytes, the tag registry, strict decoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pbft_cluster import DOMAIN, GENESIS, node_ids, node_key

from belep.consensus.messages import MAX_VIEW, TYPE_KEY
from belep.consensus.pbft_messages import (
    PBFT_MESSAGE_TYPES,
    Checkpoint,
    Commit,
    ForwardRequests,
    NewView,
    Prepare,
    PreparedEntry,
    PrePrepare,
    StatusReply,
    StatusRequest,
    ViewChange,
)
from belep.consensus.registry import (
    MESSAGE_DECODERS,
    PROTOCOLS,
    decode_message,
    encode_message,
    message_from_wire,
)
from belep.encoding import decode, encode
from belep.errors import EncodingError, SchemaError, ValidationError
from belep.ledger.block import (
    Digest,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
    make_block,
)

IDS = node_ids(4)


def _block(height: int = 1, txs: int = 3) -> object:
    return make_block(
        domain=DOMAIN,
        height=Height(height),
        epoch=Epoch(0),
        view=View(1),
        prev_hash=GENESIS,
        transactions=tuple(Transaction(b"t%d" % i) for i in range(txs)),
        timestamp_ms=1234,
        proposer=IDS[1],
    )


def _statement(kind: str, height: int = 1) -> VoteStatement:
    return VoteStatement(kind, DOMAIN, Epoch(0), View(1), Height(height), Digest(b"\x07" * 32))


def _qc(kind: str, height: int = 1, signers: int = 3) -> QuorumCertificate:
    s = _statement(kind, height)
    return QuorumCertificate(
        s, tuple((m, node_key(m).sign(s.signing_bytes())) for m in IDS[:signers])
    )


def _view_change() -> ViewChange:
    block = _block()
    s = VoteStatement("prepare", DOMAIN, Epoch(0), View(1), Height(1), block.block_hash)  # type: ignore[attr-defined]
    cert = QuorumCertificate(s, tuple((m, node_key(m).sign(s.signing_bytes())) for m in IDS[:3]))
    return ViewChange(
        DOMAIN,
        View(2),
        IDS[0],
        _qc("checkpoint", 4),
        (PreparedEntry(cert, block),),  # type: ignore[arg-type]
        b"\x01" * 64,
    )


def samples() -> list[object]:
    vc = _view_change()
    return [
        PrePrepare(View(1), _block()),  # type: ignore[arg-type]
        Prepare(_statement("prepare"), b"\x02" * 64),
        Commit(_statement("commit"), b"\x03" * 64),
        Checkpoint(_statement("checkpoint", 4), b"\x04" * 64),
        vc,
        ViewChange(DOMAIN, View(3), IDS[1], None, (), b"\x05" * 64),
        NewView(DOMAIN, View(2), (vc,), b"\x06" * 64),
        ForwardRequests((Transaction(b"a"), Transaction(b""))),
        StatusRequest(),
        StatusReply(View(5), None),
        StatusReply(View(5), _qc("checkpoint", 8)),
    ]


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_round_trip_through_bytes(message: object) -> None:
    data = encode_message(message)  # type: ignore[arg-type]
    back = decode_message(data)
    assert back == message
    assert type(back) is type(message)
    assert encode_message(back) == data  # type: ignore[arg-type]


def test_every_pbft_type_is_registered_with_a_unique_tag() -> None:
    tags = [t.TAG for t in PBFT_MESSAGE_TYPES]
    assert len(set(tags)) == len(tags)
    for t in PBFT_MESSAGE_TYPES:
        assert t.TAG.startswith("pbft/")
        assert MESSAGE_DECODERS[t.TAG] == t.from_wire
    assert {type(m) for m in samples()} == set(PBFT_MESSAGE_TYPES)
    assert "pbft" in PROTOCOLS


def test_signed_messages_sign_what_they_carry() -> None:
    vc = _view_change()
    moved = ViewChange(vc.domain, View(9), vc.replica, vc.stable, vc.prepared, vc.signature)
    assert moved.signing_bytes() != vc.signing_bytes()
    nv = NewView(DOMAIN, View(2), (vc,), b"")
    assert NewView(DOMAIN, View(3), (vc,), b"").signing_bytes() != nv.signing_bytes()
    vote = Prepare(_statement("prepare"), b"")
    assert vote.signing_bytes() == _statement("prepare").signing_bytes()


@pytest.mark.parametrize(
    ("case", "mutate"),
    [
        ("unknown tag", lambda m: {**m, TYPE_KEY: "pbft/unknown"}),
        ("missing field", lambda m: {k: v for k, v in m.items() if k != "signature"}),
        ("extra field", lambda m: {**m, "extra": 1}),
        ("tag is not text", lambda m: {**m, TYPE_KEY: 7}),
        (
            "statement hash too short",
            lambda m: {**m, "statement": {**m["statement"], "block_hash": b"\x00"}},
        ),
        ("negative view", lambda m: {**m, "statement": {**m["statement"], "view": -1}}),
        ("signature not bytes", lambda m: {**m, "signature": "sig"}),
        ("signature too long", lambda m: {**m, "signature": b"\x00" * 600}),
    ],
)
def test_strict_decoding_rejects_malformed_votes(case: str, mutate: object) -> None:
    wire = Prepare(_statement("prepare"), b"\x02" * 64).to_wire()
    bad = mutate(wire)  # type: ignore[operator]
    with pytest.raises(ValidationError):
        decode_message(encode(bad))


def test_decoding_errors_name_what_was_expected() -> None:
    with pytest.raises(SchemaError) as info:
        message_from_wire({TYPE_KEY: "pbft/nope"})
    assert "pbft/prepare" in str(info.value)
    with pytest.raises(EncodingError):
        decode_message(b"\xff")
    wire = PrePrepare(View(1), _block()).to_wire()  # type: ignore[arg-type]
    wire["block"]["header"]["prev_hash"] = b"short"  # type: ignore[index]
    with pytest.raises(EncodingError) as info2:
        decode_message(encode(wire))
    assert "prev_hash" in str(info2.value)


def test_wrong_tag_for_the_type_is_refused() -> None:
    wire = Commit(_statement("commit"), b"\x03" * 64).to_wire()
    with pytest.raises(SchemaError):
        Prepare.from_wire(wire)


def test_prepared_entry_and_new_view_limits() -> None:
    wire = NewView(DOMAIN, View(2), (), b"").to_wire()
    wire["view_changes"] = [{}] * 2000
    with pytest.raises(SchemaError):
        NewView.from_wire(decode(encode(wire)))


@settings(max_examples=60, deadline=None)
@given(
    view=st.integers(min_value=0, max_value=2**40),
    height=st.integers(min_value=0, max_value=2**40),
    digest=st.binary(min_size=32, max_size=32),
    signature=st.binary(max_size=128),
    kind=st.sampled_from(["prepare", "commit", "checkpoint"]),
    sender=st.text(min_size=1, max_size=8),
)
def test_vote_round_trip_property(
    view: int, height: int, digest: bytes, signature: bytes, kind: str, sender: str
) -> None:
    s = VoteStatement(kind, DOMAIN, Epoch(0), View(view), Height(height), Digest(digest))
    for cls in (Prepare, Commit, Checkpoint):
        message = cls(s, signature)
        assert decode_message(encode_message(message)) == message
    reply = StatusReply(View(view), None)
    assert decode_message(encode_message(reply)) == reply
    vc = ViewChange(DOMAIN, View(view), NodeId(sender), None, (), signature)
    assert decode_message(encode_message(vc)) == vc


@settings(max_examples=40, deadline=None)
@given(payloads=st.lists(st.binary(max_size=64), max_size=20))
def test_forward_requests_round_trip_property(payloads: list[bytes]) -> None:
    message = ForwardRequests(tuple(Transaction(p) for p in payloads))
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize("view", [MAX_VIEW + 1, 2**64 - 1], ids=["just-above", "uint64-max"])
def test_a_peer_cannot_name_an_absurd_view(view: int) -> None:
    """A Byzantine peer naming a view near 2**64 is refused at decoding: otherwise the
    replica's own `view + 1` would no longer encode and its host would fail."""
    data = encode_message(StatusReply(view=View(view), stable=None))
    with pytest.raises(EncodingError, match="view: out of range"):
        decode_message(data)
    assert decode_message(encode_message(StatusReply(view=View(MAX_VIEW), stable=None))) == (
        StatusReply(view=View(MAX_VIEW), stable=None)
    )
