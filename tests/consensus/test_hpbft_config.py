"""HPBFT configuration: the canonical configuration transactions, epochs replayed from a
chain, which seats certify which heights, and the parent's proof of a revival decision."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hpbft_cluster import GENESIS, SEATS, STANDBYS, make_config, node_key, tx
from typer.testing import CliRunner

from belep.cli import app
from belep.consensus.certificates import SignatureCache
from belep.consensus.hpbft_config import (
    COMMIT_KIND,
    CONFIG_MAGIC,
    RevivalRecord,
    ReviveChild,
    SubstituteSeat,
    check_revival,
    decode_config_tx,
    find_config_tx,
    genesis_history,
    is_config_payload,
    revive_order_from_block,
)
from belep.consensus.hpbft_verify import (
    HistoryCache,
    check_certificate,
    committee_at,
    committee_source_for_chain,
    replay_history,
    scan_revivals,
)
from belep.encoding import encode
from belep.errors import ChainError, ConfigError, ProofMismatch, QuorumNotMet, UnknownSigner
from belep.ledger.block import (
    Block,
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
from belep.ledger.datadir import DomainDir
from belep.ledger.genesis import Genesis, Member, write_genesis
from belep.ledger.store import BlockStore
from belep.ledger.verify import StoredBlock, StoredTx, verify_chain

n0, n1, n2, n3 = SEATS
s0, s1, s2 = STANDBYS
DOMAIN = make_config(n0).domain
PARENT = DomainId("county-2")
KEYS = make_config(n0).keys


def chain_of(*txs_per_block: tuple[Transaction, ...], epochs: tuple[int, ...] = ()) -> list[Block]:
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
            proposer=n0,
        )
        blocks.append(block)
        prev = block.block_hash
    return blocks


def commit_qc(block: Block, signers: tuple[NodeId, ...], epoch: int = 0) -> QuorumCertificate:
    statement = VoteStatement(
        COMMIT_KIND, DOMAIN, Epoch(epoch), View(0), block.height, block.block_hash
    )
    return QuorumCertificate(
        statement, tuple((s, node_key(s).sign(statement.signing_bytes())) for s in signers)
    )


def test_configuration_payloads_are_canonical_and_distinct_from_application_ones() -> None:
    change = SubstituteSeat(DOMAIN, Epoch(3), n2, s1)
    payload = change.payload()
    assert payload.startswith(CONFIG_MAGIC)
    assert is_config_payload(payload)
    assert decode_config_tx(payload) == change
    assert not is_config_payload(tx(1).payload)
    decision = ReviveChild(DOMAIN, Epoch(1), (n0, s0, s1), (n2, n3))
    assert decode_config_tx(decision.payload()) == decision
    with pytest.raises(ChainError):
        decode_config_tx(CONFIG_MAGIC + b"\xa0")  # an empty map: no type
    with pytest.raises(ChainError):
        decode_config_tx(payload + b"\x00")  # trailing byte: not canonical


def test_a_block_carries_at_most_one_configuration_change() -> None:
    two = (SubstituteSeat(DOMAIN, Epoch(0), n3, s0).transaction(),) * 2
    (block,) = chain_of(two)
    with pytest.raises(ChainError):
        find_config_tx(block)


def test_a_substitution_opens_the_next_epoch_at_the_next_block() -> None:
    change = SubstituteSeat(DOMAIN, Epoch(0), n3, s0)
    blocks = chain_of((tx(1),), (change.transaction(),), (tx(2),), epochs=(0, 0, 1))
    history = replay_history(genesis_history(DOMAIN, SEATS, STANDBYS), blocks)
    old, new = history.epochs
    assert (old.first_height, old.last_height) == (1, 2)
    assert new.first_height == 3
    assert new.last_height is None
    assert new.seats == (n0, n1, n2, s0)
    assert new.standbys == (s1, s2, n3)
    voters, quorum = committee_at(history, KEYS, 3, 1)
    assert set(voters) == {n0, n1, n2, s0}
    assert quorum == 3
    with pytest.raises(ChainError):
        history.for_certificate(3, 0)  # epoch 0 ended at height 2
    with pytest.raises(ChainError):
        history.for_certificate(2, 1)  # epoch 1 starts at height 3


INVALID_CHANGES = [
    pytest.param(SubstituteSeat(DOMAIN, Epoch(0), s0, s1), id="seat-holds-no-seat"),
    pytest.param(SubstituteSeat(DOMAIN, Epoch(0), n3, n2), id="substitute-holds-a-seat"),
    pytest.param(SubstituteSeat(DOMAIN, Epoch(1), n3, s0), id="wrong-epoch"),
    pytest.param(SubstituteSeat(DomainId("other"), Epoch(0), n3, s0), id="wrong-domain"),
]


@pytest.mark.parametrize("change", INVALID_CHANGES)
def test_invalid_substitutions_are_refused(change: SubstituteSeat) -> None:
    (block,) = chain_of((change.transaction(),))
    with pytest.raises(ChainError):
        genesis_history(DOMAIN, SEATS, STANDBYS).after_block(block)


def test_a_certificate_is_checked_against_the_seats_of_its_epoch() -> None:
    change = SubstituteSeat(DOMAIN, Epoch(0), n3, s0)
    blocks = chain_of((change.transaction(),), (tx(2),), epochs=(0, 1))
    cache = HistoryCache(genesis_history(DOMAIN, SEATS, STANDBYS))
    sigs = SignatureCache()
    check_certificate(
        cache.before(blocks, 1), KEYS, blocks[0], commit_qc(blocks[0], (n0, n1, n3)), sigs
    )
    history = cache.before(blocks, 2)
    check_certificate(history, KEYS, blocks[1], commit_qc(blocks[1], (n0, n1, s0), 1), sigs)
    with pytest.raises(UnknownSigner):  # n3 gave its seat away
        check_certificate(history, KEYS, blocks[1], commit_qc(blocks[1], (n0, n1, n3), 1), sigs)
    with pytest.raises(UnknownSigner):  # a standby before its substitution
        check_certificate(
            cache.before(blocks, 1), KEYS, blocks[0], commit_qc(blocks[0], (n0, n1, s1)), sigs
        )
    with pytest.raises(QuorumNotMet):
        check_certificate(history, KEYS, blocks[1], commit_qc(blocks[1], (n0, s0), 1), sigs)


def _decision_block(decision: ReviveChild) -> Block:
    return make_block(
        domain=PARENT,
        height=Height(9),
        epoch=Epoch(0),
        view=View(0),
        prev_hash=GENESIS,
        transactions=(tx(1), decision.transaction(), tx(2)),
        timestamp_ms=0,
        proposer=s0,
    )


def _parent_qc(block: Block, signers: tuple[NodeId, ...] = STANDBYS) -> QuorumCertificate:
    statement = VoteStatement(
        COMMIT_KIND, PARENT, Epoch(0), View(0), block.height, block.block_hash
    )
    return QuorumCertificate(
        statement, tuple((s, node_key(s).sign(statement.signing_bytes())) for s in signers)
    )


def test_a_revive_order_proves_the_parent_committed_the_decision() -> None:
    decision = ReviveChild(DOMAIN, Epoch(0), (n0, n1, s0, s1), (n2, n3))
    block = _decision_block(decision)
    order = revive_order_from_block(block, decision, _parent_qc(block))
    parent_voters = {s: KEYS[s] for s in STANDBYS}
    order.verify(parent=PARENT, parent_voters=parent_voters, cache=SignatureCache())
    with pytest.raises(ChainError):  # a block of another domain
        order.verify(parent=DomainId("city"), parent_voters=parent_voters, cache=SignatureCache())
    other = ReviveChild(DOMAIN, Epoch(0), (n0, n1, s0, s2), (n2, n3))
    forged = type(order)(other, order.header, order.inclusion, order.certificate)
    with pytest.raises(ProofMismatch):  # the decision is not the one in the block
        forged.verify(parent=PARENT, parent_voters=parent_voters, cache=SignatureCache())
    by_child = revive_order_from_block(block, decision, _parent_qc(block, (n0, n1, n2)))
    with pytest.raises(UnknownSigner):  # signed by the child's own seats, not the parent
        by_child.verify(parent=PARENT, parent_voters=parent_voters, cache=SignatureCache())
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
        check_revival(genesis_history(DOMAIN, SEATS, STANDBYS).current, decision, DOMAIN)


def test_a_revived_epoch_recertifies_above_its_base_and_the_old_epoch_ends_at_its_top() -> None:
    decision = ReviveChild(DOMAIN, Epoch(0), (n0, n1, s0, s1), (n2, n3))
    block = _decision_block(decision)
    order = revive_order_from_block(block, decision, _parent_qc(block))
    blocks = chain_of((tx(1),), (tx(2),), (tx(3),))
    record = RevivalRecord(order, Height(1), blocks[0].block_hash, Height(2), blocks[1].block_hash)
    revived = chain_of((tx(1),), (tx(2),), (record.transaction(),), epochs=(0, 0, 1))
    parent_voters = {s: KEYS[s] for s in STANDBYS}
    records = scan_revivals(revived, parent=PARENT, parent_voters=parent_voters)
    assert records == [record]
    assert scan_revivals(revived, parent=DomainId("city"), parent_voters=parent_voters) == []
    history = replay_history(genesis_history(DOMAIN, SEATS, STANDBYS), revived, records)
    old, new = history.epochs
    assert old.last_height == 2
    assert new.first_height == 2
    assert new.cause == "revive"
    assert new.seats == (n0, n1, s0, s1)
    assert history.for_certificate(2, 0) is old
    assert history.for_certificate(2, 1) is new
    with pytest.raises(ChainError):
        history.for_certificate(3, 0)
    # A revival record found only inside the chain is applied where it is met.
    late = replay_history(genesis_history(DOMAIN, SEATS, STANDBYS), revived)
    assert late.current.seats == (n0, n1, s0, s1)


def test_genesis_needs_distinct_seats_and_standbys() -> None:
    with pytest.raises(ConfigError):
        genesis_history(DOMAIN, (), STANDBYS)
    with pytest.raises(ConfigError):
        genesis_history(DOMAIN, SEATS, (s0, n1))


# --------------------------------------------------------------------------
# Plugging HPBFT's configuration into the ledger's chain verification
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


def _genesis() -> Genesis:
    return Genesis(
        domain=DOMAIN,
        suite="ed25519",
        protocol="hpbft",
        voters=tuple(Member(n, KEYS[n]) for n in SEATS),
        observers=tuple(Member(s, KEYS[s]) for s in STANDBYS),
        parent=PARENT,
    )


def _certified_chain(
    genesis: Genesis, signers_after: tuple[NodeId, ...]
) -> list[tuple[Block, QuorumCertificate]]:
    change = SubstituteSeat(DOMAIN, Epoch(0), n3, s0)
    out = []
    prev = genesis.genesis_hash
    plan = [
        ((tx(1),), 0, (n0, n1, n3)),
        ((change.transaction(),), 0, (n1, n2, n3)),
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
        )
        out.append((block, commit_qc(block, signers, epoch)))
        prev = block.block_hash
    return out


def test_the_ledger_verifies_an_hpbft_chain_with_the_seats_of_each_epoch() -> None:
    genesis = _genesis()
    chain = _certified_chain(genesis, (n0, s0, n2))
    source = committee_source_for_chain(genesis, chain)
    assert set(source(Height(3)).keys) == {n0, n1, n2, s0}
    report = verify_chain(
        MemoryReader(genesis.genesis_hash, chain), genesis, committee_source=source
    )
    assert report.ok, report.finding
    assert report.blocks == 3


def test_the_ledger_rejects_a_certificate_signed_by_a_seat_given_away() -> None:
    genesis = _genesis()
    chain = _certified_chain(genesis, (n0, n1, n3))  # n3 lost its seat at height 2
    source = committee_source_for_chain(genesis, chain)
    report = verify_chain(
        MemoryReader(genesis.genesis_hash, chain), genesis, committee_source=source
    )
    assert report.finding is not None
    assert report.finding.height == 3


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
