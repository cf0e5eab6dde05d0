"""The configuration history (ledger/config.py, ledger/config_tx.py): configuration
transactions as signed envelopes, epochs replayed from a chain, which committee certifies
which height, the parent's proof of a revival decision, and chain verification with it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from belep.app.machine import BelepApplication
from belep.cli import app
from belep.crypto import PrivateKey, sha256
from belep.encoding import encode
from belep.errors import ChainError, ConfigError, ProofMismatch, QuorumNotMet, UnknownSigner
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
from belep.ledger.config import (
    ConfigHistory,
    check_revival,
    genesis_history,
    history_from_genesis,
    replay_history,
    scan_revivals,
)
from belep.ledger.config_tx import (
    COMMIT_KIND,
    RevivalRecord,
    ReviveChild,
    ReviveOrder,
    SubstituteSeat,
    config_transaction,
    decode_config_tx,
    find_config_tx,
    is_config_payload,
    revive_order_from_block,
)
from belep.ledger.datadir import DomainDir
from belep.ledger.envelope import sign_envelope
from belep.ledger.execution import ChainExecutor, MemoryState
from belep.ledger.genesis import Genesis, Member
from belep.ledger.genesis_file import write_genesis
from belep.ledger.store import BlockStore
from belep.ledger.verify import StoredBlock, StoredTx, verify_chain

SEATS = tuple(NodeId(f"n{i}") for i in range(4))
STANDBYS = tuple(NodeId(f"s{i}") for i in range(3))
n0, n1, n2, n3 = SEATS
s0, s1, s2 = STANDBYS
DOMAIN = DomainId("station-7")
PARENT = DomainId("county-2")
GENESIS = Digest(sha256(b"genesis of station-7"))


def node_key(node: NodeId) -> PrivateKey:
    return PrivateKey.from_seed(sha256(b"config-test-key " + node.encode()))


KEYS = {n: node_key(n).public_key for n in (*SEATS, *STANDBYS)}


def tx(i: int) -> Transaction:
    return Transaction(b"tx-%06d" % i)


def signed(change: SubstituteSeat | ReviveChild | RevivalRecord, by: NodeId = n0) -> Transaction:
    return config_transaction(change, node_key(by), timestamp_ms=0)


def history() -> ConfigHistory:
    return genesis_history(DOMAIN, SEATS, STANDBYS, keys=KEYS)


def chain_of(
    *txs_per_block: tuple[Transaction, ...], epochs: tuple[int, ...] = (), proposer: NodeId = n0
) -> list[Block]:
    blocks: list[Block] = []
    prev = GENESIS
    for i, txs in enumerate(txs_per_block):
        block = make_block(
            domain=DOMAIN,
            height=Height(i + 1),
            epoch=Epoch(epochs[i] if epochs else 0),
            view=View(0),
            prev_hash=prev,
            transactions=txs,
            timestamp_ms=i,
            proposer=proposer,
        )
        blocks.append(block)
        prev = block.block_hash
    return blocks


def commit_qc(block: Block, signers: tuple[NodeId, ...], epoch: int = 0) -> QuorumCertificate:
    statement = VoteStatement(
        COMMIT_KIND, block.header.domain, Epoch(epoch), View(0), block.height, block.block_hash
    )
    return QuorumCertificate(
        statement, tuple((s, node_key(s).sign(statement.signing_bytes())) for s in signers)
    )


# --------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------


def test_configuration_changes_are_signed_envelopes_of_their_own_kinds() -> None:
    change = SubstituteSeat(DOMAIN, Epoch(3), n2, s1)
    payload = signed(change).payload
    assert is_config_payload(payload)
    assert decode_config_tx(payload) == change
    assert not is_config_payload(tx(1).payload)
    decision = ReviveChild(DOMAIN, Epoch(1), (n0, s0, s1), (n2, n3))
    assert decode_config_tx(signed(decision).payload) == decision
    # An application envelope is not a configuration change, even if its body says so.
    impostor = sign_envelope(
        node_key(n0), "register-dispatch", {"kind": "substitute-seat"}, timestamp_ms=0
    )
    assert not is_config_payload(impostor.encode())
    with pytest.raises(ChainError):  # the right kind with a wrong body
        decode_config_tx(
            sign_envelope(node_key(n0), "substitute-seat", {}, timestamp_ms=0).encode()
        )
    with pytest.raises(ChainError):
        decode_config_tx(payload + b"\x00")  # trailing byte: not canonical


def test_a_block_carries_at_most_one_configuration_change() -> None:
    change = SubstituteSeat(DOMAIN, Epoch(0), n3, s0)
    (block,) = chain_of((signed(change), signed(change, n1)))
    with pytest.raises(ChainError):
        find_config_tx(block)


def test_a_configuration_change_must_be_signed_by_the_proposer_of_its_block() -> None:
    change = SubstituteSeat(DOMAIN, Epoch(0), n3, s0)
    (good,) = chain_of((signed(change, n0),), proposer=n0)
    assert find_config_tx(good, keys=KEYS) == change
    (other,) = chain_of((signed(change, n1),), proposer=n0)
    with pytest.raises(ChainError, match="proposer"):
        find_config_tx(other, keys=KEYS)
    with pytest.raises(ChainError, match="proposer"):
        history().after_block(other)
    # A forged signature under the proposer's key.
    envelope = sign_envelope(node_key(n0), change.kind, change.to_body(), timestamp_ms=0)
    forged = type(envelope)(
        envelope.kind, envelope.author, envelope.body, (), 0, 1, envelope.signature
    )
    (bad,) = chain_of((forged.to_transaction(),), proposer=n0)
    with pytest.raises(ChainError, match="signature"):
        history().after_block(bad)


def test_a_domain_whose_committee_never_changes_refuses_a_configuration_change() -> None:
    pbft = genesis_history(DOMAIN, SEATS, STANDBYS, keys=KEYS, reconfigurable=False)
    (block,) = chain_of((signed(SubstituteSeat(DOMAIN, Epoch(0), n3, s0)),))
    with pytest.raises(ChainError, match="never changes"):
        pbft.after_block(block)


# --------------------------------------------------------------------------
# Epochs
# --------------------------------------------------------------------------


def test_a_substitution_opens_the_next_epoch_at_the_next_block() -> None:
    change = SubstituteSeat(DOMAIN, Epoch(0), n3, s0)
    blocks = chain_of((tx(1),), (signed(change),), (tx(2),), epochs=(0, 0, 1))
    replayed = replay_history(history(), blocks)
    old, new = replayed.epochs
    assert (old.first_height, old.last_height) == (1, 2)
    assert new.first_height == 3
    assert new.last_height is None
    assert new.seats == (n0, n1, n2, s0)
    assert new.standbys == (s1, s2, n3)
    committee = replayed.committee(3, 1)
    assert set(committee.keys) == {n0, n1, n2, s0}
    assert (committee.quorum, committee.epoch, committee.commit_kind) == (3, 1, COMMIT_KIND)
    with pytest.raises(ChainError):
        replayed.committee(3, 0)  # epoch 0 ended at height 2
    with pytest.raises(ChainError):
        replayed.committee(2, 1)  # epoch 1 starts at height 3


INVALID_CHANGES = [
    pytest.param(SubstituteSeat(DOMAIN, Epoch(0), s0, s1), id="seat-holds-no-seat"),
    pytest.param(SubstituteSeat(DOMAIN, Epoch(0), n3, n2), id="substitute-holds-a-seat"),
    pytest.param(SubstituteSeat(DOMAIN, Epoch(1), n3, s0), id="wrong-epoch"),
    pytest.param(SubstituteSeat(DomainId("other"), Epoch(0), n3, s0), id="wrong-domain"),
]


@pytest.mark.parametrize("change", INVALID_CHANGES)
def test_invalid_substitutions_are_refused(change: SubstituteSeat) -> None:
    (block,) = chain_of((signed(change),))
    with pytest.raises(ChainError):
        history().after_block(block)


def test_a_certificate_is_checked_against_the_committee_of_its_epoch() -> None:
    change = SubstituteSeat(DOMAIN, Epoch(0), n3, s0)
    blocks = chain_of((signed(change),), (tx(2),), epochs=(0, 1))
    before = history()
    after = before.after_block(blocks[0])
    cache = SignatureCache()

    def check(h: ConfigHistory, block: Block, qc: QuorumCertificate) -> None:
        committee = h.committee(block.height, qc.statement.epoch)
        check_block_certificate(block.header, qc, committee, cache=cache)

    check(before, blocks[0], commit_qc(blocks[0], (n0, n1, n3)))
    check(after, blocks[1], commit_qc(blocks[1], (n0, n1, s0), 1))
    with pytest.raises(UnknownSigner):  # n3 gave its seat away
        check(after, blocks[1], commit_qc(blocks[1], (n0, n1, n3), 1))
    with pytest.raises(UnknownSigner):  # a standby before its substitution
        check(before, blocks[0], commit_qc(blocks[0], (n0, n1, s1)))
    with pytest.raises(QuorumNotMet):
        check(after, blocks[1], commit_qc(blocks[1], (n0, s0), 1))


# --------------------------------------------------------------------------
# Revival
# --------------------------------------------------------------------------


def _decision_block(decision: ReviveChild, author: NodeId = s0) -> Block:
    return make_block(
        domain=PARENT,
        height=Height(9),
        epoch=Epoch(0),
        view=View(0),
        prev_hash=GENESIS,
        transactions=(tx(1), signed(decision, author), tx(2)),
        timestamp_ms=0,
        proposer=s0,
    )


def _parent_qc(block: Block, signers: tuple[NodeId, ...] = STANDBYS) -> QuorumCertificate:
    return commit_qc(block, signers)


def test_a_revive_order_proves_the_parent_committed_the_decision() -> None:
    decision = ReviveChild(DOMAIN, Epoch(0), (n0, n1, s0, s1), (n2, n3))
    block = _decision_block(decision)
    order = revive_order_from_block(block, decision, _parent_qc(block))
    assert order.decision == decision
    parent_voters = {s: KEYS[s] for s in STANDBYS}
    order.verify(parent=PARENT, parent_voters=parent_voters, cache=SignatureCache())
    with pytest.raises(ChainError):  # a block of another domain
        order.verify(parent=DomainId("city"), parent_voters=parent_voters, cache=SignatureCache())
    other = ReviveChild(DOMAIN, Epoch(0), (n0, n1, s0, s2), (n2, n3))
    forged = ReviveOrder(
        signed(other, s0).payload, order.header, order.inclusion, order.certificate
    )
    with pytest.raises(ProofMismatch):  # the decision is not the one in the block
        forged.verify(parent=PARENT, parent_voters=parent_voters, cache=SignatureCache())
    by_child = revive_order_from_block(block, decision, _parent_qc(block, (n0, n1, n2)))
    with pytest.raises(UnknownSigner):  # certified by the child's own seats, not the parent
        by_child.verify(parent=PARENT, parent_voters=parent_voters, cache=SignatureCache())
    authored_by_child = _decision_block(decision, author=n0)
    order2 = revive_order_from_block(authored_by_child, decision, _parent_qc(authored_by_child))
    with pytest.raises(ChainError, match="parent"):  # the decision signed by a child seat
        order2.verify(parent=PARENT, parent_voters=parent_voters, cache=SignatureCache())
    with pytest.raises(ChainError):
        revive_order_from_block(chain_of((tx(1),))[0], decision, _parent_qc(block))


REVIVALS = [
    pytest.param(
        ReviveChild(DOMAIN, Epoch(0), (n0, n1, s0), (n1, n2, n3)), id="more-than-2f-failed"
    ),
    pytest.param(ReviveChild(DOMAIN, Epoch(0), (n0, n2, s0), (n2, n3)), id="failed-node-seated"),
    pytest.param(ReviveChild(DOMAIN, Epoch(0), (n0, NodeId("x9")), (n3,)), id="unknown-node"),
    pytest.param(ReviveChild(DOMAIN, Epoch(1), (n0, n1, s0), (n3,)), id="not-the-current-epoch"),
    pytest.param(ReviveChild(DOMAIN, Epoch(0), (), (n3,)), id="no-seats"),
    pytest.param(ReviveChild(DOMAIN, Epoch(0), (n0, n1, n2), (s0,)), id="standby-declared-failed"),
]


@pytest.mark.parametrize("decision", REVIVALS)
def test_revival_assumptions_are_enforced(decision: ReviveChild) -> None:
    with pytest.raises(ChainError):
        check_revival(history().current, decision, DOMAIN)


def test_a_revived_epoch_recertifies_above_its_base_and_the_old_epoch_ends_at_its_top() -> None:
    decision = ReviveChild(DOMAIN, Epoch(0), (n0, n1, s0, s1), (n2, n3))
    block = _decision_block(decision)
    order = revive_order_from_block(block, decision, _parent_qc(block))
    blocks = chain_of((tx(1),), (tx(2),), (tx(3),))
    record = RevivalRecord(order, Height(1), blocks[0].block_hash, Height(2), blocks[1].block_hash)
    assert RevivalRecord.decode(record.encode()) == record
    revived = chain_of((tx(1),), (tx(2),), (signed(record),), epochs=(0, 0, 1))
    parent_voters = {s: KEYS[s] for s in STANDBYS}
    records = scan_revivals(revived, parent=PARENT, parent_voters=parent_voters)
    assert records == [record]
    assert scan_revivals(revived, parent=DomainId("city"), parent_voters=parent_voters) == []
    replayed = replay_history(history(), revived, records)
    old, new = replayed.epochs
    assert old.last_height == 2
    assert new.first_height == 2
    assert new.cause == "revive"
    assert new.seats == (n0, n1, s0, s1)
    assert replayed.for_certificate(2, 0) is old
    assert replayed.for_certificate(2, 1) is new
    with pytest.raises(ChainError):
        replayed.for_certificate(3, 0)
    # A revival record found only inside the chain is applied where it is met.
    late = replay_history(history(), revived)
    assert late.current.seats == (n0, n1, s0, s1)


def test_genesis_needs_distinct_seats_and_standbys() -> None:
    with pytest.raises(ConfigError):
        genesis_history(DOMAIN, (), STANDBYS)
    with pytest.raises(ConfigError):
        genesis_history(DOMAIN, SEATS, (s0, n1))


# --------------------------------------------------------------------------
# Chain verification with the configuration history (every protocol, one path)
# --------------------------------------------------------------------------


class MemoryReader:
    """A ``ChainReader`` over blocks held in memory."""

    def __init__(self, genesis_hash: bytes, chain: list[tuple[Block, QuorumCertificate]]) -> None:
        self.genesis_hash = genesis_hash
        self.chain = chain

    def stored_genesis_hash(self) -> bytes:
        return self.genesis_hash

    def stored_blocks(self, start: int = 1) -> Iterator[StoredBlock]:
        for block, qc in self.chain[start - 1 :]:
            yield StoredBlock(
                block.height,
                block.block_hash,
                block.header.encode(),
                encode(qc.to_wire()),
                len(block.transactions),
                tuple(StoredTx(i, t.tx_hash, t.payload) for i, t in enumerate(block.transactions)),
            )

    def count_stored_transactions(self) -> int:
        return sum(len(b.transactions) for b, _ in self.chain)


def _genesis(protocol: str = "hpbft") -> Genesis:
    return Genesis(
        domain=DOMAIN,
        suite="ed25519",
        protocol=protocol,
        voters=tuple(Member(n, KEYS[n]) for n in SEATS),
        observers=tuple(Member(s, KEYS[s]) for s in STANDBYS),
        parent=PARENT,
    )


def _certified_chain(
    genesis: Genesis, signers_after: tuple[NodeId, ...]
) -> list[tuple[Block, QuorumCertificate]]:
    """Three blocks executed with the BELEP application; a substitution at height 2."""
    change = SubstituteSeat(DOMAIN, Epoch(0), n3, s0)
    executor = ChainExecutor.from_genesis(BelepApplication(), MemoryState(), genesis.genesis_hash)
    out = []
    prev = genesis.genesis_hash
    plan = [
        ((tx(1),), 0, (n0, n1, n3)),
        ((signed(change),), 0, (n1, n2, n3)),
        ((tx(2),), 1, signers_after),
    ]
    for i, (txs, epoch, signers) in enumerate(plan):
        block = make_block(
            domain=DOMAIN,
            height=Height(i + 1),
            epoch=Epoch(epoch),
            view=View(0),
            prev_hash=prev,
            transactions=txs,
            timestamp_ms=i,
            proposer=n0,
            state_root=executor.root,
        )
        executor.execute(block)
        out.append((block, commit_qc(block, signers, epoch)))
        prev = block.block_hash
    return out


def test_the_ledger_verifies_an_hpbft_chain_with_the_seats_of_each_epoch() -> None:
    genesis = _genesis()
    chain = _certified_chain(genesis, (n0, s0, n2))
    report = verify_chain(
        MemoryReader(genesis.genesis_hash, chain), genesis, application=BelepApplication()
    )
    assert report.ok, report.finding
    assert report.blocks == 3
    assert history_from_genesis(genesis).after_block(chain[1][0]).committee(3, 1).quorum == 3


def test_the_ledger_rejects_a_certificate_signed_by_a_seat_given_away() -> None:
    genesis = _genesis()
    chain = _certified_chain(genesis, (n0, n1, n3))  # n3 lost its seat at height 2
    report = verify_chain(MemoryReader(genesis.genesis_hash, chain), genesis)
    assert report.finding is not None
    assert (report.finding.height, report.finding.check) == (3, "qc-signatures")


def test_the_ledger_rejects_a_substitution_in_a_pbft_chain() -> None:
    genesis = _genesis("pbft")
    chain = _certified_chain(genesis, (n0, n1, n2))
    report = verify_chain(MemoryReader(genesis.genesis_hash, chain), genesis)
    assert report.finding is not None
    assert (report.finding.height, report.finding.check) == (2, "configuration")


@pytest.mark.parametrize(
    ("signers_after", "exit_code"),
    [((n0, s0, n2), 0), ((n0, n1, n3), 1)],
    ids=["seats-of-each-epoch", "seat-given-away"],
)
def test_chain_verify_cli_follows_hpbft_seats(
    tmp_path: Path, signers_after: tuple[NodeId, ...], exit_code: int
) -> None:
    """`belep chain verify` replays SubstituteSeat: the new seat holder's signature counts, the
    old one's no longer does."""
    genesis = _genesis()
    directory = DomainDir(tmp_path / "domain")
    directory.root.mkdir()
    write_genesis(directory.genesis_path, genesis)
    with BlockStore.open(directory.chain_path, genesis) as store:
        for block, qc in _certified_chain(genesis, signers_after):
            store.append(block, qc)
    result = CliRunner().invoke(
        app, ["chain", "verify", "--data-dir", str(directory.root), "--json"]
    )
    assert result.exit_code == exit_code, result.output
    report = json.loads(result.output)
    if exit_code == 0:
        assert report["chains"][0]["blocks"] == 3
    else:
        assert report["chains"][0]["finding"]["height"] == 3


def test_revive_decisions_are_not_the_carrying_chains_own_change() -> None:
    decision = ReviveChild(DOMAIN, Epoch(0), (n0, n1, s0, s1), (n2, n3))
    other = ReviveChild(DomainId("station-8"), Epoch(0), (n0,), ())
    (block,) = chain_of((signed(decision, s0), signed(other, s1)))
    assert find_config_tx(block, keys=KEYS) is None  # two decisions: no change of this chain
    pbft = genesis_history(DOMAIN, SEATS, STANDBYS, keys=KEYS, reconfigurable=False)
    assert pbft.after_block(block) is pbft  # a parent's chain carries them without a change
