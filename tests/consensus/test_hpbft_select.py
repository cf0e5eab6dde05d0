"""HPBFT's wire messages and the view-change lock: which chain a new view must re-propose,
and which reports are acceptable evidence."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hpbft_cluster import GENESIS, SEATS, STANDBYS, make_config, node_key, tx

from belep.consensus.certificates import SignatureCache
from belep.consensus.hpbft_messages import (
    HPBFT_MESSAGES,
    PREPARE_KIND,
    Certified,
    Checkpoint,
    EpochHint,
    Forward,
    NewView,
    PrePrepare,
    ReviveNotice,
    ReviveReport,
    ReviveStart,
    StandbyStatus,
    Status,
    ViewChange,
    Vote,
    report_signing_bytes,
)
from belep.consensus.hpbft_select import check_report, select_chain
from belep.consensus.registry import decode_message, encode_message
from belep.encoding import decode, encode
from belep.errors import (
    EncodingError,
    InvalidSignature,
    ProtocolViolation,
    SchemaError,
    UnknownSigner,
    ValidationError,
)
from belep.ledger.block import (
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    View,
    VoteStatement,
    make_block,
)
from belep.ledger.config_tx import (
    ReviveChild,
    SubstituteSeat,
    config_transaction,
    revive_order_from_block,
)

n0, n1, n2, n3 = SEATS
s0 = STANDBYS[0]
DOMAIN = make_config(n0).domain
KEYS = make_config(n0).keys
SEAT_KEYS = {s: KEYS[s] for s in SEATS}


def block_at(height: int, prev: Digest, marker: int, view: int = 0) -> Block:
    return make_block(
        domain=DOMAIN,
        height=Height(height),
        epoch=Epoch(0),
        view=View(view),
        prev_hash=prev,
        transactions=(tx(marker),),
        timestamp_ms=height,
        proposer=n0,
    )


def prepare_qc(
    block: Block, view: int, signers: tuple[NodeId, ...] = (n0, n1, n2)
) -> QuorumCertificate:
    statement = VoteStatement(
        PREPARE_KIND, DOMAIN, Epoch(0), View(view), block.height, block.block_hash
    )
    return QuorumCertificate(
        statement, tuple((s, node_key(s).sign(statement.signing_bytes())) for s in signers)
    )


def report(
    sender: NodeId, certs: list[tuple[QuorumCertificate, Block]], view: int = 5
) -> ViewChange:
    prepared = tuple(qc for qc, _ in certs)
    data = report_signing_bytes(ViewChange.TAG, Epoch(0), view, sender, None, prepared)
    return ViewChange(
        Epoch(0),
        View(view),
        sender,
        None,
        prepared,
        node_key(sender).sign(data),
        tuple(b for _, b in certs),
    )


def check(vc: ViewChange, *, with_blocks: bool = True) -> None:
    check_report(
        vc,
        domain=DOMAIN,
        epoch=Epoch(0),
        senders=SEAT_KEYS,
        voters=SEAT_KEYS,
        quorum=3,
        floor=0,
        cache=SignatureCache(),
        with_blocks=with_blocks,
    )


A1 = block_at(1, GENESIS, 1)
A2 = block_at(2, A1.block_hash, 2)
A3 = block_at(3, A2.block_hash, 3)
B2 = block_at(2, A1.block_hash, 20, view=1)
B3 = block_at(3, B2.block_hash, 30, view=1)


def test_the_highest_view_certificate_wins_at_each_height() -> None:
    reports = [
        report(n0, [(prepare_qc(A1, 0), A1), (prepare_qc(A2, 0), A2), (prepare_qc(A3, 0), A3)]),
        report(n1, [(prepare_qc(A1, 0), A1), (prepare_qc(B2, 1), B2)]),
        report(n2, []),
    ]
    chosen = select_chain(reports, base_height=Height(0), base_hash=GENESIS)
    # B2 (view 1) beats A2 (view 0); A3 does not extend B2, so the walk stops there.
    assert [b.block_hash for b in chosen.blocks] == [A1.block_hash, B2.block_hash]
    assert chosen.top == 2


def test_a_missing_block_is_an_error_not_a_shorter_chain() -> None:
    vc = report(n1, [(prepare_qc(A1, 0), A1), (prepare_qc(B2, 1), B2)])
    stripped = replace(vc, blocks=())
    with pytest.raises(ProtocolViolation):
        select_chain([stripped], base_height=Height(0), base_hash=GENESIS, blocks=[A1])


def test_the_walk_stops_after_a_configuration_block() -> None:
    change = SubstituteSeat(DOMAIN, Epoch(0), n3, s0)
    c2 = make_block(
        domain=DOMAIN,
        height=Height(2),
        epoch=Epoch(0),
        view=View(0),
        prev_hash=A1.block_hash,
        transactions=(config_transaction(change, node_key(n0), timestamp_ms=2),),
        timestamp_ms=2,
        proposer=n0,
    )
    c3 = block_at(3, c2.block_hash, 3)
    vc = report(n0, [(prepare_qc(A1, 0), A1), (prepare_qc(c2, 0), c2), (prepare_qc(c3, 0), c3)])
    chosen = select_chain([vc], base_height=Height(0), base_hash=GENESIS)
    assert [b.height for b in chosen.blocks] == [1, 2]


BAD_REPORTS = [
    pytest.param(
        lambda: replace(report(n1, [(prepare_qc(A1, 0), A1)]), signature=b"\x00" * 64),
        InvalidSignature,
        id="bad-signature",
    ),
    pytest.param(lambda: report(s0, [(prepare_qc(A1, 0), A1)]), UnknownSigner, id="from-a-standby"),
    pytest.param(
        lambda: report(n1, [(prepare_qc(A1, 0, (n0, n1, s0)), A1)]),
        UnknownSigner,
        id="standby-in-certificate",
    ),
    pytest.param(
        lambda: report(n1, [(prepare_qc(A1, 0, (n0, n1)), A1)]), ValidationError, id="below-quorum"
    ),
    pytest.param(
        lambda: report(n1, [(prepare_qc(A2, 0), A2), (prepare_qc(A1, 0), A1)]),
        ProtocolViolation,
        id="not-ascending",
    ),
    pytest.param(
        lambda: replace(report(n1, [(prepare_qc(A1, 0), A1)]), blocks=(A2,)),
        ProtocolViolation,
        id="wrong-block",
    ),
]


@pytest.mark.parametrize(("make", "error"), BAD_REPORTS)
def test_bad_reports_are_refused(make: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        check(make())  # type: ignore[operator]


def test_a_good_report_is_accepted_with_or_without_its_blocks() -> None:
    vc = report(n1, [(prepare_qc(A1, 0), A1), (prepare_qc(B2, 1), B2)])
    check(vc)
    check(replace(vc, blocks=()), with_blocks=False)


def _all_messages() -> list[object]:
    qc = prepare_qc(A1, 0)
    vc = report(n1, [(qc, A1)])
    statement = qc.statement
    decision = ReviveChild(DOMAIN, Epoch(0), (n0, n1, s0), (n3,))
    parent_block = make_block(
        domain=DomainId("city"),
        height=Height(4),
        epoch=Epoch(0),
        view=View(0),
        prev_hash=GENESIS,
        transactions=(config_transaction(decision, node_key(s0), timestamp_ms=0),),
        timestamp_ms=0,
        proposer=s0,
    )
    order = revive_order_from_block(parent_block, decision, prepare_qc(A1, 0))
    rr = ReviveReport(Epoch(0), Height(1), n1, None, (qc,), b"\x01" * 64, (A1,))
    return [
        PrePrepare(Epoch(0), View(2), A1),
        Vote(statement, n1, b"\x02" * 64),
        Certified(qc),
        Checkpoint(replace(statement, kind="checkpoint"), n2, b"\x03" * 64),
        vc,
        NewView(Epoch(0), View(5), (replace(vc, blocks=()),), (A1,)),
        Forward((tx(1), tx(2))),
        Status(Epoch(1), View(3), qc),
        Status(Epoch(1), View(3), None),
        StandbyStatus(Epoch(2), Height(7)),
        EpochHint(Epoch(2), Height(9)),
        ReviveNotice(order),
        rr,
        ReviveStart(order, (replace(rr, blocks=()),), (A1,), GENESIS),
    ]


@pytest.mark.parametrize("message", _all_messages(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_the_registry(message: object) -> None:
    data = encode_message(message)  # type: ignore[arg-type]
    assert decode_message(data) == message
    assert type(message).TAG in HPBFT_MESSAGES  # type: ignore[attr-defined]


def test_decoding_is_strict() -> None:
    wire = Forward((tx(1),)).to_wire()
    wire["extra"] = 1
    with pytest.raises((SchemaError, EncodingError)):
        decode_message(encode(wire))
    wire = decode(encode_message(EpochHint(Epoch(0), Height(1))))
    assert isinstance(wire, dict)
    wire["height"] = -1
    with pytest.raises(ValidationError):
        decode_message(encode(wire))
