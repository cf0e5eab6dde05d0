"""Chain verification: each way a stored chain can be wrong is reported at its height, by name."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from belep.app.machine import BelepApplication
from belep.crypto import PrivateKey, sha256
from belep.encoding import decode, encode
from belep.ledger.block import Block, BlockHeader, NodeId, QuorumCertificate, Transaction
from belep.ledger.builder import ChainBuilder, committee_keys, make_genesis
from belep.ledger.execution import BlockContext, StateView, TxResult, Writes
from belep.ledger.genesis import Genesis
from belep.ledger.verify import StoredBlock, StoredTx, verify_chain

from .conftest import ChainFactory, sample_payloads

BLOCKS = 6
TXS = 4

Edit = Callable[[sqlite3.Connection], None]


def row(conn: sqlite3.Connection, sql: str, *params: object) -> tuple[bytes, ...]:
    found = conn.execute(sql, params).fetchone()
    assert found is not None
    return tuple(found)


def flip(blob: bytes, offset: int) -> bytes:
    raw = bytearray(blob)
    raw[offset] ^= 0x40
    return bytes(raw)


def edit_header(at: int, **changes: object) -> Edit:
    """Replace a header by a re-encoded one (and, to hide it, its stored hash)."""

    def apply(conn: sqlite3.Connection) -> None:
        (raw,) = row(conn, "SELECT header FROM blocks WHERE height = ?", at)
        header = dataclasses.replace(BlockHeader.decode(raw), **changes)  # type: ignore[arg-type]
        conn.execute(
            "UPDATE blocks SET header = ?, block_hash = ? WHERE height = ?",
            (header.encode(), header.block_hash, at),
        )

    return apply


def edit_qc(height: int, change: Callable[[QuorumCertificate], QuorumCertificate]) -> Edit:
    def apply(conn: sqlite3.Connection) -> None:
        (raw,) = row(conn, "SELECT qc FROM blocks WHERE height = ?", height)
        qc = change(QuorumCertificate.from_wire(decode(raw)))
        conn.execute("UPDATE blocks SET qc = ? WHERE height = ?", (encode(qc.to_wire()), height))

    return apply


def sql(statement: str, *params: object) -> Edit:
    def apply(conn: sqlite3.Connection) -> None:
        conn.execute(statement, params)

    return apply


def replace_payload_and_hash(conn: sqlite3.Connection) -> None:
    payload = b"a forged transaction"
    conn.execute(
        "UPDATE txs SET payload = ?, tx_hash = ? WHERE height = 4 AND idx = 2",
        (payload, sha256(payload)),
    )


def flip_header_byte(conn: sqlite3.Connection) -> None:
    (raw,) = row(conn, "SELECT header FROM blocks WHERE height = 2")
    inside_prev_hash = raw.index(BlockHeader.decode(raw).prev_hash) + 5
    conn.execute("UPDATE blocks SET header = ? WHERE height = 2", (flip(raw, inside_prev_hash),))


def flip_payload_byte(conn: sqlite3.Connection) -> None:
    (raw,) = row(conn, "SELECT payload FROM txs WHERE height = 5 AND idx = 0")
    conn.execute("UPDATE txs SET payload = ? WHERE height = 5 AND idx = 0", (flip(raw, 7),))


def swap_certificates(conn: sqlite3.Connection) -> None:
    (a,) = row(conn, "SELECT qc FROM blocks WHERE height = 3")
    (b,) = row(conn, "SELECT qc FROM blocks WHERE height = 4")
    conn.execute("UPDATE blocks SET qc = ? WHERE height = 3", (b,))
    conn.execute("UPDATE blocks SET qc = ? WHERE height = 4", (a,))


def unsorted_signatures(conn: sqlite3.Connection) -> None:
    (raw,) = row(conn, "SELECT qc FROM blocks WHERE height = 2")
    wire = decode(raw)
    assert isinstance(wire, dict)
    sigs = wire["sigs"]
    assert isinstance(sigs, list)
    wire["sigs"] = list(reversed(sigs))
    conn.execute("UPDATE blocks SET qc = ? WHERE height = 2", (encode(wire),))


def bad_signature(qc: QuorumCertificate) -> QuorumCertificate:
    signer, sig = qc.signatures[1]
    return QuorumCertificate(qc.statement, (qc.signatures[0], (signer, flip(sig, 5)), *qc.signatures[2:]))  # fmt: skip


SCENARIOS: list[tuple[str, Edit, int, str]] = [
    ("header-byte", flip_header_byte, 2, "block-hash"),
    ("header-garbage", sql("UPDATE blocks SET header = x'ff00' WHERE height = 3"), 3, "header-encoding"),
    ("header-rewritten", edit_header(3, timestamp_ms=123), 3, "qc-statement"),
    ("header-relinked", edit_header(4, prev_hash=b"\x01" * 32), 4, "link"),
    ("header-height", edit_header(2, height=7), 2, "link"),
    ("stored-hash", sql("UPDATE blocks SET block_hash = zeroblob(32) WHERE height = 5"), 5, "block-hash"),
    ("payload-byte", flip_payload_byte, 5, "tx-hash"),
    ("payload-and-hash", replace_payload_and_hash, 4, "tx-root"),
    ("tx-deleted", sql("DELETE FROM txs WHERE height = 3 AND idx = 1"), 3, "tx-count"),
    ("tx-appended", sql("INSERT INTO txs VALUES (2, 4, zeroblob(32), x'00')"), 2, "tx-count"),
    ("tx-moved", sql("UPDATE txs SET height = 5, idx = 9 WHERE height = 1 AND idx = 0"), 1, "tx-count"),
    ("tx-orphan", sql("INSERT INTO txs VALUES (99, 0, zeroblob(32), x'00')"), BLOCKS, "orphan-transactions"),
    ("block-deleted", sql("DELETE FROM blocks WHERE height = 3"), 3, "missing-block"),
    ("qc-garbage", sql("UPDATE blocks SET qc = x'a0' WHERE height = 2"), 2, "qc-encoding"),
    ("qc-non-canonical", unsorted_signatures, 2, "qc-encoding"),
    ("qc-swapped", swap_certificates, 3, "qc-statement"),
    ("qc-kind", edit_qc(4, lambda q: QuorumCertificate(dataclasses.replace(q.statement, kind="prepare"), q.signatures)), 4, "qc-statement"),
    ("qc-signature", edit_qc(5, bad_signature), 5, "qc-signatures"),
    ("qc-below-quorum", edit_qc(6, lambda q: QuorumCertificate(q.statement, q.signatures[:2])), 6, "qc-signatures"),
    ("qc-foreign-signer", edit_qc(1, lambda q: QuorumCertificate(q.statement, (*q.signatures[:2], (NodeId("x-1"), q.signatures[2][1])))), 1, "qc-signatures"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "height", "check"), [pytest.param(e, h, c, id=n) for n, e, h, c in SCENARIOS]
)
def test_verify_names_the_first_bad_height(
    tmp_path: Path, build_chain: ChainFactory, genesis: Genesis, edit: Edit, height: int, check: str
) -> None:
    store, _ = build_chain(blocks=BLOCKS, txs=TXS)
    assert verify_chain(store, genesis).ok
    conn = sqlite3.connect(tmp_path / "chain.sqlite3")
    edit(conn)
    conn.commit()
    conn.close()
    report = verify_chain(store, genesis)
    assert report.finding is not None, "tampering went unnoticed"
    assert (report.finding.height, report.finding.check) == (height, check), report.finding
    assert report.blocks == (BLOCKS if check == "orphan-transactions" else height - 1)


def test_good_chain_report(build_chain: ChainFactory, genesis: Genesis) -> None:
    store, builder = build_chain(blocks=BLOCKS, txs=TXS)
    seen: list[int] = []
    report = verify_chain(store, genesis, on_block=seen.append)
    assert report.ok
    assert (report.blocks, report.transactions, report.signatures) == (BLOCKS, BLOCKS * TXS, BLOCKS * 3)  # fmt: skip
    assert report.tip_hash == builder.tip_hash
    assert seen == list(range(1, BLOCKS + 1))
    assert report.to_json()["ok"] is True


def test_signature_checks_can_be_skipped(tmp_path: Path, build_chain: ChainFactory, genesis: Genesis) -> None:  # fmt: skip
    store, _ = build_chain(blocks=3, txs=1)
    conn = sqlite3.connect(tmp_path / "chain.sqlite3")
    edit_qc(2, bad_signature)(conn)
    conn.commit()
    conn.close()
    assert verify_chain(store, genesis, check_sigs=False).ok
    assert not verify_chain(store, genesis).ok


class _Diverging:
    """An application that decides one transaction differently from the BELEP one."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.inner = BelepApplication()

    def apply_transaction(self, state: StateView, tx: Transaction, context: BlockContext) -> tuple[TxResult, Writes]:  # fmt: skip
        if tx.payload == self.payload:
            return TxResult("other-rule"), {}
        return self.inner.apply_transaction(state, tx, context)


