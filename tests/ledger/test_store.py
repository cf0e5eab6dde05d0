"""Block store: appends that refuse a bad block and change nothing, reads, reopening, readers."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from belep.app.machine import BelepApplication
from belep.crypto import PrivateKey
from belep.encoding import encode
from belep.errors import (
    ChainError,
    ConfigError,
    CorruptStore,
    InvalidSignature,
    NotFound,
    QuorumNotMet,
    StorageError,
    UnknownSigner,
    ValidationError,
)
from belep.ledger.block import (
    Block,
    Digest,
    DomainId,
    Height,
    NodeId,
    QuorumCertificate,
    Transaction,
    View,
)
from belep.ledger.builder import ChainBuilder, committee_keys, make_genesis
from belep.ledger.genesis import Genesis
from belep.ledger.merkle import EMPTY_ROOT, hash_leaf
from belep.ledger.store import BlockStore

from .conftest import ChainFactory, sample_payloads


def counts(store: BlockStore) -> tuple[int, int]:
    return store.tip().height, store.count_stored_transactions()


def test_append_and_read_back(build_chain: ChainFactory) -> None:
    store, builder = build_chain(blocks=6, txs=4)
    tip = store.tip()
    assert (tip.height, tip.block_hash) == (6, builder.tip_hash)
    block, qc = store.get_committed(3)
    assert block.height == 3
    assert [tx.payload for tx in block.transactions] == sample_payloads(3, 4)
    assert qc.statement.block_hash == block.block_hash
    assert store.get_block_by_hash(block.block_hash) == block
    assert store.get_header(3) == block.header
    assert store.get_certificate(3) == qc
    record = store.get_transaction(block.transactions[2].tx_hash)
    assert (record.height, record.index, record.block_hash) == (3, 2, block.block_hash)
    inclusion = store.get_inclusion_proof(block.transactions[2].tx_hash)
    inclusion.verify()
    inclusion.proof.verify(hash_leaf(block.transactions[2].payload), block.header.tx_root)
    assert [b.height for b, _ in store.iter_committed(2, 4)] == [2, 3, 4]
    assert [b.height for b, _ in store.iter_committed(5)] == [5, 6]
    assert store.integrity_check() == []


def test_state_transfer_iterates_in_chunks(build_chain: ChainFactory) -> None:
    store, _ = build_chain(blocks=300, txs=1)
    heights = [b.height for b, _ in store.iter_committed(1)]
    assert heights == list(range(1, 301))


def test_missing_items_are_not_found(build_chain: ChainFactory) -> None:
    store, _ = build_chain(blocks=2, txs=1)
    with pytest.raises(NotFound):
        store.get_block(3)
    with pytest.raises(NotFound):
        store.get_block_by_hash(b"\x00" * 32)
    with pytest.raises(NotFound):
        store.get_transaction(b"\x00" * 32)


def test_empty_blocks_and_repeated_payloads(build_chain: ChainFactory) -> None:
    store, builder = build_chain(blocks=1, txs=2)
    empty, qc = builder.next_block([], timestamp_ms=5)
    assert empty.header.tx_root == EMPTY_ROOT
    store.append(empty, qc)
    again, qc = builder.next_block(sample_payloads(1, 2), timestamp_ms=6)
    store.append(again, qc)
    assert store.get_block(2).transactions == ()
    first = store.get_transaction(again.transactions[0].tx_hash)
    assert first.height == 1  # a repeated payload is found where it first appeared


# --------------------------------------------------------------------------
# Refusals: each leaves the store exactly as it was
# --------------------------------------------------------------------------

Mutation = Callable[[Block, QuorumCertificate, ChainBuilder], tuple[Block, QuorumCertificate]]


def with_header(block: Block, **changes: object) -> Block:
    header = dataclasses.replace(block.header, **changes)  # type: ignore[arg-type]
    return Block(header, block.transactions)


def recertify(block: Block, builder: ChainBuilder) -> tuple[Block, QuorumCertificate]:
    return block, builder.certify(block)


def other_signers(qc: QuorumCertificate, signers: list[tuple[NodeId, bytes]]) -> QuorumCertificate:
    return QuorumCertificate(qc.statement, tuple(signers))


REFUSALS: list[tuple[str, Mutation, type[ValidationError], bool]] = [
    ("height-gap", lambda b, q, bl: recertify(with_header(b, height=Height(b.height + 1)), bl), ChainError, False),
    ("height-repeat", lambda b, q, bl: recertify(with_header(b, height=Height(b.height - 1)), bl), ChainError, False),
    ("prev-hash", lambda b, q, bl: recertify(with_header(b, prev_hash=Digest(b"\x07" * 32)), bl), ChainError, False),
    ("domain", lambda b, q, bl: recertify(with_header(b, domain=DomainId("station-2")), bl), ChainError, False),
    ("tx-root", lambda b, q, bl: recertify(Block(b.header, b.transactions[:-1]), bl), ChainError, False),
    ("tx-added", lambda b, q, bl: recertify(Block(b.header, (*b.transactions, Transaction(b"x"))), bl), ChainError, False),
    ("qc-other-block", lambda b, q, bl: (b, bl.certify(with_header(b, timestamp_ms=1))), ChainError, False),
    ("qc-kind", lambda b, q, bl: (b, QuorumCertificate(dataclasses.replace(q.statement, kind="prepare"), q.signatures)), ChainError, False),
    ("qc-height", lambda b, q, bl: (b, QuorumCertificate(dataclasses.replace(q.statement, height=Height(9)), q.signatures)), ChainError, False),
    ("qc-earlier-view", lambda b, q, bl: (with_header(b, view=View(2)), bl.certify(with_header(b, view=View(2)), view=1)), ChainError, False),
    ("qc-bad-signature", lambda b, q, bl: (b, other_signers(q, [(s, bytes(64)) for s, _ in q.signatures])), InvalidSignature, True),
    ("qc-below-quorum", lambda b, q, bl: (b, other_signers(q, list(q.signatures[:2]))), QuorumNotMet, True),
    ("qc-duplicate-signer", lambda b, q, bl: (b, other_signers(q, [q.signatures[0]] * 3)), QuorumNotMet, True),
    ("qc-unknown-signer", lambda b, q, bl: (b, other_signers(q, [*q.signatures[:2], (NodeId("mallory"), bytes(64))])), UnknownSigner, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "error", "needs_sig_check"),
    [pytest.param(m, e, s, id=name) for name, m, e, s in REFUSALS],
)
def test_append_refuses_and_changes_nothing(
    build_chain: ChainFactory,
    mutate: Mutation,
    error: type[ValidationError],
    needs_sig_check: bool,
) -> None:
    store, builder = build_chain(blocks=3, txs=3)
    before = counts(store)
    good, qc = builder.next_block(sample_payloads(4, 3), timestamp_ms=4_000)
    if needs_sig_check:
        bad_block, bad_qc = mutate(good, qc, builder)
        with pytest.raises(error):
            store.append(bad_block, bad_qc, committee=builder.genesis.committee())
        store.append(bad_block, bad_qc)  # without the flag the consensus layer is trusted
        return
    builder.tip_hash = good.header.prev_hash  # certify() does not depend on the tip
    bad_block, bad_qc = mutate(good, qc, builder)
    with pytest.raises(error) as info:
        store.append(bad_block, bad_qc, committee=builder.genesis.committee())
    assert info.value.expected is not None or info.value.found is not None
    assert counts(store) == before
    store.append(good, qc)  # the store still accepts the right block
    assert store.tip().height == 4


def test_append_refuses_height_zero(build_chain: ChainFactory) -> None:
    store, builder = build_chain(blocks=0)
    block, _ = builder.next_block([b"a"], timestamp_ms=1)
    bad = with_header(block, height=Height(0))
    with pytest.raises(ChainError):
        store.append(bad, builder.certify(bad))


# --------------------------------------------------------------------------
# Opening, reopening, readers
# --------------------------------------------------------------------------


def test_reopen_continues_from_tip(tmp_path: Path, build_chain: ChainFactory, genesis: Genesis, keys: dict[NodeId, PrivateKey]) -> None:  # fmt: skip
    store, _ = build_chain(blocks=4, txs=2)
    tip = store.tip()
    store.close()
    with BlockStore.open(tmp_path / "chain.sqlite3", genesis) as again:
        assert again.tip() == tip
        builder = ChainBuilder(genesis, keys, application=BelepApplication())
        builder.follow(block for block, _ in again.iter_committed(1))
        again.append(*builder.next_block([b"after reopen"], timestamp_ms=9))
        assert again.tip().height == 5


def test_open_refuses_another_genesis(tmp_path: Path, build_chain: ChainFactory) -> None:
    build_chain(blocks=1)
    other = make_genesis("station-1", committee_keys("w", 4))
    with pytest.raises(ConfigError, match="another genesis"):
        BlockStore.open(tmp_path / "chain.sqlite3", other)


def test_open_refuses_foreign_files(tmp_path: Path, genesis: Genesis) -> None:
    foreign = tmp_path / "foreign.sqlite3"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptStore, match="not a BELEP chain"):
        BlockStore.open(foreign, genesis)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(CorruptStore):
        BlockStore.open(garbage, genesis)
    with pytest.raises(NotFound):
        BlockStore.open(tmp_path / "absent.sqlite3", genesis, readonly=True)


def test_reader_sees_each_append_atomically(tmp_path: Path, build_chain: ChainFactory, genesis: Genesis) -> None:  # fmt: skip
    writer, builder = build_chain(blocks=1, txs=2)
    with BlockStore.open(tmp_path / "chain.sqlite3", genesis, readonly=True) as reader:
        assert reader.tip().height == 1
        with pytest.raises(StorageError, match="read-only"):
            reader.append(*builder.next_block([b"x"], timestamp_ms=2))
        builder = ChainBuilder(genesis, builder.keys, application=BelepApplication())
        builder.follow(block for block, _ in writer.iter_committed(1))
        for h in range(2, 5):
            writer.append(*builder.next_block(sample_payloads(h, 2), timestamp_ms=h))
            assert reader.tip().height == h
            assert len(reader.get_block(h).transactions) == 2


# --------------------------------------------------------------------------
# Reads re-check what they return
# --------------------------------------------------------------------------


def tamper(path: Path, sql: str, params: tuple[object, ...]) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def flip_first_byte(blob: bytes) -> bytes:
    return bytes([blob[0] ^ 0x01]) + blob[1:]


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("UPDATE blocks SET header = ? WHERE height = 2", id="header"),
        pytest.param("UPDATE blocks SET qc = ? WHERE height = 2", id="certificate"),
        pytest.param("UPDATE txs SET payload = ? WHERE height = 2 AND idx = 1", id="payload"),
    ],
)
def test_reads_detect_changed_bytes(tmp_path: Path, build_chain: ChainFactory, sql: str) -> None:
    store, _ = build_chain(blocks=3, txs=3)
    block, qc = store.get_committed(2)
    column = sql.split()[3]
    original = {"header": block.header.encode(), "qc": qc_bytes(qc), "payload": block.transactions[1].payload}[column]  # fmt: skip
    tamper(tmp_path / "chain.sqlite3", sql, (flip_first_byte(original),))
    with pytest.raises(CorruptStore):
        store.get_block(2)
    store.get_block(1)  # the rest stays readable
    if column == "payload":
        with pytest.raises((CorruptStore, NotFound)):
            store.get_inclusion_proof(block.transactions[0].tx_hash)


def qc_bytes(qc: QuorumCertificate) -> bytes:
    return encode(qc.to_wire())


def test_locate_transactions_finds_each_first_occurrence_in_one_pass(
    build_chain: ChainFactory,
) -> None:
    store, _ = build_chain(blocks=3, txs=300)
    wanted = [tx.tx_hash for h in (1, 3) for tx in store.get_block(h).transactions]
    absent = [bytes([i]) * 32 for i in range(5)]
    found = store.locate_transactions([*wanted, *absent, wanted[0]])
    assert set(found) == set(wanted)  # 600 hashes: two chunks of the query
    first = store.get_block(3).transactions[7].tx_hash
    location = found[first]
    assert (location.height, location.index) == (3, 7)
    assert location.block_hash == store.get_header(3).block_hash
