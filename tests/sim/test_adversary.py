"""Byzantine rewriting of outgoing messages, behaviour by behaviour."""

from __future__ import annotations

import random
from dataclasses import dataclass

from belep.consensus.types import Block, QuorumCertificate
from belep.ledger.block import (
    Epoch,
    Height,
    NodeId,
    Transaction,
    View,
    VoteStatement,
    make_block,
)
from belep.sim.adversary import Adversary
from belep.sim.engine import SIM_DOMAIN, sim_key
from belep.sim.model import member_ids
from belep.sim.workload import make_sim_transaction, validate_sim_transaction

MEMBERS = member_ids(7)
ME = MEMBERS[0]
KEY = sim_key(ME)


@dataclass(frozen=True, slots=True)
class PrePrepare:
    view: int
    height: int
    block: Block

    def signing_bytes(self) -> bytes:
        return b"pp" + self.block.block_hash + bytes([self.view, self.height])


@dataclass(frozen=True, slots=True)
class SignedPrePrepare:
    view: int
    block: Block
    signature: bytes

    def signing_bytes(self) -> bytes:
        return b"spp" + self.block.block_hash + bytes([self.view])


@dataclass(frozen=True, slots=True)
class Vote:
    voter: NodeId
    statement: VoteStatement
    signature: bytes


@dataclass(frozen=True, slots=True)
class NewView:
    view: int
    certificates: tuple[QuorumCertificate, ...]


def a_block(height: int = 3) -> Block:
    rng = random.Random(height)
    return make_block(
        domain=SIM_DOMAIN,
        height=Height(height),
        epoch=Epoch(0),
        view=View(1),
        prev_hash=b"\x01" * 32,  # type: ignore[arg-type]
        transactions=tuple(make_sim_transaction(1, i, 300, rng) for i in range(3)),
        timestamp_ms=5,
        proposer=ME,
    )


def a_vote(signer: NodeId = ME) -> Vote:
    s = VoteStatement("prepare", SIM_DOMAIN, Epoch(0), View(1), Height(3), a_block().block_hash)
    return Vote(signer, s, sim_key(signer).sign(s.signing_bytes()))


def adversary(*behaviours: str, seed: int = 1) -> Adversary:
    return Adversary(ME, behaviours, MEMBERS, KEY, random.Random(seed))


def test_withhold_starves_the_victims_only() -> None:
    adv = adversary("withhold")
    assert adv.victims
    for dst in MEMBERS[1:]:
        sent = sum(len(adv.rewrite(dst, a_vote())) for _ in range(100))
        if dst in adv.victims:
            assert sent < 30
        else:
            assert sent == 100


def test_equivocation_sends_one_consistent_alternative_block_to_half_the_peers() -> None:
    adv = adversary("equivocate")
    original = PrePrepare(1, 3, a_block())
    seen: dict[NodeId, PrePrepare] = {}
    for dst in MEMBERS[1:]:
        (out,) = adv.rewrite(dst, original)
        assert isinstance(out, PrePrepare)
        seen[dst] = out
    others = {d for d in MEMBERS[1:] if seen[d] != original}
    assert others == adv.other_half
    alternatives = {seen[d].block.block_hash for d in others}
    assert len(alternatives) == 1  # the same forged block to everyone in that half
    alt = seen[next(iter(others))].block
    alt.check_tx_root()  # well formed: it is a real competing proposal
    assert all(validate_sim_transaction(tx) for tx in alt.transactions)
    assert alt.header.height == original.block.header.height
    assert alt.header.prev_hash == original.block.header.prev_hash
    assert alt.block_hash != original.block.block_hash


def test_equivocation_re_signs_messages_it_knows_how_to_sign() -> None:
    adv = adversary("equivocate")
    block = a_block()
    msg = SignedPrePrepare(1, block, b"")
    msg = SignedPrePrepare(1, block, KEY.sign(msg.signing_bytes()))
    dst = next(iter(adv.other_half))
    (out,) = adv.rewrite(dst, msg)
    assert isinstance(out, SignedPrePrepare)
    assert out.block != block
    assert KEY.public_key.is_valid_signature(out.signing_bytes(), out.signature)


def test_forged_votes_never_verify_as_what_they_claim() -> None:
    adv = adversary("forge", seed=3)
    forged = 0
    kinds: set[str] = set()
    for i in range(200):
        original = a_vote()
        (out,) = adv.rewrite(MEMBERS[1 + i % 6], original)
        assert isinstance(out, Vote)
        if out == original:
            continue
        forged += 1
        claimed = sim_key(out.voter).public_key
        assert not claimed.is_valid_signature(out.statement.signing_bytes(), out.signature)
        if out.voter != original.voter:
            kinds.add("claims another signer")
        elif out.statement != original.statement:
            kinds.add("statement changed under the signature")
        else:
            kinds.add("bad signature")
    assert forged > 30
    assert kinds == {
        "claims another signer",
        "statement changed under the signature",
        "bad signature",
    }


def test_tampering_changes_blocks_certificates_and_numbers() -> None:
    adv = adversary("tamper", seed=4)
    block = a_block()
    qc = QuorumCertificate(a_vote().statement, tuple((m, b"s" * 64) for m in MEMBERS[:5]))
    changes: set[str] = set()
    for i in range(300):
        (out,) = adv.rewrite(MEMBERS[1 + i % 6], PrePrepare(1, 3, block))
        assert isinstance(out, PrePrepare)
        if out.block != block:
            changes.add("block")
            bad = out.block
            if bad.header == block.header:  # transactions changed under the header
                assert bad.transactions != block.transactions
            else:
                assert bad.block_hash != block.block_hash
        if (out.view, out.height) != (1, 3):
            changes.add("number")
        (nv,) = adv.rewrite(MEMBERS[1], NewView(2, (qc,)))
        assert isinstance(nv, NewView)
        if nv.certificates != (qc,):
            changes.add("certificate")
            assert len(set(nv.certificates[0].signers)) < 5 or len(nv.certificates[0].signers) > 5
    assert changes == {"block", "number", "certificate"}


def test_replay_resends_old_messages_including_other_signers() -> None:
    adv = adversary("replay", seed=5)
    heard = a_vote(MEMBERS[3])
    adv.observe(MEMBERS[3], heard)
    sent: list[object] = []
    for i in range(200):
        sent.extend(adv.rewrite(MEMBERS[1], PrePrepare(1, i % 250, a_block())))
    assert len(sent) > 200  # extra copies
    assert heard in sent
    firsts = [m for m in sent if isinstance(m, PrePrepare) and m.height == 0]
    assert len(firsts) > 1  # an old message of its own, sent again


def test_transactions_from_clients_validate_and_tampered_ones_do_not() -> None:
    rng = random.Random(0)
    tx = make_sim_transaction(3, 42, 500, rng)
    assert len(tx.payload) == 500
    assert validate_sim_transaction(tx)
    assert not validate_sim_transaction(Transaction(tx.payload[:-1]))
    assert not validate_sim_transaction(Transaction(b"X" + tx.payload[1:]))
    assert not validate_sim_transaction(Transaction(b"short"))