def test_re_execution_checks_every_state_root(build_chain: ChainFactory, genesis: Genesis) -> None:
    store, _ = build_chain(blocks=4, txs=2)
    assert verify_chain(store, genesis, application=BelepApplication()).ok
    # A verifier whose rules differ at block 2 is told at block 3, whose header carries
    # the state root after block 2.
    second = store.get_block(2).transactions[0].payload
    report = verify_chain(store, genesis, application=_Diverging(second))
    assert report.finding is not None
    assert (report.finding.height, report.finding.check) == (3, "state-root")
    assert report.blocks == 2


# --------------------------------------------------------------------------
# The verifier is pure: an in-memory reader works the same
# --------------------------------------------------------------------------


class MemoryChain:
    def __init__(self, genesis_hash: bytes, blocks: list[tuple[Block, QuorumCertificate]]) -> None:
        self.genesis_hash = genesis_hash
        self.blocks = [
            StoredBlock(
                b.height,
                b.block_hash,
                b.header.encode(),
                encode(q.to_wire()),
                len(b.transactions),
                tuple(StoredTx(i, t.tx_hash, t.payload) for i, t in enumerate(b.transactions)),
            )
            for b, q in blocks
        ]

    def stored_genesis_hash(self) -> bytes:
        return self.genesis_hash

    def stored_blocks(self, start: int = 1) -> Iterator[StoredBlock]:
        return iter(self.blocks[start - 1 :])

    def count_stored_transactions(self) -> int:
        return sum(len(b.txs) for b in self.blocks)


