"""The invariant checker on hand-built chains: each invariant, accepted and broken."""

from __future__ import annotations

import pytest

from belep.consensus.types import Block, QuorumCertificate, ReplicaConfig
from belep.ledger.block import (
    DomainId,
    Epoch,
    Height,
    NodeId,
    Transaction,
    View,
    VoteStatement,
    make_block,
)
from belep.sim.checker import InvariantChecker
from belep.sim.engine import SIM_DOMAIN, sim_key
from belep.sim.model import member_ids
from belep.sim.protocols import bft_rule, majority_rule

MEMBERS = member_ids(4)
KEYS = {m: sim_key(m) for m in MEMBERS}
CONFIG = ReplicaConfig(
    node_id=MEMBERS[0],
    domain=SIM_DOMAIN,
    members=MEMBERS,
    keys={m: k.public_key for m, k in KEYS.items()},
    private_key=KEYS[MEMBERS[0]],
)


def block(height: int, prev: bytes, tag: bytes = b"x", domain: DomainId = SIM_DOMAIN) -> Block:
    return make_block(
        domain=domain,
        height=Height(height),
        epoch=Epoch(0),
        view=View(0),
        prev_hash=prev,  # type: ignore[arg-type]
        transactions=(Transaction(tag + bytes([height])),),
        timestamp_ms=height,
        proposer=MEMBERS[0],
    )


def cert(
    b: Block, signers: tuple[NodeId, ...] = MEMBERS[:3], kind: str = "commit"
) -> QuorumCertificate:
    s = VoteStatement(kind, b.header.domain, Epoch(0), View(0), b.height, b.block_hash)
    return QuorumCertificate(s, tuple((m, KEYS[m].sign(s.signing_bytes())) for m in signers))


def chain(n: int, tag: bytes = b"x") -> list[Block]:
    out: list[Block] = []
    prev = CONFIG.genesis_hash
    for h in range(1, n + 1):
        out.append(block(h, prev, tag))
        prev = out[-1].block_hash
    return out


def deliver_all(checker: InvariantChecker, node: str, blocks: list[Block]) -> list[Block]:
    stored: list[Block] = []
    for b in blocks:
        violation, new = checker.check_delivery(node, stored, b, cert(b), 0, may_redeliver=False)
        assert violation is None, violation
        if new:
            stored.append(b)
    return stored


def test_agreeing_chains_are_accepted_and_canonical_grows() -> None:
    checker = InvariantChecker(CONFIG, bft_rule)
    blocks = chain(5)
    deliver_all(checker, "n0", blocks)
    deliver_all(checker, "n1", blocks[:3])
    assert checker.height == 5
    assert [b.block_hash for b in checker.canonical] == [b.block_hash for b in blocks]


def test_fork_at_same_height_is_an_agreement_violation() -> None:
    checker = InvariantChecker(CONFIG, bft_rule)
    deliver_all(checker, "n0", chain(3))
    other = chain(3, tag=b"y")
    stored: list[Block] = []
    violation, _ = checker.check_delivery(
        "n1", stored, other[0], cert(other[0]), 7, may_redeliver=False
    )
    assert violation is not None
    assert violation.kind == "agreement"
    assert violation.node == "n1"
    assert violation.height == 1
    assert violation.time_ms == 7


def test_gap_and_broken_link_are_caught() -> None:
    checker = InvariantChecker(CONFIG, bft_rule)
    blocks = chain(3)
    violation, _ = checker.check_delivery(
        "n0", [], blocks[1], cert(blocks[1]), 0, may_redeliver=False
    )
    assert violation is not None
    assert violation.kind == "order"
    stray = block(2, b"\x07" * 32)
    violation, _ = checker.check_delivery(
        "n0", blocks[:1], stray, cert(stray), 0, may_redeliver=False
    )
    assert violation is not None
    assert violation.kind == "link"


@pytest.mark.parametrize(
    "case",
    ["below quorum", "forged signature", "outsider", "other block", "tampered transactions"],
)
def test_invalid_certificates_are_caught(case: str) -> None:
    checker = InvariantChecker(CONFIG, bft_rule)
    b = chain(1)[0]
    qc = cert(b)
    if case == "below quorum":
        qc = cert(b, MEMBERS[:2])
    elif case == "forged signature":
        sigs = list(qc.signatures)
        sigs[0] = (sigs[0][0], KEYS[MEMBERS[3]].sign(b"other data"))
        qc = QuorumCertificate(qc.statement, tuple(sigs))
    elif case == "outsider":
        stranger = sim_key(NodeId("zz"))
        s = qc.statement
        qc = QuorumCertificate(
            s, (*qc.signatures[:2], (NodeId("zz"), stranger.sign(s.signing_bytes())))
        )
    elif case == "other block":
        qc = cert(block(1, CONFIG.genesis_hash, b"q"))
    else:
        b = Block(b.header, (Transaction(b"swapped"),))
    violation, new = checker.check_delivery("n0", [], b, qc, 0, may_redeliver=False)
    assert violation is not None
    assert violation.kind == "certificate"
    assert not new
    assert checker.height == 0


def test_majority_rule_accepts_three_of_four_raft_signatures_and_refuses_two() -> None:
    b = chain(1)[0]
    majority_rule(CONFIG, [], b, cert(b, MEMBERS[:3], kind="raft-append"))
    checker = InvariantChecker(CONFIG, majority_rule)
    too_few = cert(b, MEMBERS[:2], kind="raft-append")
    violation, _ = checker.check_delivery("n0", [], b, too_few, 0, may_redeliver=False)
    assert violation is not None
    # A commit certificate is not a Raft certificate, however many signed it.
    violation, _ = checker.check_delivery("n0", [], b, cert(b, MEMBERS), 0, may_redeliver=False)
    assert violation is not None
    assert violation.kind == "certificate"


def test_redelivery_allowed_only_after_restart_and_only_of_the_same_block() -> None:
    checker = InvariantChecker(CONFIG, bft_rule)
    stored = deliver_all(checker, "n0", chain(2))
    again = stored[0]
    violation, new = checker.check_delivery("n0", stored, again, cert(again), 0, may_redeliver=True)
    assert violation is None
    assert not new
    violation, _ = checker.check_delivery("n0", stored, again, cert(again), 0, may_redeliver=False)
    assert violation is not None
    assert violation.kind == "order"
    other = chain(1, tag=b"z")[0]
    violation, _ = checker.check_delivery("n0", stored, other, cert(other), 0, may_redeliver=True)
    assert violation is not None
    assert violation.kind == "agreement"
