"""Raft message codecs: round trips, strict decoding, and the invariants each record enforces."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from belep.consensus.raft_cert import append_statement, sign_append
from belep.consensus.raft_messages import (
    RAFT_MESSAGE_DECODERS,
    RAFT_MESSAGE_TYPES,
    AppendEntries,
    AppendResponse,
    ForwardRequests,
    InstallSnapshot,
    InstallSnapshotResponse,
    RaftMessage,
    RequestVote,
    VoteResponse,
    decode_raft_message,
    decode_raft_message_bytes,
    encode_raft_message,
)
from belep.crypto import PrivateKey
from belep.encoding import encode
from belep.errors import EncodingError, SchemaError, ValidationError
from belep.ledger.block import (
    ZERO_HASH,
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    make_block,
)

DOMAIN = DomainId("station-1")
KEY = PrivateKey.from_seed(b"\x07" * 32)


def chain(terms: list[int], start: int = 1, prev: Digest = ZERO_HASH) -> tuple[Block, ...]:
    blocks = []
    for offset, term in enumerate(terms):
        block = make_block(
            domain=DOMAIN,
            height=Height(start + offset),
            epoch=Epoch(0),
            view=View(term),
            prev_hash=prev,
            transactions=(Transaction(f"t{start + offset}".encode()),),
            timestamp_ms=10 * offset,
            proposer=NodeId("n0"),
        )
        blocks.append(block)
        prev = block.block_hash
    return tuple(blocks)


def certificate(block: Block, term: int) -> QuorumCertificate:
    statement = append_statement(DOMAIN, View(term), block.height, block.block_hash)
    return QuorumCertificate(statement, ((NodeId("n0"), sign_append(KEY, statement)),))


BLOCKS = chain([1, 2, 2])
SAMPLES: list[RaftMessage] = [
    RequestVote(View(3), Height(7), View(2), pre_vote=True),
    RequestVote(View(3), Height(0), View(0), pre_vote=False),
    VoteResponse(View(4), True, pre_vote=False),
    AppendEntries(View(2), Height(0), View(0), BLOCKS, Height(1), (certificate(BLOCKS[0], 2),)),
    AppendEntries(View(5), Height(9), View(4), (), Height(9)),
    AppendResponse(View(2), True, Height(3), Height(0), Height(1), ((Height(2), b"s" * 64),)),
    AppendResponse(View(2), False, Height(0), Height(4), Height(1)),
    InstallSnapshot(View(6), Height(40), View(5), Digest(b"\x01" * 32)),
    InstallSnapshotResponse(View(6), Height(12)),
    ForwardRequests((Transaction(b"a"), Transaction(b"b"))),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_its_wire_form_and_bytes(message: RaftMessage) -> None:
    assert decode_raft_message(message.to_wire()) == message
    data = encode_raft_message(message)
    assert decode_raft_message_bytes(data) == message
    assert encode_raft_message(decode_raft_message_bytes(data)) == data


def test_the_registry_names_every_message_type_once() -> None:
    assert sorted(RAFT_MESSAGE_DECODERS) == sorted(t.TAG for t in RAFT_MESSAGE_TYPES)
    assert all(tag.startswith("raft/") for tag in RAFT_MESSAGE_DECODERS)


@given(
    term=st.integers(0, 2**63),
    index=st.integers(0, 2**63),
    last_term=st.integers(0, 2**63),
    pre_vote=st.booleans(),
)
def test_request_vote_round_trips(term: int, index: int, last_term: int, pre_vote: bool) -> None:
    if last_term > term:
        with pytest.raises(SchemaError):
            RequestVote(View(term), Height(index), View(last_term), pre_vote)
        return
    message = RequestVote(View(term), Height(index), View(last_term), pre_vote)
    assert decode_raft_message_bytes(encode_raft_message(message)) == message


@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_fail_with_a_validation_error(data: bytes) -> None:
    with contextlib.suppress(ValidationError):
        decode_raft_message_bytes(data)


def wire_of(message: RaftMessage) -> dict[str, object]:
    return dict(message.to_wire())


@pytest.mark.parametrize(
    ("change", "error"),
    [
        pytest.param(lambda w: w.update(extra=1), EncodingError, id="unexpected field"),
        pytest.param(lambda w: w.pop("term"), EncodingError, id="missing field"),
        pytest.param(lambda w: w.update(type="raft/nope"), SchemaError, id="unknown type"),
        pytest.param(lambda w: w.update(term=True), EncodingError, id="bool is not an int"),
        pytest.param(lambda w: w.update(term=-1), EncodingError, id="negative term"),
        pytest.param(lambda w: w.update(pre_vote=1), EncodingError, id="int is not a bool"),
        pytest.param(lambda w: w.update(last_log_term=9), SchemaError, id="log term above term"),
    ],
)
def test_strict_decoding_names_what_is_wrong(change: object, error: type[Exception]) -> None:
    wire = wire_of(SAMPLES[0])
    change(wire)  # type: ignore[operator]
    with pytest.raises(error):
        decode_raft_message(wire)  # type: ignore[arg-type]


def test_a_message_of_one_type_is_not_accepted_as_another() -> None:
    wire = wire_of(SAMPLES[2])
    wire["type"] = RequestVote.TAG
    with pytest.raises(EncodingError):
        decode_raft_message(wire)  # type: ignore[arg-type]
    with pytest.raises(SchemaError):
        VoteResponse.from_wire(wire)  # type: ignore[arg-type]


def test_decoding_is_canonical_only() -> None:
    data = encode_raft_message(SAMPLES[0])
    with pytest.raises(EncodingError):
        decode_raft_message_bytes(data + b"\x00")
    with pytest.raises(EncodingError):
        decode_raft_message_bytes(encode([1, 2]))


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda: AppendEntries(View(2), Height(1), View(1), BLOCKS, Height(0)),
            id="entries not after prev_log_index",
        ),
        pytest.param(
            lambda: AppendEntries(View(2), Height(0), View(0), (BLOCKS[0], BLOCKS[2]), Height(0)),
            id="entries not consecutive",
        ),
        pytest.param(
            lambda: AppendEntries(
                View(2), Height(0), View(0), (BLOCKS[0], chain([2], start=2)[0]), Height(0)
            ),
            id="entries not hash-linked",
        ),
        pytest.param(
            lambda: AppendEntries(View(1), Height(0), View(0), BLOCKS, Height(0)),
            id="entry term above message term",
        ),
        pytest.param(
            lambda: AppendEntries(View(3), Height(0), View(0), chain([2, 1]), Height(0)),
            id="entry terms decrease",
        ),
        pytest.param(
            lambda: AppendEntries(View(3), Height(0), View(1), (), Height(0)),
            id="height 0 with a term",
        ),
        pytest.param(
            lambda: AppendEntries(
                View(3),
                Height(0),
                View(0),
                BLOCKS,
                Height(0),
                (certificate(BLOCKS[1], 2), certificate(BLOCKS[0], 2)),
            ),
            id="certificates out of order",
        ),
        pytest.param(
            lambda: AppendResponse(
                View(2), False, Height(0), Height(1), Height(0), ((Height(1), b"s"),)
            ),
            id="signatures on a rejection",
        ),
        pytest.param(
            lambda: AppendResponse(
                View(2), True, Height(1), Height(0), Height(0), ((Height(2), b"s"),)
            ),
            id="signature above the match index",
        ),
        pytest.param(
            lambda: InstallSnapshot(View(2), Height(0), View(0), Digest(b"\x00" * 32)),
            id="empty snapshot",
        ),
        pytest.param(lambda: ForwardRequests(()), id="nothing forwarded"),
    ],
)
def test_malformed_messages_cannot_be_built(build: object) -> None:
    with pytest.raises(SchemaError):
        build()  # type: ignore[operator]