def test_in_memory_reader(genesis: Genesis, keys: dict[NodeId, PrivateKey]) -> None:
    builder = ChainBuilder(genesis, keys, application=BelepApplication())
    blocks = [builder.next_block(sample_payloads(h, 3), timestamp_ms=h) for h in range(1, 6)]
    assert verify_chain(MemoryChain(genesis.genesis_hash, blocks), genesis).ok
    other = make_genesis("station-1", committee_keys("w", 4))
    report = verify_chain(MemoryChain(other.genesis_hash, blocks), genesis)
    assert report.finding is not None
    assert (report.finding.height, report.finding.check) == (0, "genesis")
    # A chain built under another genesis fails at height 1: wrong link, then wrong signers.
    report = verify_chain(MemoryChain(other.genesis_hash, blocks), other)
    assert report.finding is not None
    assert (report.finding.height, report.finding.check) == (1, "link")


def test_empty_chain_verifies(genesis: Genesis) -> None:
    report = verify_chain(MemoryChain(genesis.genesis_hash, []), genesis)
    assert report.ok
    assert (report.blocks, report.tip_hash) == (0, genesis.genesis_hash)


def test_signed_by_a_committee_that_is_not_ours(genesis: Genesis) -> None:
    impostors = committee_keys("v", 4)  # same names as the real voters, other keys?
    impostors = {n: PrivateKey.from_seed(sha256(b"other" + n.encode())) for n in impostors}
    builder = ChainBuilder(genesis, impostors, application=BelepApplication())
    blocks = [builder.next_block([b"forged"], timestamp_ms=1)]
    report = verify_chain(MemoryChain(genesis.genesis_hash, blocks), genesis)
    assert report.finding is not None
    assert (report.finding.height, report.finding.check) == (1, "qc-signatures")
