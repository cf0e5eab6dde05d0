"""The one certificate check (ledger/certificate.py), and every former copy of it using it.

"Does this certificate certify this block for this committee?" used to be answered in five
places with different strictness (the simulator ignored the kind and the epoch; state
transfer ignored the view). Each case below is a certificate that must be refused, and
each caller — chain verification, the block store, state transfer, HPBFT's and Raft's
checks, the simulator's rules — is fed every case: all refuse all of them, and all accept
the genuine certificate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest

from belep.consensus.hpbft_verify import check_certificate as hpbft_check
from belep.consensus.raft_cert import RAFT_CERT_KIND, accept_fetched_chain, raft_committee
from belep.consensus.state_transfer import verify_fetched
from belep.consensus.types import ReplicaConfig
from belep.crypto import PrivateKey, sha256
from belep.encoding import encode
from belep.errors import ValidationError
from belep.ledger.block import (
    Block,
    Digest,
    DomainId,
    Epoch,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
    VoteStatement,
    make_block,
)
from belep.ledger.certificate import SignatureCache, check_block_certificate
from belep.ledger.config import genesis_history
from belep.ledger.genesis import Committee, Genesis, Member
from belep.ledger.verify import StoredBlock, StoredTx, verify_chain
from belep.sim.protocols import bft_rule, majority_rule

VOTERS = tuple(NodeId(f"v{i}") for i in range(4))
KEYS = {v: PrivateKey.from_seed(sha256(b"cert-test " + v.encode())) for v in VOTERS}
PUBLIC = {v: k.public_key for v, k in KEYS.items()}
DOMAIN = DomainId("station-1")
OUTSIDER = NodeId("mallory")
OUTSIDER_KEY = PrivateKey.from_seed(sha256(b"mallory"))


def genesis(protocol: str) -> Genesis:
    return Genesis(
        domain=DOMAIN,
        suite="ed25519",
        protocol=protocol,
        voters=tuple(Member(v, PUBLIC[v]) for v in VOTERS),
    )


def block_for(g: Genesis) -> Block:
    return make_block(
        domain=DOMAIN,
        height=Height(1),
        epoch=Epoch(0),
        view=View(2),
        prev_hash=g.genesis_hash,
        transactions=(Transaction(b"evidence"),),
        timestamp_ms=1,
        proposer=VOTERS[2],
    )


def sign(statement: VoteStatement, signers: tuple[NodeId, ...]) -> QuorumCertificate:
    keys = {**KEYS, OUTSIDER: OUTSIDER_KEY}
    message = statement.signing_bytes()
    return QuorumCertificate(statement, tuple((s, keys[s].sign(message)) for s in signers))


def genuine(block: Block, kind: str) -> QuorumCertificate:
    h = block.header
    statement = VoteStatement(kind, h.domain, h.epoch, View(3), h.height, h.block_hash)
    return sign(statement, VOTERS[:3])


def _restated(qc: QuorumCertificate, signers: tuple[NodeId, ...] = VOTERS[:3], **change: object) -> QuorumCertificate:  # fmt: skip
    return sign(dataclasses.replace(qc.statement, **change), signers)


Mutation = Callable[[QuorumCertificate], QuorumCertificate]
CASES: dict[str, Mutation] = {
    "wrong kind": lambda qc: _restated(qc, kind="prepare"),
    "wrong epoch": lambda qc: _restated(qc, epoch=Epoch(1)),
    "earlier view than the block": lambda qc: _restated(qc, view=View(1)),
    "another domain": lambda qc: _restated(qc, domain=DomainId("station-2")),
    "another height": lambda qc: _restated(qc, height=Height(2)),
    "another block": lambda qc: _restated(qc, block_hash=Digest(b"\x01" * 32)),
    "duplicate signer": lambda qc: QuorumCertificate(qc.statement, (qc.signatures[0],) * 3),
    "below quorum": lambda qc: QuorumCertificate(qc.statement, qc.signatures[:1]),
    "unknown signer": lambda qc: _restated(qc, (VOTERS[0], VOTERS[1], OUTSIDER)),
    "bad signature": lambda qc: QuorumCertificate(
        qc.statement, (*qc.signatures[:2], (qc.signatures[2][0], bytes(64)))
    ),
}


class _Reader:
    def __init__(self, g: Genesis, block: Block, qc: QuorumCertificate) -> None:
        self.g, self.block, self.qc = g, block, qc

    def stored_genesis_hash(self) -> bytes:
        return self.g.genesis_hash

    def stored_blocks(self, start: int = 1) -> Iterator[StoredBlock]:
        b = self.block
        txs = tuple(StoredTx(i, t.tx_hash, t.payload) for i, t in enumerate(b.transactions))
        yield StoredBlock(1, b.block_hash, b.header.encode(), encode(self.qc.to_wire()), 1, txs)

    def count_stored_transactions(self) -> int:
        return 1


def _config() -> ReplicaConfig:
    return ReplicaConfig(
        node_id=VOTERS[0],
        domain=DOMAIN,
        members=VOTERS,
        keys=PUBLIC,
        private_key=KEYS[VOTERS[0]],
    )


def _raise_if(problem: ValidationError | None) -> None:
    if problem is not None:
        raise problem


def _bft_callers() -> dict[str, Callable[[Genesis, Block, QuorumCertificate], None]]:
    def ledger_verify(g: Genesis, b: Block, qc: QuorumCertificate) -> None:
        finding = verify_chain(_Reader(g, b, qc), g).finding
        if finding is not None:
            raise ValidationError(finding.message)

    def state_transfer(g: Genesis, b: Block, qc: QuorumCertificate) -> None:
        good, problem = verify_fetched(
            [(b, qc)],
            next_height=Height(1),
            prev_hash=g.genesis_hash,
            domain=DOMAIN,
            committee=g.committee(),
            cache=SignatureCache(),
        )
        _raise_if(problem)
        assert good == [(b, qc)]

    def hpbft(g: Genesis, b: Block, qc: QuorumCertificate) -> None:
        history = genesis_history(DOMAIN, VOTERS, (), keys=PUBLIC)
        hpbft_check(history, b, qc)

    def simulator(_g: Genesis, b: Block, qc: QuorumCertificate) -> None:
        bft_rule(_config(), (), b, qc)

    def one_check(g: Genesis, b: Block, qc: QuorumCertificate) -> None:
        check_block_certificate(b.header, qc, g.committee())

    return {
        "ledger verify": ledger_verify,
        "state transfer": state_transfer,
        "hpbft": hpbft,
        "simulator (pbft)": simulator,
        "one check": one_check,
    }


def _raft_callers() -> dict[str, Callable[[Genesis, Block, QuorumCertificate], None]]:
    def fetched(g: Genesis, b: Block, qc: QuorumCertificate) -> None:
        if not accept_fetched_chain([(b, qc)], 0, g.genesis_hash, PUBLIC, DOMAIN):
            raise ValidationError("refused")

    def simulator(_g: Genesis, b: Block, qc: QuorumCertificate) -> None:
        majority_rule(_config(), (), b, qc)

    def ledger_verify(g: Genesis, b: Block, qc: QuorumCertificate) -> None:
        finding = verify_chain(_Reader(g, b, qc), g).finding
        if finding is not None:
            raise ValidationError(finding.message)

    def one_check(_g: Genesis, b: Block, qc: QuorumCertificate) -> None:
        check_block_certificate(b.header, qc, raft_committee(PUBLIC))

    return {
        "raft state transfer": fetched,
        "simulator (raft)": simulator,
        "ledger verify": ledger_verify,
        "one check": one_check,
    }


CALLERS = [
    *(pytest.param("pbft", "commit", name, id=f"pbft-{name}") for name in _bft_callers()),
    *(pytest.param("raft", RAFT_CERT_KIND, name, id=f"raft-{name}") for name in _raft_callers()),
]


@pytest.mark.parametrize(("protocol", "kind", "caller"), CALLERS)
def test_every_caller_accepts_the_genuine_certificate_and_refuses_every_bad_one(
    protocol: str, kind: str, caller: str
) -> None:
    g = genesis(protocol)
    check = (
        {**_bft_callers(), **_raft_callers()}[caller]
        if protocol == "pbft"
        else _raft_callers()[caller]
    )
    if protocol == "pbft":
        check = _bft_callers()[caller]
    block = block_for(g)
    good = genuine(block, kind)
    check(g, block, good)
    accepted = []
    for name, mutate in CASES.items():
        try:
            check(g, block, mutate(good))
        except ValidationError:
            continue
        accepted.append(name)
    assert accepted == [], f"{caller} accepted: {accepted}"


def test_the_cases_differ_from_the_genuine_certificate_in_one_respect_each() -> None:
    g = genesis("pbft")
    block = block_for(g)
    good = genuine(block, "commit")
    committee = g.committee()
    for name, mutate in CASES.items():
        bad = mutate(good)
        assert bad != good, name
        with pytest.raises(ValidationError):
            check_block_certificate(block.header, bad, committee)
    # The committee's epoch is part of what is checked: epoch 1's committee refuses epoch 0.
    later = Committee(committee.members, committee.quorum, committee.commit_kind, Epoch(1))
    with pytest.raises(ValidationError):
        check_block_certificate(block.header, good, later)
